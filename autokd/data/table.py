"""``csv:PATH`` and JSON lines: a table of image paths and labels, one row per image.

A ``.csv`` file has a header row naming its columns; a ``.jsonl`` file (``csv:FILE.jsonl`` or
``jsonl:FILE``) has one JSON object per line. Each row needs ``path`` (relative to the table's
folder, or absolute) and ``label`` (the class name); an optional ``split`` (``train``, ``val`` or
``test``) places it. Other columns are ignored. Classes are the labels, sorted (as
torchvision's ``ImageFolder`` sorts class folders), so a table listing an image folder's files
gives the folder's classes, splits and arrays:

* no split on any row: the images are split 80/20, stratified and seeded, as a folder of class
  folders is; a validation split is carved from train later, as for every source;
* a split on every row: ``train`` and ``test`` rows are required, ``val`` rows optional (then used
  instead of carving one); every label needs a row in each split, as every class folder of an
  image folder needs images in each split;
* a split on some rows only is refused: which split the others belong to would be a guess.

Every problem is one line naming the row (``FILE:LINE``): a missing column, a path that does not
exist or is not an image autokd reads, an image listed twice, an unknown split, a label without
rows in a split; an unreadable image is named by its row when it is decoded.
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from autokd.data.cache import _file_stats
from autokd.data.decode import IMAGE_EXTENSIONS
from autokd.data.images import DatasetInfo, ImageData
from autokd.data.listing import Listing, inspect_listing, load_listing
from autokd.errors import AutokdError

TABLE_KINDS = ("csv", "jsonl")
TABLE_SUFFIXES = (".csv", ".jsonl")
COLUMNS = ("path", "label")  # required; "split" is optional
SPLITS = ("train", "val", "test")
_EXTENSIONS = "/".join(IMAGE_EXTENSIONS)
_TABLE_FIX = "pass csv:FILE naming a .csv or .jsonl file with one row per image and path and label columns"


@dataclass(frozen=True)
class TableRow:
    """One checked row: ``where`` it is (``FILE:LINE``), its image file, label and split (``""`` if none)."""

    where: str
    path: Path
    label: str
    split: str  # "" where the row names none


def _is_jsonl(kind: str, path: Path) -> bool:
    return kind == "jsonl" or path.suffix.lower() == ".jsonl"


def load_table(kind: str, path: Path, cache_dir: Path, image_size: int | None, show_progress: bool) -> ImageData:
    """The table's images, decoded, split and cached as an image folder's are."""
    path = path.resolve()
    listing = _table_listing(path, _is_jsonl(kind, path))
    stat = path.stat()
    key = {"table": str(path), "table_file": [stat.st_size, stat.st_mtime_ns], "classes": list(listing.classes),
           "image_size": image_size, "layout": listing.layout, "files": _file_stats(Path(path.anchor), listing.files)}
    return load_listing(listing, key, cache_dir, listing.name.replace(":", "-"), image_size, show_progress)


def inspect_table(kind: str, path: Path, image_size: int | None) -> DatasetInfo:
    """The table read and checked as :func:`load_table` would, one image header read."""
    path = path.resolve()
    return inspect_listing(_table_listing(path, _is_jsonl(kind, path)), image_size)


def read_table(path: Path) -> list[TableRow]:
    """The rows of a ``.csv`` or ``.jsonl`` table, each checked as loading checks it (``autokd predict``)."""
    path = path.resolve()
    return _read_rows(path, _is_jsonl("csv", path))


def _table_listing(path: Path, jsonl: bool) -> Listing:
    rows = _read_rows(path, jsonl)
    named = [row for row in rows if row.split]
    if named and len(named) != len(rows):
        bare = next(row for row in rows if not row.split)
        raise AutokdError(f"{bare.where}: no split, while other rows name one (e.g. {named[0].where})",
                          "give every row a split (train, val or test), or none for a seeded 80/20 split")
    splits = tuple(s for s in SPLITS if s != "val" or any(row.split == "val" for row in rows)) if named else ()
    for required in ("train", "test") if splits else ():
        if not any(row.split == required for row in rows):
            raise AutokdError(f"{path} has no {required} rows (its rows name only "
                              f"{', '.join(sorted({row.split for row in rows}))})",
                              f"mark some rows of every label split={required}, or give no row a split "
                              "for a seeded 80/20 split")
    classes = tuple(sorted({row.label for row in rows}))
    groups: list[dict[str, list[Path]]] = [{c: [] for c in classes} for _ in splits or ("",)]
    for row in rows:
        groups[splits.index(row.split) if splits else 0][row.label].append(row.path)
    for group in groups:
        for files in group.values():
            files.sort()  # as an image folder lists them: the rows' order does not matter
    _refuse_empty_classes(path, rows, splits, groups)
    name = f"{'jsonl' if jsonl else 'csv'}:{path.name}"
    return Listing(name, splits, classes, groups, rows={row.path: row.where for row in rows})


def _refuse_empty_classes(path: Path, rows: list[TableRow], splits: tuple[str, ...], groups: list[dict]) -> None:
    """Every label needs rows in every split, as every class folder needs images in every split."""
    empty = [(split, label) for split, group in zip(splits, groups) for label, files in group.items() if not files]
    if not empty:
        return
    split, label = empty[0]
    first = next(row.where for row in rows if row.label == label)
    more = f" (and {len(empty) - 1} more label/split pair{'s' * (len(empty) > 2)} without rows)" if len(empty) > 1 else ""
    raise AutokdError(f"{path}: label {label!r} (e.g. {first}) has no {split} rows{more}",
                      f"give every label at least one row in each split ({', '.join(splits)}), or remove its rows")


def _read_rows(path: Path, jsonl: bool) -> list[TableRow]:
    if not path.is_file():
        raise AutokdError(f"dataset table {path} does not exist", _TABLE_FIX)
    rows: list[TableRow] = []
    seen: dict[Path, str] = {}
    try:
        for line, record in (_jsonl_records(path) if jsonl else _csv_records(path)):
            row = _row(f"{path}:{line}", record, path.parent)
            if row.path in seen:
                raise AutokdError(f"{row.where}: image {row.path} is listed again (first at {seen[row.path]})",
                                  "list each image once: remove one of the two rows")
            seen[row.path] = row.where
            rows.append(row)
    except (UnicodeDecodeError, csv.Error) as exc:
        raise AutokdError(f"cannot read {path} as {'JSON lines' if jsonl else 'CSV'} ({type(exc).__name__}: {exc})",
                          "save it as UTF-8 text: " + ("one JSON object per line" if jsonl else
                                                       "a header row naming path and label, then one row per image")) from exc
    if not rows:
        raise AutokdError(f"{path} lists no images", "add one row per image, with its path and label")
    return rows


def _csv_records(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line, row) for each data row; the header's column names are matched without case or spaces."""
    with path.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        found = [name.strip().lower() for name in reader.fieldnames or []]
        _require_columns(f"{path}:1", found, "column", reader.fieldnames or [])
        for record in reader:
            yield reader.line_num, {name.strip().lower(): value for name, value in record.items() if name is not None}


def _jsonl_records(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line, object) for each non-blank line."""
    with path.open(encoding="utf-8-sig") as f:
        for line, text in enumerate(f, 1):
            if not text.strip():
                continue
            try:
                record = json.loads(text)
            except json.JSONDecodeError as exc:
                record, problem = None, exc.msg
            else:
                problem = f"a JSON {type(record).__name__}"
            if not isinstance(record, dict):
                raise AutokdError(f"{path}:{line}: not a JSON object ({problem})",
                                  'write one JSON object per line, e.g. {"path": "cats/1.jpg", "label": "cat"}')
            _require_columns(f"{path}:{line}", list(record), "key", list(record))
            yield line, record


def _require_columns(where: str, found: list[str], word: str, shown: list[str]) -> None:
    missing = [name for name in COLUMNS if name not in found]
    if missing:
        where_named = "in the header row" if word == "column" else "in every line's object"
        raise AutokdError(f"{where}: no {missing[0]!r} {word} ({word}s found: {', '.join(map(str, shown)) or 'none'})",
                          f"name the {word}s path and label {where_named} (split optional: train, val or test)")


def _row(where: str, record: dict[str, Any], base: Path) -> TableRow:
    raw, label, split = (_text(record.get(name)) for name in ("path", "label", "split"))
    for name, value in (("path", raw), ("label", label)):
        if not value:
            raise AutokdError(f"{where}: empty {name}", f"give the row its image's {name}, or remove the row")
    if split.lower() not in ("", *SPLITS):
        raise AutokdError(f"{where}: unknown split {split!r}",
                          "write train, val or test in its split column, or leave every row's split empty")
    file = Path(raw).expanduser()
    file = Path(os.path.normpath(file if file.is_absolute() else base / file))
    if not file.is_file():
        shown = raw if raw == str(file) else f"{raw} ({file})"
        raise AutokdError(f"{where}: image {shown} does not exist",
                          f"correct the path (relative to {base}, or absolute), or remove the row")
    if file.suffix.lower() not in IMAGE_EXTENSIONS:
        raise AutokdError(f"{where}: {raw} is not a {_EXTENSIONS} image",
                          "convert it to one of those formats, or remove the row")
    return TableRow(where, file, label, split.lower())


def _text(value: Any) -> str:
    return "" if value is None else str(value).strip()
