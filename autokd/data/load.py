"""One door to every source: :func:`load_dataset` reads a spec into an :class:`ImageData`,
:func:`inspect_dataset` checks it without decoding."""

from __future__ import annotations

from pathlib import Path

from autokd.data.builtin import _DATA_ROOT_FIX, _TORCHVISION, DATASET_NAMES, _load_digits, _load_torchvision, _torchvision_key
from autokd.data.folder import _inspect_image_folder, _load_image_folder
from autokd.data.table import TABLE_KINDS, inspect_table, load_table
from autokd.data.images import DatasetInfo, ImageData, _check_image_size
from autokd.errors import AutokdError


def load_dataset(
    spec: str,
    *,
    root: str | Path | None = None,
    cache_dir: str | Path = ".cache/autokd",
    download: bool = False,
    image_size: int | None = None,
    show_progress: bool = True,
) -> ImageData:
    """Load a data set by name, ``imagefolder:PATH`` or ``csv:PATH`` into memory as uint8 tensors.

    Args:
        spec: one of :data:`DATASET_NAMES`, or ``imagefolder:PATH`` where ``PATH`` holds
            ``train/<class>/`` and ``test/<class>/`` folders, or class folders directly
            (then split 80/20, stratified, seed 0), or ``csv:PATH`` / ``jsonl:PATH``, a table
            with one row per image (``path``, ``label``, optional ``split``; :mod:`autokd.data.table`).
        root: folder of torchvision's files for the torchvision data sets; defaults to
            ``cache_dir/torchvision``.
        cache_dir: where decoded tensors are cached (created when needed).
        download: let torchvision download missing files into ``root``.
        image_size: square side in pixels (8..224) to resize every image to; by default the
            source's own size (for image folders: the first image's).
        show_progress: show a progress bar while decoding image files.

    Raises:
        AutokdError: unknown spec, missing files or folders, unreadable images, bad size, or
            not enough memory for the images at that size (checked before decoding them).

    Example:
        >>> data = load_dataset("imagefolder:/data/pets", image_size=32)
        >>> data = load_dataset("csv:/data/labels.csv", image_size=32)
        >>> data = load_dataset("cifar10", root="~/datasets", download=True)
    """
    if image_size is not None:
        _check_image_size(image_size, "image_size")
    cache_dir = Path(cache_dir).expanduser()
    kind, name = _source(spec)
    if kind == "imagefolder":
        return _load_image_folder(Path(name).expanduser(), cache_dir, image_size, show_progress)
    if kind in TABLE_KINDS:
        return load_table(kind, Path(name).expanduser(), cache_dir, image_size, show_progress)
    if kind == "digits":
        return _load_digits(image_size)
    root = Path(root).expanduser() if root is not None else cache_dir / "torchvision"
    return _load_torchvision(name, root, cache_dir, download, image_size)



def inspect_dataset(spec: str, *, root: str | Path | None = None, cache_dir: str | Path = ".cache/autokd",
                    download: bool = False, image_size: int | None = None) -> DatasetInfo:
    """Check that :func:`load_dataset` would find ``spec``'s data, reading only what that takes.

    The same checks and errors as loading: an unknown spec, a missing path, an image folder's
    layout (train/ without test/, classes that differ between splits, no images), the first image
    unreadable or of a size out of range, not enough memory for an image folder at that size,
    torchvision files missing. Image folders are listed, not decoded (one image header is read);
    nothing is written.

    Example:
        >>> inspect_dataset("digits").split_sizes
        {'train': 1437, 'test': 360}
    """
    if image_size is not None:
        _check_image_size(image_size, "--image-size")
    kind, name = _source(spec)
    if kind == "imagefolder":
        return _inspect_image_folder(Path(name).expanduser().resolve(), image_size)
    if kind in TABLE_KINDS:
        return inspect_table(kind, Path(name).expanduser(), image_size)
    if kind == "digits":
        data = _load_digits(image_size)  # 1,797 tiny images bundled with scikit-learn: loading is the cheap check
        return DatasetInfo(data.name, data.classes, {"train": len(data.train_labels), "test": len(data.test_labels)},
                           data.image_size)
    root = Path(root).expanduser() if root is not None else Path(cache_dir).expanduser() / "torchvision"
    if not download and _torchvision_key(name, root, image_size) is None:
        raise AutokdError(f"{name} files not found under {root}", _DATA_ROOT_FIX)
    return DatasetInfo(name, image_size=image_size)


#: Sources named by a path, ``KIND:PATH``, with an example of each.
PATH_SOURCES: dict[str, str] = {"imagefolder": "./data/pets", "csv": "./data/labels.csv", "jsonl": "./data/labels.jsonl"}


def _source(spec: str) -> tuple[str, str]:
    """``(KIND, PATH)`` for a :data:`PATH_SOURCES` spec, ``("digits", "digits")`` or ``("torchvision", NAME)``."""
    kind, colon, path = spec.partition(":")
    if colon and kind in PATH_SOURCES:
        if not path:
            raise AutokdError(f"{kind}: needs a path", f"write {kind}:PATH, e.g. {kind}:{PATH_SOURCES[kind]}")
        return kind, path
    name = spec.strip().lower()
    if name == "digits" or name in _TORCHVISION:
        return ("digits" if name == "digits" else "torchvision"), name
    raise AutokdError(
        f"unknown dataset {spec!r}",
        f"use one of {', '.join(DATASET_NAMES)}, imagefolder:PATH for a folder of class folders, or csv:PATH for a "
        "table of image paths and labels (.csv or .jsonl)",
    )
