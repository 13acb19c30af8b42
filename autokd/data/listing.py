"""A data set listed as image files, before anything is decoded: what every file source becomes.

An image folder (:mod:`~autokd.data.folder`) and a table of image paths (:mod:`~autokd.data.table`)
each list their files as a :class:`Listing`: per split, class name -> files. From there one path
decodes them (:mod:`~autokd.data.decode`), splits them (the source's own splits, or 80/20
stratified and seeded) and caches the arrays (:mod:`~autokd.data.cache`), so the same files give
the same arrays whichever source listed them.
"""

from __future__ import annotations

import dataclasses
import math
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import torch

from autokd.data.cache import _cache_path, _read_cache, _write_cache
from autokd.data.decode import UnreadableImage, _decode_all, _target_size
from autokd.data.images import TEST_FRACTION, DatasetInfo, ImageData, _split_by_labels, check_memory
from autokd.errors import AutokdError


@dataclass(frozen=True)
class Listing:
    """The files of a data set, per split and class, checked but not decoded.

    Attributes:
        name: readable name of the source, e.g. ``"imagefolder:pets"`` or ``"csv:labels.csv"``.
        splits: ``("train", "test")`` or ``("train", "val", "test")``, one class -> files mapping per
            split in ``groups``; ``()`` for one group that loading splits 80/20 (stratified, seed 0).
        classes: class names in label order.
        groups: per split, class -> image files (every class of ``classes`` has at least one).
        warnings: one line per thing loading skips.
        rows: where a file was listed (``"labels.csv:7"``), for errors that name the row.
    """

    name: str
    splits: tuple[str, ...]
    classes: tuple[str, ...]
    groups: list[dict[str, list[Path]]]
    warnings: tuple[str, ...] = ()
    rows: dict[Path, str] = field(default_factory=dict, repr=False)

    @property
    def layout(self) -> str:
        return "/".join(self.splits) if self.splits else "flat"

    @property
    def files(self) -> list[Path]:
        return [f for group in self.groups for c in self.classes for f in group[c]]

    @property
    def labels(self) -> torch.Tensor:
        return torch.tensor([i for group in self.groups for i, c in enumerate(self.classes) for _ in group[c]],
                            dtype=torch.int64)

    def split_sizes(self) -> dict[str, int]:
        """Images per split as loading gives them (a flat listing: after its 80/20 split)."""
        if not self.splits:
            total = sum(len(files) for files in self.groups[0].values())
            test = math.ceil(round(TEST_FRACTION * total, 9))
            return {"train": total - test, "test": test}
        return {split: sum(len(files) for files in group.values()) for split, group in zip(self.splits, self.groups)}

    def target_size(self, image_size: int | None) -> int:
        """The side every image gets: ``image_size``, or the first image's (one header read)."""
        with self.naming_rows():
            return _target_size(self.files[0], image_size)

    @contextmanager
    def naming_rows(self) -> Iterator[None]:
        """A context in which an unreadable image's error names the row that listed it."""
        try:
            yield
        except UnreadableImage as exc:
            row = self.rows.get(exc.path)
            if row is None:
                raise
            raise AutokdError(f"{row}: {exc.problem}", "replace the image, or remove its row") from exc


def load_listing(listing: Listing, key: dict, cache_dir: Path, readable: str, image_size: int | None,
                 show_progress: bool) -> ImageData:
    """Decode, split and cache a listing's images (``key`` names its files for the cache)."""
    files, warns = listing.files, tuple(listing.warnings)
    cache_path = _cache_path(cache_dir, readable, key)
    check_memory(len(files), 3, listing.target_size(image_size), listing.name)
    cached = _read_cache(cache_path, key)
    if cached is not None:
        return dataclasses.replace(cached, warnings=warns)

    with listing.naming_rows():
        images = _decode_all(files, image_size, show_progress, description=f"decoding {listing.name}")
    labels = listing.labels
    if listing.splits:
        splits, start = {}, 0
        for split, group in zip(listing.splits, listing.groups):
            stop = start + sum(len(group[c]) for c in listing.classes)
            splits[f"{split}_images"], splits[f"{split}_labels"] = images[start:stop].contiguous(), labels[start:stop]
            start = stop
        data = ImageData(listing.name, listing.classes, **splits)
    else:
        data = _split_by_labels(listing.name, listing.classes, images, labels)
    _write_cache(cache_path, key, data)
    return dataclasses.replace(data, warnings=warns)


def inspect_listing(listing: Listing, image_size: int | None) -> DatasetInfo:
    """What :func:`load_listing` would give, without decoding (one image header read)."""
    sizes = listing.split_sizes()
    size = listing.target_size(image_size)
    check_memory(sum(sizes.values()), 3, size, listing.name)
    return DatasetInfo(listing.name, listing.classes, sizes, size, tuple(listing.warnings))
