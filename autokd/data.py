"""Datasets as uint8 tensors: the first stage of autokd's flow.

Every data set, whatever its source, becomes one :class:`ImageData`: uint8 ``(N, C, H, W)``
images and int64 labels for a train and a test split, held whole in memory so the training
loop can move them to the accelerator once and augment there. ``ImageData`` is pure (no I/O);
all reading, decoding and caching lives in :func:`load_dataset` and the private helpers below.

Sources:

* ``digits``: scikit-learn's 8x8 hand-written digits (bundled with scikit-learn, no files).
* ``cifar10``, ``cifar100``, ``mnist``, ``fashion-mnist``, ``svhn``: torchvision's files under
  a local root (downloaded only when asked).
* ``imagefolder:PATH``: ``PATH/train/<class>/*`` and ``PATH/test/<class>/*`` (plus an optional
  ``PATH/val/<class>/*`` validation split, used instead of carving one), or class folders
  directly under ``PATH`` (then split 80/20, stratified and seeded).
  Every non-hidden subfolder is a class: one without images is an error (as torchvision's
  ``ImageFolder``), files that are not :data:`IMAGE_EXTENSIONS` images are skipped with one
  warning per folder (``ImageData.warnings``), hidden files and folders silently.

Decoded torchvision and image-folder data sets are cached in ``cache_dir`` as one
``torch.save``'d file whose name carries a hash of every source file's path, size and mtime,
so a changed, added or removed file means a rebuild, and a corrupt cache file is rebuilt.
"""

from __future__ import annotations

import hashlib
import dataclasses
import json
import math
import os
import re
import tempfile
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from autokd.errors import AutokdError

__all__ = ["DATASET_NAMES", "IMAGE_EXTENSIONS", "DatasetInfo", "ImageData", "check_memory", "inspect_dataset",
           "load_dataset"]

DATASET_NAMES: tuple[str, ...] = ("digits", "cifar10", "cifar100", "mnist", "fashion-mnist", "svhn")
IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
MIN_IMAGE_SIZE, MAX_IMAGE_SIZE = 8, 224
#: Bytes of memory a loaded data set needs per uint8 pixel value: the decode buffer, the tensor,
#: the split copies and the device copy each hold the images once.
BYTES_PER_VALUE = 4
TEST_FRACTION = 0.2  # held out when a source has no test split of its own (digits, flat folders)
_CACHE_FORMAT = 2  # bump when the cache layout changes so old files are rebuilt, never misread
_DATA_ROOT_FIX = "pass --data-root DIR holding the torchvision files, or --download"


# --------------------------------------------------------------------------------------------
# The in-memory data set (pure)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class ImageData:
    """A whole image-classification data set in memory, as uint8 tensors.

    Attributes:
        name: readable name of the source, e.g. ``"cifar10"`` or ``"imagefolder:pets"``.
        classes: class names; label ``i`` means ``classes[i]``.
        train_images: uint8 ``(N, C, H, W)``, contiguous, square images.
        train_labels: int64 ``(N,)``.
        test_images: uint8 ``(M, C, H, W)``.
        test_labels: int64 ``(M,)``.
        val_images, val_labels: the validation split (``None`` until one is carved with
            :meth:`with_validation`, or read from an image folder's own ``val/``). Models are
            chosen on it; the test split is only reported.
        warnings: one line per thing loading skipped (files of an image folder that are not
            images it reads), for the CLI to print as ``warning: ...``; empty for most sources.

    Example:
        >>> data = load_dataset("digits")
        >>> data.train_images.shape, data.num_classes
        (torch.Size([1437, 1, 8, 8]), 10)
        >>> search = data.with_validation(0.1, seed=0)
        >>> len(search.train_labels), len(search.val_labels)
        (1293, 144)
    """

    name: str
    classes: tuple[str, ...]
    train_images: torch.Tensor = field(repr=False)
    train_labels: torch.Tensor = field(repr=False)
    test_images: torch.Tensor = field(repr=False)
    test_labels: torch.Tensor = field(repr=False)
    val_images: torch.Tensor | None = field(default=None, repr=False)
    val_labels: torch.Tensor | None = field(default=None, repr=False)
    warnings: tuple[str, ...] = field(default=(), repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "classes", tuple(self.classes))
        if (self.val_images is None) != (self.val_labels is None):
            raise ValueError("give both val_images and val_labels, or neither")
        for split in self.splits:
            images, labels = getattr(self, f"{split}_images"), getattr(self, f"{split}_labels")
            if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[2] != images.shape[3]:
                raise ValueError(f"{split}_images must be uint8 (N, C, H, H), got {images.dtype} {tuple(images.shape)}")
            if labels.dtype != torch.int64 or labels.shape != images.shape[:1]:
                raise ValueError(f"{split}_labels must be int64 ({images.shape[0]},), got {labels.dtype} {tuple(labels.shape)}")
            if images.shape[1:] != self.train_images.shape[1:]:
                raise ValueError(f"train and {split} image shapes differ: {tuple(self.train_images.shape[1:])} vs {tuple(images.shape[1:])}")

    def __repr__(self) -> str:
        val = f", val={tuple(self.val_images.shape)}" if self.has_validation else ""
        return (f"ImageData(name={self.name!r}, classes={self.num_classes}, "
                f"train={tuple(self.train_images.shape)}{val}, test={tuple(self.test_images.shape)})")

    @property
    def splits(self) -> tuple[str, ...]:
        return ("train", "val", "test") if self.has_validation else ("train", "test")

    @property
    def has_validation(self) -> bool:
        return self.val_images is not None

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def channels(self) -> int:
        return self.train_images.shape[1]

    @property
    def image_size(self) -> int:
        return self.train_images.shape[2]

    @property
    def mean(self) -> tuple[float, ...]:
        """Per-channel mean of the training images, in [0, 1] units."""
        return self._moments[0]

    @property
    def std(self) -> tuple[float, ...]:
        """Per-channel (population) standard deviation of the training images, in [0, 1] units.

        At least one grey level (1/255): a channel that never varies (e.g. an empty blue channel) is
        divided by that, not by zero, which would make every input NaN."""
        return tuple(max(s, 1.0 / 255.0) for s in self._moments[1])

    @cached_property
    def _moments(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        # A 256-bin histogram per channel gives exact moments without a float copy of the data.
        values = torch.arange(256, dtype=torch.float64) / 255.0
        means, stds = [], []
        for c in range(self.channels):
            hist = torch.zeros(256, dtype=torch.float64)
            for chunk in self.train_images[:, c].split(4096):
                hist += torch.bincount(chunk.reshape(-1).long(), minlength=256).double()
            total = hist.sum().clamp_min(1.0)
            mean = float((hist * values).sum() / total)
            var = float((hist * values.square()).sum() / total) - mean * mean
            means.append(mean)
            stds.append(math.sqrt(max(var, 0.0)))
        return tuple(means), tuple(stds)

    def subset(self, n_train: int | None, n_test: int | None, seed: int = 0) -> ImageData:
        """A class-stratified, seeded random subset (``None`` keeps a split whole).

        Each class keeps its share of the split (largest-remainder rounding); images keep their
        original order. A validation split, if any, is kept whole.

        Example:
            >>> small = load_dataset("digits").subset(500, 100, seed=1)
        """
        train_idx = self._pick("train", n_train, seed)
        test_idx = self._pick("test", n_test, seed)
        return dataclasses.replace(
            self,
            train_images=self.train_images if train_idx is None else self.train_images[train_idx].contiguous(),
            train_labels=self.train_labels if train_idx is None else self.train_labels[train_idx],
            test_images=self.test_images if test_idx is None else self.test_images[test_idx].contiguous(),
            test_labels=self.test_labels if test_idx is None else self.test_labels[test_idx],
        )

    def _pick(self, split: str, n: int | None, seed: int) -> torch.Tensor | None:
        labels = getattr(self, f"{split}_labels")
        if n is None:
            return None
        if not 1 <= n <= len(labels):
            raise AutokdError(
                f"cannot take {n} {split} images from {self.name}, which has {len(labels)}",
                f"ask for 1..{len(labels)} {split} images, or none to keep them all",
            )
        picked, _ = _stratified_split(labels, n, self.num_classes, seed)
        return picked

    def with_validation(self, fraction: float, seed: int = 0, min_per_class: int = 1) -> ImageData:
        """Carve a stratified, seeded validation split out of the training images.

        ``fraction`` of the training images (at least ``min_per_class`` of every class) move to
        ``val_images``; the rest stay for training, the test split is untouched. A data set that
        already has a validation split (an image folder's own ``val/``) is returned as it is.

        Example:
            >>> search = load_dataset("digits").with_validation(0.2, seed=3)
            >>> len(search.val_labels)
            288
        """
        if self.has_validation:
            return self
        counts = torch.bincount(self.train_labels, minlength=self.num_classes)
        n = len(self.train_labels)
        n_val = math.ceil(round(fraction * n, 9)) if 0.0 < fraction < 1.0 else 0
        floor = torch.clamp(torch.full_like(counts, min_per_class), max=counts - 1).clamp_min(0)
        if n_val < 1 or bool((counts < 2).any()) or int(floor.sum()) >= n:
            few = [self.classes[c] for c in torch.nonzero(counts < 2).flatten().tolist()]
            raise AutokdError(
                f"cannot hold out a validation fraction {fraction} of the {n} training images of {self.name}"
                + (f": classes {few[:5]} have fewer than 2 training images" if few else ""),
                "use a validation_fraction between 0 and 1 (e.g. 0.1) and at least 2 training images per class",
            )
        val_idx, keep_idx = _stratified_split(self.train_labels, n_val, self.num_classes, seed, floor=floor)
        return dataclasses.replace(
            self,
            train_images=self.train_images[keep_idx].contiguous(), train_labels=self.train_labels[keep_idx],
            val_images=self.train_images[val_idx].contiguous(), val_labels=self.train_labels[val_idx],
        )


def _stratified_split(labels: torch.Tensor, n: int, num_classes: int, seed: int,
                      floor: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded stratified split: (``n`` picked indices, the rest), each sorted ascending.

    Each class gets its share of ``n`` (largest remainder); ``floor`` raises a class's quota to
    at least that many (so the split can exceed ``n`` when small classes need their floor).
    """
    total = len(labels)
    counts = torch.bincount(labels, minlength=num_classes).double()
    exact = counts * n / total
    quota = exact.floor().long()
    short = n - int(quota.sum())
    if short > 0:  # largest remainder; ties go to the lower class index (stable sort)
        order = torch.argsort(exact - quota.double(), descending=True, stable=True)
        quota[order[:short]] += 1
    if floor is not None:
        quota = torch.maximum(quota, floor.long())
    generator = torch.Generator().manual_seed(seed)
    perm = torch.randperm(total, generator=generator)
    shuffled_labels = labels[perm]
    mask = torch.zeros(total, dtype=torch.bool)
    for c in torch.nonzero(quota).flatten().tolist():
        mask[perm[shuffled_labels == c][: quota[c]]] = True
    return torch.nonzero(mask).flatten(), torch.nonzero(~mask).flatten()


def _split_by_labels(name: str, classes: tuple[str, ...], images: torch.Tensor, labels: torch.Tensor, seed: int = 0) -> ImageData:
    n_test = math.ceil(round(TEST_FRACTION * len(labels), 9))
    test_idx, train_idx = _stratified_split(labels, n_test, len(classes), seed)
    return ImageData(name, classes, images[train_idx].contiguous(), labels[train_idx],
                     images[test_idx].contiguous(), labels[test_idx])


# --------------------------------------------------------------------------------------------
# Loading (all I/O lives below)
# --------------------------------------------------------------------------------------------


def load_dataset(
    spec: str,
    *,
    root: str | Path | None = None,
    cache_dir: str | Path = ".cache/autokd",
    download: bool = False,
    image_size: int | None = None,
    show_progress: bool = True,
) -> ImageData:
    """Load a data set by name or ``imagefolder:PATH`` into memory as uint8 tensors.

    Args:
        spec: one of :data:`DATASET_NAMES`, or ``imagefolder:PATH`` where ``PATH`` holds
            ``train/<class>/`` and ``test/<class>/`` folders, or class folders directly
            (then split 80/20, stratified, seed 0).
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
        >>> data = load_dataset("cifar10", root="~/datasets", download=True)
    """
    if image_size is not None:
        _check_image_size(image_size, "image_size")
    cache_dir = Path(cache_dir).expanduser()
    kind, name = _source(spec)
    if kind == "imagefolder":
        return _load_image_folder(Path(name).expanduser(), cache_dir, image_size, show_progress)
    if kind == "digits":
        return _load_digits(image_size)
    root = Path(root).expanduser() if root is not None else cache_dir / "torchvision"
    return _load_torchvision(name, root, cache_dir, download, image_size)


@dataclass(frozen=True)
class DatasetInfo:
    """What :func:`inspect_dataset` learns without decoding the images.

    Attributes:
        name: readable name of the source, as :class:`ImageData` names it.
        classes: class names, or ``None`` where only reading the files would tell (torchvision).
        split_sizes: images per split (``train``, ``test``, and ``val`` where the source has one),
            empty where only reading the files would tell.
        image_size: the side the images will have (given, or the first image's), or ``None``.
        warnings: what loading would skip, one line per folder (as :attr:`ImageData.warnings`).
    """

    name: str
    classes: tuple[str, ...] | None = None
    split_sizes: dict[str, int] = field(default_factory=dict)
    image_size: int | None = None
    warnings: tuple[str, ...] = ()


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
        path = Path(name).expanduser().resolve()
        split_names, classes, groups, warns = _scan_image_folder(path)
        sizes = {split: sum(len(files) for files in group.values()) for split, group in zip(split_names, groups)}
        if not split_names:  # class folders only: load_dataset splits them 80/20
            total = sum(len(files) for files in groups[0].values())
            test = math.ceil(round(TEST_FRACTION * total, 9))
            sizes = {"train": total - test, "test": test}
        first = next(iter(groups[0].values()))[0]
        size = _target_size(first, image_size)
        check_memory(sum(sizes.values()), 3, size, f"imagefolder:{path.name}")
        return DatasetInfo(f"imagefolder:{path.name}", classes, sizes, size, tuple(warns))
    if kind == "digits":
        data = _load_digits(image_size)  # 1,797 tiny images bundled with scikit-learn: loading is the cheap check
        return DatasetInfo(data.name, data.classes, {"train": len(data.train_labels), "test": len(data.test_labels)},
                           data.image_size)
    root = Path(root).expanduser() if root is not None else Path(cache_dir).expanduser() / "torchvision"
    if not download and _torchvision_key(name, root, image_size) is None:
        raise AutokdError(f"{name} files not found under {root}", _DATA_ROOT_FIX)
    return DatasetInfo(name, image_size=image_size)


def _source(spec: str) -> tuple[str, str]:
    """``("imagefolder", PATH)``, ``("digits", "digits")`` or ``("torchvision", NAME)`` for a dataset spec."""
    if spec.startswith("imagefolder:"):
        path = spec[len("imagefolder:"):]
        if not path:
            raise AutokdError("imagefolder: needs a path", "write imagefolder:PATH, e.g. imagefolder:./data/pets")
        return "imagefolder", path
    name = spec.strip().lower()
    if name == "digits" or name in _TORCHVISION:
        return ("digits" if name == "digits" else "torchvision"), name
    raise AutokdError(
        f"unknown dataset {spec!r}",
        f"use one of {', '.join(DATASET_NAMES)}, or imagefolder:PATH for a folder of class folders",
    )


def _check_image_size(size: int, source: str) -> None:
    if not MIN_IMAGE_SIZE <= size <= MAX_IMAGE_SIZE:
        raise AutokdError(
            f"image size {size} px (from {source}) is outside {MIN_IMAGE_SIZE}..{MAX_IMAGE_SIZE} px",
            f"pass --image-size N or set image_size: N with {MIN_IMAGE_SIZE} <= N <= {MAX_IMAGE_SIZE} in the "
            "study file (every image is resized to N x N; docs/study-file.md)",
        )


def available_memory() -> int | None:
    """Bytes of RAM available to a new allocation (``MemAvailable``), or None where unknown."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check_memory(n_images: int, channels: int, size: int, what: str, available: int | None = None) -> None:
    """Refuse, before loading, a data set whose images cannot fit in memory at ``size`` px.

    Needs about ``N * C * size * size * BYTES_PER_VALUE`` bytes; ``available`` defaults to
    :func:`available_memory` (no check where that is unknown).

    Example:
        >>> check_memory(50_000, 3, 32, "cifar10")  # 0.6 GB: fine on any machine that runs autokd
    """
    available = available_memory() if available is None else available
    need = n_images * channels * size * size * BYTES_PER_VALUE
    if available is not None and need > available:
        fits = math.isqrt(available // (n_images * channels * BYTES_PER_VALUE))
        raise AutokdError(
            f"{what}: {n_images} images at {channels}x{size}x{size} px need about {need / 2**30:.1f} GiB of memory "
            f"to load, {available / 2**30:.1f} GiB is available",
            f"pass a smaller --image-size (image_size in the study file; {fits} px would fit), fewer images, "
            "or run on a machine with more memory",
        )


def _resize(images: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear (antialiased) resize of uint8 (N, C, H, W) to (N, C, size, size)."""
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    out = torch.empty((*images.shape[:2], size, size), dtype=torch.uint8)
    step = max(1, 2**25 // (images.shape[1] * max(size, images.shape[-1]) ** 2))  # float chunks of <= 128 MiB
    for start in range(0, len(images), step):
        chunk = images[start:start + step].float()
        chunk = F.interpolate(chunk, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        out[start:start + step] = chunk.round().clamp(0, 255).to(torch.uint8)
    return out


def _load_digits(image_size: int | None) -> ImageData:
    from sklearn.datasets import load_digits

    digits = load_digits()
    pixels = np.rint(digits.images * (255.0 / 16.0)).astype(np.uint8)  # 0..16 -> 0..255
    images = torch.from_numpy(pixels).unsqueeze(1).contiguous()  # (1797, 1, 8, 8)
    if image_size is not None:
        images = _resize(images, image_size)
    labels = torch.from_numpy(digits.target.astype(np.int64))
    return _split_by_labels("digits", tuple(str(d) for d in range(10)), images, labels)


# ---- cache ---------------------------------------------------------------------------------


def _cache_path(cache_dir: Path, readable: str, key: dict) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return cache_dir / f"{re.sub(r'[^A-Za-z0-9._-]+', '_', readable).strip('_')}-{digest}.pt"


def _read_cache(path: Path, key: dict) -> ImageData | None:
    """The cached data set, or None when absent, unreadable, stale or malformed (then rebuilt)."""
    if not path.is_file():
        return None
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
        if blob.get("format") != _CACHE_FORMAT or blob.get("key") != json.dumps(key, sort_keys=True):
            return None
        return ImageData(name=blob["name"], classes=tuple(blob["classes"]),
                         **{f"{split}_{part}": blob[f"{split}_{part}"] for split in blob["splits"]
                            for part in ("images", "labels")})
    except Exception:  # any damage means "not cached": the caller rebuilds and overwrites it
        return None


def _write_cache(path: Path, key: dict, data: ImageData) -> None:
    blob = {
        "format": _CACHE_FORMAT, "key": json.dumps(key, sort_keys=True),
        "name": data.name, "classes": list(data.classes), "splits": list(data.splits),
        **{f"{split}_{part}": getattr(data, f"{split}_{part}") for split in data.splits for part in ("images", "labels")},
    }
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                torch.save(blob, f)
            os.replace(tmp, path)  # atomic: readers see the old file or the whole new one
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError as exc:  # a read-only cache only costs speed, never the run
        warnings.warn(f"could not write dataset cache {path}: {exc}", stacklevel=3)


def _file_stats(base: Path, files: list[Path]) -> list[list]:
    stats = []
    for f in files:
        st = f.stat()
        stats.append([f.relative_to(base).as_posix(), st.st_size, st.st_mtime_ns])
    return stats


# ---- torchvision ---------------------------------------------------------------------------

# name -> (torchvision class, paths under root that hold its files, fixed class names or None)
_TORCHVISION: dict[str, tuple[str, tuple[str, ...], tuple[str, ...] | None]] = {
    "cifar10": ("CIFAR10", ("cifar-10-batches-py",), None),
    "cifar100": ("CIFAR100", ("cifar-100-python",), None),
    "mnist": ("MNIST", ("MNIST",), None),
    "fashion-mnist": ("FashionMNIST", ("FashionMNIST",), None),
    "svhn": ("SVHN", ("train_32x32.mat", "test_32x32.mat"), tuple(str(d) for d in range(10))),
}


def _torchvision_key(name: str, root: Path, image_size: int | None) -> dict | None:
    files: list[Path] = []
    for rel in _TORCHVISION[name][1]:
        p = root / rel
        if p.is_file():
            files.append(p)
        elif p.is_dir():
            files.extend(sorted(q for q in p.rglob("*") if q.is_file()))
    if not files:
        return None
    return {"dataset": name, "root": str(root.resolve()), "image_size": image_size, "files": _file_stats(root, files)}


def _load_torchvision(name: str, root: Path, cache_dir: Path, download: bool, image_size: int | None) -> ImageData:
    key = _torchvision_key(name, root, image_size)
    if key is not None:
        cached = _read_cache(_cache_path(cache_dir, name, key), key)
        if cached is not None:
            return cached
    elif not download:
        raise AutokdError(f"{name} files not found under {root}", _DATA_ROOT_FIX)

    import torchvision.datasets as tvd

    cls_name, _, fixed_classes = _TORCHVISION[name]
    cls = getattr(tvd, cls_name)
    splits = []
    for train in (True, False):
        kwargs = {"split": "train" if train else "test"} if name == "svhn" else {"train": train}
        try:
            splits.append(cls(str(root), download=download, **kwargs))
        except Exception as exc:  # torchvision signals missing/corrupt files and failed downloads loosely
            what = "could not download" if download else "files missing or corrupt for"
            raise AutokdError(f"{what} {name} under {root}: {exc}", _DATA_ROOT_FIX) from exc

    sizes = [np.asarray(ds.data).shape for ds in splits]  # (N, H, W[, C]) or SVHN's (N, C, H, W)
    check_memory(sum(s[0] for s in sizes), 1 if len(sizes[0]) == 3 else 3, image_size or sizes[0][-2], name)
    tensors = []
    for ds in splits:
        images = torch.as_tensor(np.asarray(ds.data))
        if images.dim() == 3:  # MNIST-like: (N, 28, 28)
            images = images.unsqueeze(1)
        elif name != "svhn":  # CIFAR: (N, 32, 32, 3); SVHN is already (N, 3, 32, 32)
            images = images.permute(0, 3, 1, 2)
        images = images.to(torch.uint8).contiguous()
        labels = torch.as_tensor(np.asarray(ds.labels if name == "svhn" else ds.targets), dtype=torch.int64)
        if image_size is not None:
            images = _resize(images, image_size)
        tensors += [images, labels]
    classes = fixed_classes or tuple(splits[0].classes)
    data = ImageData(name, classes, *tensors)

    key = _torchvision_key(name, root, image_size)  # after a download the files exist now
    if key is not None:
        _write_cache(_cache_path(cache_dir, name, key), key, data)
    return data


# ---- image folders -------------------------------------------------------------------------

_FOLDER_FIX = "pass imagefolder:DIR where DIR holds train/<class>/ and test/<class>/ folders, or class folders directly"


#: Operating-system bookkeeping files, never images a user meant: skipped without a word, like dotfiles
#: (``.DS_Store``, ``._photo.jpg``) and hidden folders (``.ipynb_checkpoints``, ``.git``).
_SILENT_NAMES = frozenset({"thumbs.db", "desktop.ini"})
_MAX_FOLDER_WARNINGS = 5  # one warning line per folder up to this many, then one line for the rest
_EXTENSIONS = "/".join(IMAGE_EXTENSIONS)


def _silent(name: str) -> bool:
    return name.startswith(".") or name.lower() in _SILENT_NAMES


@dataclass(frozen=True)
class _ClassScan:
    """The class folders of one folder: every non-hidden subfolder is a class, with or without images."""

    images: dict[str, list[Path]]  # class -> sorted image files (also an empty list)
    others: dict[str, list[Path]]  # class -> files in its folder that are not images autokd reads
    loose: list[Path]  # files directly in the folder, beside the class folders


def _scan_classes(folder: Path) -> _ClassScan:
    images: dict[str, list[Path]] = {}
    others: dict[str, list[Path]] = {}
    loose: list[Path] = []
    for entry in sorted(folder.iterdir()):
        if _silent(entry.name):
            continue
        if not entry.is_dir():
            loose.append(entry)
            continue
        images[entry.name], others[entry.name] = _find_images(entry)
    return _ClassScan(images, others, loose)


def _find_images(folder: Path) -> tuple[list[Path], list[Path]]:
    """(image files, other files) anywhere under ``folder``, sorted; hidden files and folders are left out."""
    files = sorted(p for p in folder.rglob("*")
                   if not any(_silent(part) for part in p.relative_to(folder).parts) and p.is_file())
    return ([p for p in files if p.suffix.lower() in IMAGE_EXTENSIONS],
            [p for p in files if p.suffix.lower() not in IMAGE_EXTENSIONS])


def _not_images_warning(files: list[Path], folder: Path) -> str:
    return f"skipped {_files_note(files, folder)} in {folder}: not {_EXTENSIONS} images"


def _list_classes(folder: Path) -> dict[str, list[Path]]:
    """Class name -> sorted image files, for each subfolder of ``folder`` that holds images."""
    return {name: files for name, files in _scan_classes(folder).images.items() if files}


def _files_note(files: list[Path], base: Path) -> str:
    """``"3 files (e.g. notes.txt)"``: how many, and the first one's path under ``base``."""
    example = files[0].relative_to(base).as_posix()
    return f"{len(files)} file{'s' * (len(files) != 1)} ({'e.g. ' * (len(files) != 1)}{example})"


def _skip_warnings(scans: dict[str, _ClassScan], path: Path) -> list[str]:
    """One line per folder whose files are not read: non-images in class folders, files beside them."""
    lines = []
    for split, scan in scans.items():
        folder = path / split if split else path
        for name, files in scan.others.items():
            if files:
                lines.append(_not_images_warning(files, folder / name))
        if scan.loose:
            where = f"{split}/<class>/" if split else "<class>/"
            lines.append(f"skipped {_files_note(scan.loose, folder)} directly in {folder}: only images in class "
                         f"folders {where} are read")
    if len(lines) > _MAX_FOLDER_WARNINGS:
        lines = lines[:_MAX_FOLDER_WARNINGS] + [f"... and skipped files in {len(lines) - _MAX_FOLDER_WARNINGS} more "
                                                "folders of the data set"]
    return lines


def _refuse_empty_classes(scans: dict[str, _ClassScan], path: Path) -> None:
    """A class folder without images is an error, as in torchvision's ImageFolder: dropping it would give
    the model fewer classes than the folders (train), or report a class that was never tested (val, test)."""
    empty = [(split, name) for split, scan in scans.items() for name, files in scan.images.items() if not files]
    if not empty:
        return
    shown = [f"{split}/{name}" if split else name for split, name in empty]
    listed = ", ".join(shown[:5]) + (f" and {len(shown) - 5} more" if len(shown) > 5 else "")
    first = path / shown[0]
    others = scans[empty[0][0]].others[empty[0][1]]
    one = len(empty) == 1
    unread = f", only {_files_note(others, first)} of a type autokd does not read" if one and others else ""
    names = sorted({name for _, name in empty})
    if len(scans) > 1:
        remove = f"remove {'/, '.join(names[:5])}/ from every split ({', '.join(f'{s}/' for s in scans)})"
    else:
        remove = "remove the folder" + "s" * (not one)
    raise AutokdError(
        f"class folder{'s' * (not one)} {listed} under {path} {'has' if one else 'have'} no images{unread}",
        f"add {_EXTENSIONS} images to {first if one else 'each'}, or {remove}",
    )


def _scan_image_folder(path: Path) -> tuple[tuple[str, ...], tuple[str, ...], list[dict[str, list[Path]]], list[str]]:
    """An image folder's layout, listed and checked without decoding: (splits, classes, groups, warnings).

    ``splits`` is ``("train", "test")`` or ``("train", "val", "test")`` with one class -> files
    mapping per split in ``groups``, or ``()`` for class folders directly under ``path`` (one group).
    ``warnings`` are one line per folder with files that are not read (hidden files are skipped silently).
    """
    if not path.is_dir():
        raise AutokdError(f"dataset path {path} does not exist", _FOLDER_FIX)
    has_train, has_test = (path / "train").is_dir(), (path / "test").is_dir()
    if has_train != has_test:
        have, lack = ("train", "test") if has_train else ("test", "train")
        raise AutokdError(
            f"dataset path {path} has a {have}/ folder but no {lack}/ folder",
            f"add {path / lack}/<class>/ folders, or put class folders directly under {path} for an 80/20 split",
        )
    split_names = ("train", "val", "test") if (path / "val").is_dir() else ("train", "test")
    scans = {split: _scan_classes(path / split) for split in split_names} if has_train else {"": _scan_classes(path)}
    if not any(files for scan in scans.values() for files in scan.images.values()):
        where = f"{path}/train/<class>/ and {path}/test/<class>/" if has_train else f"class folders {path}/<class>/"
        raise AutokdError(f"no images found under {path}", f"put {_EXTENSIONS} files in {where}")
    _refuse_empty_classes(scans, path)
    warns = _skip_warnings(scans, path)
    if has_train:
        ignored = sorted(p for p in path.iterdir() if not _silent(p.name) and p.name not in split_names)
        if ignored:
            names = ", ".join(p.name + "/" * p.is_dir() for p in ignored[:3]) + (" ..." if len(ignored) > 3 else "")
            warns.insert(0, f"ignored {len(ignored)} entr{'y' if len(ignored) == 1 else 'ies'} in {path} ({names}): "
                            "only its train/, val/ and test/ folders are read")
        train = scans["train"].images
        for split in split_names[1:]:
            if list(train) != list(scans[split].images):
                only_train = sorted(set(train) - set(scans[split].images))
                only_other = sorted(set(scans[split].images) - set(train))
                raise AutokdError(
                    f"train and {split} classes differ under {path} (only in train: {only_train or 'none'}; only in {split}: {only_other or 'none'})",
                    f"give train/ and {split}/ the same class folders, each with at least one image",
                )
    classes = tuple(next(iter(scans.values())).images)
    return (split_names if has_train else ()), classes, [scan.images for scan in scans.values()], warns


def _load_image_folder(path: Path, cache_dir: Path, image_size: int | None, show_progress: bool) -> ImageData:
    path = path.resolve()
    split_names, classes, groups, warns = _scan_image_folder(path)
    has_train = bool(split_names)
    files = [f for group in groups for c in classes for f in group[c]]
    labels = torch.tensor([i for group in groups for i, c in enumerate(classes) for _ in group[c]], dtype=torch.int64)
    name = f"imagefolder:{path.name}"
    key = {"path": str(path), "image_size": image_size, "layout": "/".join(split_names) if has_train else "flat",
           "files": _file_stats(path, files)}
    cache_path = _cache_path(cache_dir, f"imagefolder-{path.name}", key)
    check_memory(len(files), 3, _target_size(files[0], image_size), name)
    cached = _read_cache(cache_path, key)
    if cached is not None:
        return dataclasses.replace(cached, warnings=tuple(warns))

    images = _decode_all(files, image_size, show_progress, description=f"decoding {name}")
    if has_train:
        splits, start = {}, 0
        for split, group in zip(split_names, groups):
            stop = start + sum(len(group[c]) for c in classes)
            splits[f"{split}_images"], splits[f"{split}_labels"] = images[start:stop].contiguous(), labels[start:stop]
            start = stop
        data = ImageData(name, classes, **splits)
    else:
        data = _split_by_labels(name, classes, images, labels)
    _write_cache(cache_path, key, data)
    return dataclasses.replace(data, warnings=tuple(warns))


def _target_size(first: Path, image_size: int | None) -> int:
    if image_size is not None:
        return image_size
    from PIL import Image

    try:
        with Image.open(first) as im:
            width, height = im.size
    except Exception as exc:
        raise _unreadable(first, exc) from exc
    size = min(width, height)  # a non-square first image: every image is squashed to its short side
    _check_image_size(size, f"the first image {first}")
    return size


def _unreadable(path: Path, exc: Exception) -> AutokdError:
    return AutokdError(f"cannot read image {path} ({type(exc).__name__}: {exc})", f"remove or replace {path}")


def _decode_image(path: Path, size: int) -> tuple[np.ndarray, bool]:
    """One image as uint8 (size, size, 3) and whether it was grayscale ("L")."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            gray = im.mode == "L"
            im = im.convert("L" if gray else "RGB")
            if im.size != (size, size):
                im = im.resize((size, size), Image.Resampling.BILINEAR)
            pixels = np.asarray(im)
    except Exception as exc:  # PIL raises OSError, ValueError, SyntaxError... for bad files
        raise _unreadable(path, exc) from exc
    if gray:
        pixels = np.repeat(pixels[:, :, None], 3, axis=2)
    return pixels, gray


def _decode_all(files: list[Path], image_size: int | None, show_progress: bool, description: str) -> torch.Tensor:
    """Decode ``files`` in a thread pool (PIL releases the GIL) into uint8 (N, C, S, S)."""
    size = _target_size(files[0], image_size)
    out = np.empty((len(files), size, size, 3), dtype=np.uint8)  # (N, H, W, 3)
    all_gray = True
    progress = None
    if show_progress:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TimeRemainingColumn(), console=Console(stderr=True), transient=True)
        progress.start()
        task = progress.add_task(description, total=len(files))
    pool = ThreadPoolExecutor(max_workers=min(16, (os.cpu_count() or 1) + 4))
    try:
        for i, (pixels, gray) in enumerate(pool.map(lambda f: _decode_image(f, size), files)):
            out[i] = pixels
            all_gray &= gray
            if progress is not None:
                progress.advance(task)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)  # on an error, drop the queued work
        if progress is not None:
            progress.stop()
    images = torch.from_numpy(out).permute(0, 3, 1, 2)  # (N, 3, S, S)
    return (images[:, :1] if all_gray else images).contiguous()
