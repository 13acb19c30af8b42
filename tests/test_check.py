"""`autokd check STUDY`: every shipped study passes; each kind of bad input is one line, exit 2, nothing written."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

from autokd.cli import app
from tests.tiny import TINY_SPACE, write_one_trial_study, write_tiny_study

REPO = Path(__file__).resolve().parents[1]
STUDIES = sorted((REPO / "studies").glob("*.yaml"))


def tree(folder: Path) -> set[str]:
    return {str(p) for p in folder.rglob("*")}


def check(*args: str):
    return CliRunner().invoke(app, ["check", *args], catch_exceptions=False)


@pytest.fixture(scope="module")
def cifar_shaped(tmp_path_factory, cifar_subset_dir) -> Path:
    """CIFAR-10's layout and counts (5,000 train and 1,000 test images per class), as hard links to
    the real subset's images: what `autokd check` reads of the data set, at a fraction of its bytes."""
    root = tmp_path_factory.mktemp("cifar10-shaped")
    for split, per_class in (("train", 5000), ("test", 1000)):
        for source in sorted((cifar_subset_dir / split).iterdir()):
            images = sorted(source.iterdir())
            target = root / split / source.name
            target.mkdir(parents=True)
            for i in range(per_class):
                os.link(images[i % len(images)], target / f"{i:04d}.jpg")
    return root


@pytest.mark.parametrize("path", STUDIES, ids=lambda p: p.name)
def test_every_shipped_study_passes(path, tmp_path, monkeypatch, request):
    """Run from a checkout's root as the studies' comments say; image-folder studies find `data/` there."""
    if yaml.safe_load(path.read_text()).get("dataset", "").startswith("imagefolder:"):
        (tmp_path / "data").symlink_to(request.getfixturevalue("cifar_shaped"))
    monkeypatch.chdir(tmp_path)
    before = tree(tmp_path)
    result = check(str(path))
    assert result.exit_code == 0, result.output
    assert "OK (nothing trained, no database opened)" in result.output and "search dimension" in result.output
    assert tree(tmp_path) == before  # no runs/, no study database, no dataset cache


def _corrupt_checkpoint(folder: Path) -> dict:
    (folder / "teacher.pt").write_bytes(b"not a torch file")
    return {"teacher": {"checkpoint": str(folder / "teacher.pt")}}


def _half_image_folder(folder: Path) -> dict:
    (folder / "pets" / "train" / "cat").mkdir(parents=True)
    return {"dataset": f"imagefolder:{folder / 'pets'}"}


def _empty_class_folder(folder: Path) -> dict:
    from PIL import Image

    for split in ("train", "test"):
        (folder / "pets" / split / "dog").mkdir(parents=True)
        (folder / "pets" / split / "cat").mkdir(parents=True)
        Image.new("RGB", (8, 8)).save(folder / "pets" / split / "cat" / "0.png")
    return {"dataset": f"imagefolder:{folder / 'pets'}"}


@pytest.mark.parametrize("bad,expected", [
    (lambda f: {"validation_fraction": 1.5}, "validation_fraction = 1.5 is out of range"),
    (lambda f: {"epochz": 3}, "unknown key 'epochz'"),
    (lambda f: {"constraints": {"min_accuracy": 1.5}}, "constraints.min_accuracy = 1.5 is out of range"),
    (lambda f: {"subset_train": 5000}, "subset_train = 5000 is more than the 1,437 train images of digits"),
    (lambda f: {"dataset": "imagefolder:no/such/folder"}, "does not exist"),
    (_half_image_folder, "has a train/ folder but no test/ folder"),
    (_empty_class_folder, "class folders train/dog, test/dog under"),
    (lambda f: {"teacher": {"family": "resnet", "knobs": {"depth": 21}}}, "teacher.knobs.depth = 21"),
    (lambda f: {"teacher": {"family": "alexnet"}}, "alexnet"),
    (_corrupt_checkpoint, "is neither an autokd checkpoint, a TorchScript archive nor an ONNX model"),
    (lambda f: {"search_space": str(f / "missing.yaml")}, "missing.yaml does not exist"),
], ids=["range", "unknown-key", "constraint", "subset", "data-path", "data-layout", "empty-class", "teacher-knob",
        "teacher-family", "teacher-checkpoint", "space-file"])
def test_a_bad_study_exits_2_with_one_line_naming_the_problem(tmp_path, monkeypatch, bad, expected):
    monkeypatch.chdir(tmp_path)
    study = write_tiny_study(tmp_path, **bad(tmp_path))
    before = tree(tmp_path)
    result = check(str(study))
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2, result.output
    assert len(lines) == 1 and lines[0].startswith("error: ") and "; fix: " in lines[0], result.output
    assert expected in lines[0], lines[0]
    assert tree(tmp_path) == before


def test_a_bad_search_space_value_is_named(tmp_path):
    space = {**TINY_SPACE, "compress": {"method": "fisher", "ratio": 0.99}}
    result = check(str(write_tiny_study(tmp_path, space=space)))
    assert result.exit_code == 2 and "fisher ratio=0.99 is out of range" in result.output, result.output


def test_an_image_folder_is_listed_not_decoded(tmp_path):
    """Only the first image is opened (its size): a later corrupt file is for `autokd search` to find."""
    from PIL import Image

    for split in ("train", "test"):
        for label in ("a", "b"):
            folder = tmp_path / "imgs" / split / label
            folder.mkdir(parents=True)
            for i in range(3):
                Image.fromarray(torch.randint(0, 255, (16, 16, 3), dtype=torch.uint8).numpy()).save(folder / f"{i}.png")
    (tmp_path / "imgs" / "train" / "b" / "2.png").write_bytes(b"truncated")
    result = check(str(write_tiny_study(tmp_path, dataset=f"imagefolder:{tmp_path / 'imgs'}")))
    assert result.exit_code == 0, result.output
    assert "imagefolder:imgs: 2 classes, 6 train / 6 test, 16 px" in result.output


def test_files_an_image_folder_does_not_read_are_one_warning_line_per_folder(tmp_path):
    from PIL import Image

    root = tmp_path / "pets"
    for split in ("train", "test"):
        for label in ("cat", "dog"):
            (root / split / label).mkdir(parents=True)
            for i in range(2):
                Image.new("RGB", (8, 8), (40 * i, 0, 0)).save(root / split / label / f"{i}.png")
    for name in ("a.txt", "b.txt"):
        (root / "train" / "dog" / name).write_text("x")
    (root / "train" / "cat" / ".DS_Store").write_text("x")  # hidden: silent
    result = check(str(write_tiny_study(tmp_path, dataset=f"imagefolder:{root}")))
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.output.splitlines() if line.startswith("warning: ")]
    assert warnings == [f"warning: skipped 2 files (e.g. a.txt) in {root / 'train' / 'dog'}: "
                        "not .jpg/.jpeg/.png/.bmp/.webp images"], result.output
    assert "imagefolder:pets: 2 classes, 4 train / 4 test, 8 px" in result.output


@pytest.mark.slow  # a real one-trial search: several seconds
def test_search_prints_the_same_warning_before_it_starts(tmp_path, monkeypatch):
    """`autokd search` warns as `autokd check` does, from the loaded data, then runs as before."""
    from PIL import Image

    root = tmp_path / "pets"
    for split in ("train", "test"):
        for label, colour in (("cat", 0), ("dog", 255)):
            (root / split / label).mkdir(parents=True)
            for i in range(6):
                pixels = torch.randint(0, 128, (8, 8, 3), dtype=torch.uint8) + colour // 2
                Image.fromarray(pixels.numpy()).save(root / split / label / f"{i}.png")
    (root / "test" / "cat" / "notes.txt").write_text("x")
    monkeypatch.chdir(tmp_path)
    study = write_one_trial_study(tmp_path, f"imagefolder:{root}", validation_fraction=0.34)
    result = CliRunner().invoke(app, ["search", str(study)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.output.splitlines() if line.startswith("warning: ")]
    assert warnings == [f"warning: skipped 1 file (notes.txt) in {root / 'test' / 'cat'}: "
                        "not .jpg/.jpeg/.png/.bmp/.webp images"], result.output
