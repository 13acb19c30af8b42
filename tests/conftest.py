"""Shared pytest fixtures."""

from __future__ import annotations

import os
import tarfile
from pathlib import Path

import pytest


def _cifar_tarball() -> Path | None:
    candidates = []
    if os.environ.get("AUTOKD_CIFAR_TAR"):
        candidates.append(Path(os.environ["AUTOKD_CIFAR_TAR"]))
    candidates.append(Path(__file__).resolve().parents[2] / "shared/data/cifar10-jpg.tar.gz")
    candidates.append(Path("/work/shared/data/cifar10-jpg.tar.gz"))
    return next((p for p in candidates if p.is_file()), None)


@pytest.fixture(scope="session")
def cifar_subset_dir(tmp_path_factory) -> Path:
    """A small real CIFAR-10 image folder: train/<class>/ (20 each) and test/<class>/ (10 each).

    Streams the gzip tarball once per session and writes only the first images of each class;
    test images sit at the end of the archive, so the whole stream is read (about 1 s).
    """
    tarball = _cifar_tarball()
    if tarball is None:
        pytest.skip("CIFAR-10 JPEG tarball not found (set AUTOKD_CIFAR_TAR)")
    wanted = {"train": 20, "test": 10}
    num_classes = 10
    dest = tmp_path_factory.mktemp("cifar10-subset")
    counts: dict[tuple[str, str], int] = {}
    with tarfile.open(tarball, "r|gz") as tf:
        for member in tf:
            parts = Path(member.name).parts
            if not member.isfile() or len(parts) != 3 or parts[0] not in wanted:
                continue
            split, cls, fname = parts
            if counts.get((split, cls), 0) >= wanted[split]:
                continue
            target = dest / split / cls / fname
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(tf.extractfile(member).read())
            counts[(split, cls)] = counts.get((split, cls), 0) + 1
            full = [k for k, n in counts.items() if n >= wanted[k[0]]]
            if len(full) == len(wanted) * num_classes:
                break
    return dest
