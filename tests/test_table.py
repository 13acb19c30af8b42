"""`csv:PATH` and `.jsonl` tables of image paths: the same splits and arrays as the equivalent image
folder, one line per bad row through `autokd check`, and a search on a table through the CLI."""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from autokd.cli import app
from autokd.data import decode, inspect_dataset, load_dataset
from autokd.errors import AutokdError
from autokd.predict import collect_samples
from tests.tiny import write_one_trial_study, write_tiny_study

CLASSES = ("cat", "dog", "fox")


def write_folder(root: Path, splits: tuple[str, ...], per_class: int = 5, size: int = 12) -> Path:
    """Real PNGs in class folders (``splits`` () for class folders directly under ``root``); one image of
    each class folder sits in a subfolder, which an image folder reads too."""
    rng = np.random.default_rng(len(splits))
    for split in splits or ("",):
        for c, label in enumerate(CLASSES):
            folder = root / split / label
            for i in range(per_class + c):  # classes of different sizes: the stratified splits have work to do
                target = folder / ("more" if i == 0 else "") / f"{i}.png"
                target.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(target)
    return root


def folder_rows(root: Path, splits: tuple[str, ...]) -> list[dict[str, str]]:
    """One row per image of the folder: its path, its class folder and (with splits) its split folder."""
    rows = []
    for file in sorted(root.rglob("*.png")):
        parts = file.relative_to(root).parts
        row = {"path": str(file), "label": parts[1] if splits else parts[0]}
        if splits:
            row["split"] = parts[0]
        rows.append(row)
    random.Random(0).shuffle(rows)  # the rows' order does not matter
    return rows


def write_table(path: Path, rows: list[dict], columns: tuple[str, ...] | None = None) -> Path:
    """``rows`` as a CSV (header ``columns``) or, for a ``.jsonl`` path, one JSON object per line."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(row) + "\n" for row in rows))
        return path
    columns = columns or tuple(rows[0])
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        writer.writerows([row.get(c, "") for c in columns] for row in rows)
    return path


def assert_same(a, b) -> None:
    assert a.classes == b.classes == CLASSES and a.splits == b.splits
    for split in a.splits:
        assert torch.equal(getattr(a, f"{split}_images"), getattr(b, f"{split}_images")), split
        assert torch.equal(getattr(a, f"{split}_labels"), getattr(b, f"{split}_labels")), split


@pytest.mark.parametrize("splits", [("train", "test"), ("train", "val", "test"), ()], ids=["train-test", "val", "flat"])
@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_a_table_gives_the_image_folders_splits(tmp_path, splits, suffix):
    """Paths relative to the table (or absolute), rows in any order: the folder's classes, splits and arrays."""
    root = write_folder(tmp_path / "pets", splits)
    rows = folder_rows(root, splits)
    for row in rows[::2]:  # half relative to the table's folder, half absolute
        row["path"] = str(Path("..") / Path(row["path"]).relative_to(tmp_path))
    table = write_table(tmp_path / "lists" / f"labels{suffix}", rows)
    folder = load_dataset(f"imagefolder:{root}", cache_dir=tmp_path / "cache", show_progress=False)
    listed = load_dataset(f"csv:{table}", cache_dir=tmp_path / "cache", show_progress=False)
    assert listed.name == f"{suffix[1:]}:labels{suffix}"
    assert_same(folder, listed)
    assert_same(folder.with_validation(0.25, seed=3), listed.with_validation(0.25, seed=3))
    info = inspect_dataset(f"csv:{table}")
    assert info.classes == CLASSES and info.image_size == 12
    assert info.split_sizes == {split: len(getattr(listed, f"{split}_labels")) for split in listed.splits}
    if suffix == ".jsonl":
        assert_same(folder, load_dataset(f"jsonl:{table}", cache_dir=tmp_path / "cache", show_progress=False))


def test_a_table_is_cached_and_rebuilt_when_it_changes(tmp_path, monkeypatch):
    root = write_folder(tmp_path / "pets", ("train", "test"))
    rows = folder_rows(root, ("train", "test"))
    table = write_table(tmp_path / "labels.csv", rows)
    first = load_dataset(f"csv:{table}", cache_dir=tmp_path / "cache", show_progress=False)
    assert [p.name.split("-")[0] for p in (tmp_path / "cache").iterdir()] == ["csv"]

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded although cached")

    with monkeypatch.context() as patch:
        patch.setattr(decode, "_decode_image", no_decoding)
        assert_same(first, load_dataset(f"csv:{table}", cache_dir=tmp_path / "cache", show_progress=False))
    relabelled = [{**row, "label": "cat"} if row["label"] == "fox" else row for row in rows]
    write_table(table, relabelled)  # same files, other labels: another data set
    again = load_dataset(f"csv:{table}", cache_dir=tmp_path / "cache", show_progress=False)
    assert again.classes == ("cat", "dog") and len(list((tmp_path / "cache").iterdir())) == 2


def test_an_unreadable_image_is_named_by_its_row_when_decoded(tmp_path):
    root = write_folder(tmp_path / "pets", ("train", "test"))
    rows = sorted(folder_rows(root, ("train", "test")), key=lambda row: row["path"])
    (root / "train" / "dog" / "3.png").write_bytes(b"truncated")
    table = write_table(tmp_path / "labels.csv", rows)
    line = 2 + next(i for i, row in enumerate(rows) if row["path"].endswith("train/dog/3.png"))
    assert inspect_dataset(f"csv:{table}").classes == CLASSES  # one header read: the first row's
    with pytest.raises(AutokdError) as err:
        load_dataset(f"csv:{table}", cache_dir=tmp_path / "cache", show_progress=False)
    assert str(err.value).startswith(f"error: {table}:{line}: cannot read image {root / 'train' / 'dog' / '3.png'} (")
    assert str(err.value).endswith("; fix: replace the image, or remove its row")


def test_predict_reads_a_table_as_it_reads_class_folders(tmp_path):
    root = write_folder(tmp_path / "pets", ())
    table = write_table(tmp_path / "labels.jsonl", folder_rows(root, ()))
    from_folder = collect_samples([root], list(CLASSES))
    assert sorted(collect_samples([table], list(CLASSES)), key=str) == sorted(from_folder, key=str)
    with pytest.raises(AutokdError, match=r"labels.jsonl:\d+: label 'fox' is no class of the model; fix: label rows"):
        collect_samples([table], ["cat", "dog"])


# ---- bad tables through `autokd check`: one line naming the row, exit 2, nothing written -------------


def _rows(folder: Path) -> list[dict]:
    return sorted(folder_rows(write_folder(folder / "pets", ("train", "test"), per_class=2), ("train", "test")),
                  key=lambda row: row["path"])


def _missing_column(folder: Path) -> Path:
    return write_table(folder / "labels.csv", [{"path": r["path"], "class": r["label"]} for r in _rows(folder)])


def _row_changed(index: int, **changes: str) -> Callable[[Path], Path]:
    """The folder's rows with row ``index`` (line ``index + 2``) changed."""
    def build(folder: Path) -> Path:
        rows = _rows(folder)
        rows[index].update(changes)
        return write_table(folder / "labels.csv", rows)
    return build


def _unreadable_first(folder: Path) -> Path:
    """The image whose header `check` reads: the first class's first train image, on line 11 (9 test rows first)."""
    rows = _rows(folder)
    assert rows[9]["path"].endswith("train/cat/1.png")
    Path(rows[9]["path"]).write_bytes(b"not a png")
    return write_table(folder / "labels.csv", rows)


def _empty_class(folder: Path) -> Path:
    return write_table(folder / "labels.csv", [r for r in _rows(folder) if not (r["label"] == "fox" and r["split"] == "test")])


def _no_test_rows(folder: Path) -> Path:
    return write_table(folder / "labels.csv", [r for r in _rows(folder) if r["split"] == "train"])


def _listed_twice(folder: Path) -> Path:
    rows = _rows(folder)
    return write_table(folder / "labels.csv", rows + [{**rows[0], "split": "test"}])


def _not_an_image(folder: Path) -> Path:
    rows = _rows(folder)
    (folder / "notes.txt").write_text("x")
    rows[3]["path"] = "notes.txt"
    return write_table(folder / "labels.csv", rows)


def _jsonl_missing_key(folder: Path) -> Path:
    rows = _rows(folder)
    rows[1] = {"file": rows[1]["path"], "label": "cat", "split": "train"}
    return write_table(folder / "labels.jsonl", rows)


def _jsonl_not_an_object(folder: Path) -> Path:
    table = write_table(folder / "labels.jsonl", _rows(folder))
    table.write_text(table.read_text() + '["pets/a.png", "cat"]\n')
    return table


def _empty_table(folder: Path) -> Path:
    (folder / "labels.csv").write_text("path,label\n")
    return folder / "labels.csv"


@pytest.mark.parametrize("bad,expected", [
    (_missing_column, ":1: no 'label' column (columns found: path, class); fix: name the columns path and label"),
    (_row_changed(2, path="pets/train/cat/9.png"), ":4: image pets/train/cat/9.png ("),
    (_unreadable_first, ":11: cannot read image "),
    (_empty_class, ": label 'fox' (e.g. "),
    (_row_changed(4, split="valid"), ":6: unknown split 'valid'; fix: write train, val or test"),
    (_row_changed(1, split=""), ":3: no split, while other rows name one"),
    (_no_test_rows, " has no test rows (its rows name only train)"),
    (_listed_twice, " is listed again (first at "),
    (_not_an_image, ":5: notes.txt is not a .jpg/.jpeg/.png/.bmp/.webp image"),
    (_jsonl_missing_key, "labels.jsonl:2: no 'path' key (keys found: file, label, split)"),
    (_jsonl_not_an_object, ": not a JSON object (a JSON list)"),
    (_empty_table, "labels.csv lists no images"),
], ids=["column", "missing-file", "unreadable", "empty-class", "split", "split-on-some", "no-test", "twice",
        "not-image", "jsonl-key", "jsonl-object", "empty"])
def test_a_bad_table_is_one_line_naming_the_row(tmp_path, monkeypatch, bad, expected):
    data = tmp_path / "data"
    data.mkdir()
    table = bad(data)
    monkeypatch.chdir(tmp_path)
    study = write_tiny_study(tmp_path / "study", dataset=f"csv:{table}")
    before = {str(p) for p in tmp_path.rglob("*")}
    result = CliRunner().invoke(app, ["check", str(study)], catch_exceptions=False)
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2, result.output
    assert len(lines) == 1 and lines[0].startswith(f"error: {table}") and "; fix: " in lines[0], result.output
    assert expected in lines[0], lines[0]
    assert {str(p) for p in tmp_path.rglob("*")} == before


def test_check_describes_a_table(tmp_path):
    root = write_folder(tmp_path / "pets", ("train", "val", "test"))
    table = write_table(tmp_path / "labels.jsonl", folder_rows(root, ("train", "val", "test")))
    result = CliRunner().invoke(app, ["check", str(write_tiny_study(tmp_path, dataset="csv:labels.jsonl"))],
                                catch_exceptions=False)  # relative to the study file, as every path in it
    assert result.exit_code == 0, result.output
    assert table.is_file() and "jsonl:labels.jsonl: 3 classes, 18 train / 18 val / 18 test, 12 px" in result.output


@pytest.mark.slow  # a real one-trial search: several seconds
def test_search_on_a_csv_table(tmp_path, monkeypatch):
    root = write_folder(tmp_path / "pets", (), per_class=8, size=8)
    table = write_table(tmp_path / "labels.csv", folder_rows(root, ()), columns=("label", "path"))
    monkeypatch.chdir(tmp_path)
    study = write_one_trial_study(tmp_path, f"csv:{table.name}", validation_fraction=0.25)
    result = CliRunner().invoke(app, ["search", str(study)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "csv:labels.csv" in result.output and (tmp_path / "tiny" / "study.db").is_file()
