"""``autokd predict`` on real image files: a tiny real CIFAR-subset search, exported, run on its test files.

The test split of an image-folder study is the folder's own ``test/<class>/`` files, so predicting
from those files must reproduce the trial's recorded ``test_accuracy``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import optuna
import pytest
import torch

from autokd.export import read_metadata, sidecar_path
from autokd.predict import Sample, collect_samples, match_channels, score
from tests.tiny import TINY_SPACE, write_tiny_study

CLI = [sys.executable, "-m", "autokd"]


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(CLI + list(args), capture_output=True, text=True, cwd=cwd)


@pytest.fixture(scope="module")
def exported(cifar_subset_dir, tmp_path_factory):
    """A one-trial study on the CIFAR subset, its trial exported as ONNX and TorchScript."""
    folder = tmp_path_factory.mktemp("predict")
    # batch 32: 180 training images make 5 steps an epoch (OneCycleLR fails on exactly 4 steps in all)
    space = {**TINY_SPACE, "train": {**TINY_SPACE["train"], "batch_size": 32}}
    study = write_tiny_study(folder, name="predict", space=space, dataset=f"imagefolder:{cifar_subset_dir}", n_trials=1,
                             teacher={"family": "cnn5", "knobs": {"width": 0.25}, "epochs": 1, "lr": 0.05},
                             latency_runs=5, latency_min_seconds=0)
    search = run_cli("search", str(study), cwd=folder)
    assert search.returncode == 0, search.stderr[-2000:]
    storage = f"sqlite:///{folder / 'predict' / 'study.db'}"
    optuna_study = optuna.load_study(study_name="predict", storage=storage)
    trial = next(t for t in optuna_study.trials if t.state == optuna.trial.TrialState.COMPLETE)
    files = {"onnx": folder / "model.onnx", "torchscript": folder / "model.ts"}
    for fmt, out in files.items():
        export = run_cli("export", str(study), "--trial", str(trial.number), "--format", fmt, "--out", str(out),
                         cwd=folder)
        assert export.returncode == 0, export.stderr[-2000:]
        assert "metadata" in export.stdout
    return {"folder": folder, "study": study, "trial": trial, "classes": optuna_study.user_attrs["classes"],
            "files": files, "data": cifar_subset_dir}


def test_metadata_round_trip(exported):
    trial = exported["trial"]
    onnx_meta = read_metadata(exported["files"]["onnx"])
    ts = exported["files"]["torchscript"]
    assert json.loads(sidecar_path(ts).read_text()) == read_metadata(ts) == onnx_meta
    assert onnx_meta["classes"] == exported["classes"] == sorted(p.name for p in (exported["data"] / "test").iterdir())
    assert onnx_meta["input_shape"] == ["batch", 3, 32, 32] and onnx_meta["layout"] == "NCHW"
    assert onnx_meta["color_mode"] == "RGB" and onnx_meta["value_range"] == [0.0, 1.0]
    assert len(onnx_meta["mean"]) == len(onnx_meta["std"]) == 3
    assert onnx_meta["study"] == "predict" and onnx_meta["trial"] == trial.number
    assert onnx_meta["test_accuracy"] == trial.user_attrs["test_accuracy"]
    assert onnx_meta["validation_accuracy"] == trial.user_attrs["validation_accuracy"]
    import autokd

    assert onnx_meta["autokd_version"] == autokd.__version__
    # without the JSON file, a TorchScript export still carries its metadata inside
    sidecar_path(ts).rename(ts.with_suffix(".moved"))
    try:
        assert read_metadata(ts) == onnx_meta
    finally:
        ts.with_suffix(".moved").rename(sidecar_path(ts))


@pytest.mark.parametrize("how", ["onnx", "torchscript", "study"])
def test_predict_on_the_test_files_reproduces_the_recorded_test_accuracy(exported, how):
    trial = exported["trial"]
    test_dir = exported["data"] / "test"
    if how == "study":
        args = ["predict", "--study", str(exported["study"]), "--trial", str(trial.number), str(test_dir)]
    else:
        args = ["predict", str(exported["files"][how]), str(test_dir)]
    run = run_cli(*args, "--format", "json", cwd=exported["folder"])
    assert run.returncode == 0, run.stderr[-2000:]
    doc = json.loads(run.stdout)
    n = len(doc["predictions"])
    assert n == doc["labelled"] == 100
    recorded = trial.user_attrs["test_accuracy"]
    assert round(doc["accuracy"] * n) == round(recorded * n)  # the same images, decoded the same way
    assert sum(c["images"] for c in doc["per_class"].values()) == n
    assert set(doc["per_class"]) == set(exported["classes"])


def test_table_and_csv_name_classes_and_confidences(exported):
    test_dir = exported["data"] / "test"
    one = sorted((test_dir / "cat").iterdir())[0]
    table = run_cli("predict", str(exported["files"]["onnx"]), str(test_dir), cwd=exported["folder"])
    assert table.returncode == 0, table.stderr[-2000:]
    assert "accuracy" in table.stdout and "airplane" in table.stdout and "%" in table.stdout
    csv = run_cli("predict", str(exported["files"]["onnx"]), str(one), "--format", "csv", cwd=exported["folder"])
    assert csv.returncode == 0, csv.stderr[-2000:]
    header, row = csv.stdout.strip().splitlines()
    assert header == "path,prediction,confidence,label,correct"
    path, prediction, confidence, label, correct = row.split(",")
    assert path == str(one) and prediction in exported["classes"] and 0 < float(confidence) <= 1
    assert label == correct == ""  # a single file carries no label


@pytest.mark.parametrize("case", ["missing", "corrupt", "no-metadata", "mixed-folder"])
def test_bad_input_is_one_line(exported, tmp_path, case):
    model = str(exported["files"]["onnx"])
    if case == "missing":
        args = [model, str(tmp_path / "nope.jpg")]
    elif case == "corrupt":
        bad = tmp_path / "broken.jpg"
        bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
        args = [model, str(bad)]
    elif case == "no-metadata":
        import onnx

        proto = onnx.load(model)
        del proto.metadata_props[:]
        bare = tmp_path / "bare.onnx"
        onnx.save(proto, str(bare))
        args = [str(bare), str(exported["data"] / "test")]
    else:
        (tmp_path / "cat").mkdir()
        (tmp_path / "holiday").mkdir()
        for folder in ("cat", "holiday"):
            src = sorted((exported["data"] / "test" / "cat").iterdir())[0]
            (tmp_path / folder / src.name).write_bytes(src.read_bytes())
        args = [model, str(tmp_path)]
    run = run_cli("predict", *args, cwd=exported["folder"])
    assert run.returncode == 2, (run.stdout, run.stderr)
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "; fix: " in lines[0], run.stderr


def test_colour_to_gray_matches_pil_luma():
    from PIL import Image

    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, size=(5, 7, 3), dtype=np.uint8)  # (H, W, 3)
    expected = np.asarray(Image.fromarray(rgb).convert("L"))
    got = match_channels(torch.from_numpy(rgb).permute(2, 0, 1)[None], 1)[0, 0].numpy()
    assert np.array_equal(got, expected)
    assert match_channels(torch.zeros(2, 1, 4, 4, dtype=torch.uint8), 3).shape == (2, 3, 4, 4)


def test_score_counts_per_class():
    samples = [Sample(Path("a"), "cat"), Sample(Path("b"), "dog"), Sample(Path("c"), "dog"), Sample(Path("d"))]
    logits = np.array([[3.0, 0.0], [3.0, 0.0], [0.0, 3.0], [0.0, 1.0]])
    result = score(logits, samples, ["cat", "dog"])
    assert result.accuracy == pytest.approx(2 / 3) and result.labelled == 3
    assert result.per_class == {"cat": (1, 1), "dog": (1, 2)}
    assert result.rows[3].prediction == "dog" and result.rows[3].correct is None
    assert result.rows[0].confidence == pytest.approx(np.exp(3) / (np.exp(3) + 1))


def test_collect_samples_labels_class_folders(tmp_path):
    for cls in ("cat", "dog"):
        (tmp_path / "set" / cls).mkdir(parents=True)
        (tmp_path / "set" / cls / "x.png").write_bytes(b"")
    (tmp_path / "loose").mkdir()
    (tmp_path / "loose" / "y.jpg").write_bytes(b"")
    samples = collect_samples([tmp_path / "set", tmp_path / "loose"], ["cat", "dog", "bird"])
    assert [(s.path.name, s.label) for s in samples] == [("x.png", "cat"), ("x.png", "dog"), ("y.jpg", None)]


def test_collect_samples_warns_once_per_folder_about_files_it_skips(tmp_path):
    for cls in ("cat", "dog"):
        (tmp_path / "set" / cls).mkdir(parents=True)
        (tmp_path / "set" / cls / "x.png").write_bytes(b"")
    (tmp_path / "set" / "dog" / "notes.txt").write_text("x")
    (tmp_path / "set" / "cat" / ".DS_Store").write_text("x")  # hidden: silent
    (tmp_path / "loose" / "sub").mkdir(parents=True)
    (tmp_path / "loose" / "y.jpg").write_bytes(b"")
    for name in ("a.pdf", "sub/b.pdf"):
        (tmp_path / "loose" / name).write_text("x")
    warnings: list[str] = []
    samples = collect_samples([tmp_path / "set", tmp_path / "loose"], ["cat", "dog"], warnings)
    assert [s.path.name for s in samples] == ["x.png", "x.png", "y.jpg"]
    assert warnings == [
        f"skipped 1 file (notes.txt) in {tmp_path / 'set' / 'dog'}: not .jpg/.jpeg/.png/.bmp/.webp images",
        f"skipped 2 files (e.g. a.pdf) in {tmp_path / 'loose'}: not .jpg/.jpeg/.png/.bmp/.webp images",
    ]
