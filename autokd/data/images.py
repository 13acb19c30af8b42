"""The in-memory data set (pure, no I/O): :class:`ImageData`, its seeded stratified splits, and the
size and memory checks every source makes before it decodes anything."""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import torch

from autokd.errors import AutokdError

MIN_IMAGE_SIZE, MAX_IMAGE_SIZE = 8, 224
#: Bytes of memory a loaded data set needs per uint8 pixel value: the decode buffer, the tensor,
#: the split copies and the device copy each hold the images once.
BYTES_PER_VALUE = 4
TEST_FRACTION = 0.2  # held out when a source has no test split of its own (digits, flat folders)


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
