"""Files autokd writes: the one atomic write, and checks that a folder or file can be written before any work."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterator

from autokd.errors import AutokdError


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A temporary path beside ``path`` to write to; renamed onto ``path`` when the block ends without error.

    Readers see the old file or the whole new one; on failure (a full disk, Ctrl-C) nothing is left behind.

    Example:
        >>> with atomic_path(Path("/tmp/autokd-doctest.txt")) as tmp:
        ...     _ = tmp.write_text("done")
        >>> Path("/tmp/autokd-doctest.txt").read_text()
        'done'
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_atomically(path: Path, data: bytes | memoryview) -> Path:
    """Write ``data`` to ``path`` through a temporary file and a rename; on failure nothing is left behind."""
    path = Path(path)
    try:
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            f.write(data)
    except OSError as err:
        raise OSError(err.errno, err.strerror, str(path)) from None
    return path


def check_writable_folder(path: Path, what: str, option: str) -> None:
    """Refuse, before any work, a folder that is a file, lies under a file, or cannot be written.

    Nothing is created: the probe is an unnamed temporary file in the nearest existing folder
    (``O_TMPFILE``), which also catches a read-only mount, where permission bits say nothing to root.
    """
    path = Path(path).expanduser().absolute()
    if path.exists() and not path.is_dir():
        raise AutokdError(f"{what} {path} is a file, not a folder", f"pass a folder to {option}")
    existing = path
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise AutokdError(f"{what} {path} cannot be created: {existing} is a file", f"pass another folder to {option}")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as err:
        raise AutokdError(f"{what} {path} is not writable ({existing}: {err.strerror})",
                          f"pass a folder you can write to {option}, or fix its permissions") from None


def check_output_file(path: Path, option: str) -> None:
    """Refuse a file path that is an existing folder or lies in a folder that cannot be written."""
    path = Path(path).expanduser().absolute()
    if path.is_dir():
        raise AutokdError(f"{option} {path} is a folder", f"name a file in it, e.g. {option} {path / 'model.onnx'}")
    check_writable_folder(path.parent, f"the folder of {option}", option)
