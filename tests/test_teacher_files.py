"""A teacher you bring: TorchScript and ONNX files, a factory, other classes, reordered classes, bad files.

The files are written here from a tiny digits teacher (tests/conftest.py ``tiny_teacher``) with
autokd's own export code, so nothing is downloaded.
"""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
import torch
from typer.testing import CliRunner

from autokd.cli import app
from autokd.config import load_study_config
from autokd.context import augment_policy, load_study_data
from autokd.distill import ClassOrder
from autokd.errors import AutokdError
from autokd.export import export_metadata, export_model, exported_predictions, load_trial_model
from autokd.measure import accuracy, count_macs
from autokd.models import build_model
from autokd.models.files import load_model_file, replace_head
from autokd.teacher import build_teacher, validate_teacher
from autokd.train import predict
from tests.tiny import write_tiny_study

CPU = torch.device("cpu")
SPACE = {"students": {"cnn5": {"width": 0.125, "hidden": 16}},
         "distill": {"loss": "kd", "alpha": 0.9, "temperature": 4.0},
         "train": {"epochs": 1, "batch_size": 64, "lr": 0.05}}
DIGITS = [str(i) for i in range(10)]


def invoke(*args: str):
    return CliRunner().invoke(app, list(args), catch_exceptions=False)


def tree(folder: Path) -> set[str]:
    return {str(p) for p in folder.rglob("*")}


@pytest.fixture(scope="module")
def files(tiny_teacher, tmp_path_factory) -> dict[str, Path]:
    """The tiny teacher exported as TorchScript (with model.ts.json) and ONNX (metadata_props)."""
    folder = tmp_path_factory.mktemp("teacher-files")
    model, payload = load_trial_model(tiny_teacher)
    example = torch.zeros(2, 1, 8, 8)
    meta = export_metadata(payload, classes=DIGITS, study="tiny", trial=None)
    return {"model": model,
            "torchscript": export_model(model, "torchscript", folder / "teacher.ts", example, meta),
            "onnx": export_model(model, "onnx", folder / "teacher.onnx", example, meta)}


def _study(folder: Path, **teacher) -> Path:
    return write_tiny_study(folder, space=SPACE, teacher={"epochs": 1, "batch_size": 64, **teacher}, n_trials=1)


@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_a_file_teacher_runs_a_study_and_records_what_the_file_gives(files, tmp_path, fmt):
    study_path = _study(tmp_path, checkpoint=str(files[fmt]))
    checked = invoke("check", str(study_path))
    assert checked.exit_code == 0 and ("TorchScript" if fmt == "torchscript" else "ONNX") in checked.output
    assert "normalised inside; 10 classes (named in the file)" in checked.output, checked.output
    result = invoke("search", str(study_path))
    assert result.exit_code == 0, result.output
    cfg = load_study_config(study_path)
    study = optuna.load_study(study_name="tiny", storage=cfg.storage_url)
    assert len(study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))) == 1
    data = load_study_data(cfg, show_progress=False)
    by_file = accuracy(torch.nn.functional.one_hot(exported_predictions(files[fmt], fmt, data.test_images), 10).float(),
                       data.test_labels)
    assert study.user_attrs["teacher"]["test_accuracy"] == by_file
    params = sum(p.numel() for p in files["model"].parameters())  # ONNX counts its initializers: statistics too
    assert params <= study.user_attrs["teacher"]["params"] <= 1.02 * params
    assert any((cfg.output_dir / "teacher_cache").iterdir())  # students read the logit cache, not the file


def test_a_factory_teacher_runs_the_users_code(tiny_teacher, tmp_path):
    (tmp_path / "myteacher.py").write_text(
        "from autokd.checkpoint import load_checkpoint, network_from_checkpoint\n\n"
        "def build(path):\n    return network_from_checkpoint(load_checkpoint(path))\n\n"
        "def nothing(path):\n    return 42\n")
    study_path = _study(tmp_path, factory="myteacher:build", knobs={"path": str(tiny_teacher)})
    cfg = load_study_config(study_path)
    data = load_study_data(cfg, show_progress=False)
    teacher, summary = build_teacher(cfg, data, augment_policy(cfg, data), CPU)
    reference = load_trial_model(tiny_teacher)[0]  # the same network, normalised with the data's statistics
    assert summary["test_accuracy"] == accuracy(predict(reference, data.test_images), data.test_labels)
    assert summary["members"] == ["factory myteacher:build"]
    bad = _study(tmp_path, factory="myteacher:nothing", knobs={"path": str(tiny_teacher)})
    with pytest.raises(AutokdError, match="returned int, not a torch.nn.Module"):
        validate_teacher(load_study_config(bad))


def test_a_teacher_of_other_classes_is_fine_tuned_once_with_a_new_head(tiny_teacher, tmp_path, figure):
    """A network trained elsewhere with 12 classes (here: the tiny teacher's trunk under a 12-class head),
    traced in eval mode as a training repo would, without metadata."""
    net = load_trial_model(tiny_teacher)[0][-1]  # the bare network: the data's statistics go in front
    replace_head(net, 12, seed=1)
    path = tmp_path / "twelve.ts"
    torch.jit.save(torch.jit.trace(net.eval(), torch.zeros(2, 1, 8, 8)), str(path))
    cfg = load_study_config(_study(tmp_path, checkpoint=str(path), epochs=2, lr=0.02))
    assert "TorchScript " in invoke("check", str(tmp_path / "tiny.yaml")).output
    data = load_study_data(cfg, show_progress=False)
    teacher, summary = build_teacher(cfg, data, augment_policy(cfg, data), CPU)
    cached = cfg.output_dir / "teacher-finetuned.pt"
    assert predict(teacher, data.test_images[:4]).shape == (4, 10)
    assert summary["members"] == ["TorchScript twelve.ts fine-tuned with a new head"]
    assert figure("fine-tuned teacher accuracy", summary["test_accuracy"]) > 0.4, summary  # 0.66 here; chance 0.1
    stamp = cached.stat().st_mtime_ns
    again, second = build_teacher(cfg, data, augment_policy(cfg, data), CPU)  # the cached head, not trained again
    assert cached.stat().st_mtime_ns == stamp and second["test_accuracy"] == summary["test_accuracy"]


def test_reordered_classes_are_refused_without_names_and_mapped_with_them(files, tmp_path):
    order = [3, 7, 0, 9, 1, 5, 2, 8, 4, 6]
    shuffled = ClassOrder(files["model"], order).eval()  # the file's output i is digit order[i]
    path = tmp_path / "shuffled.ts"
    torch.jit.save(torch.jit.trace(shuffled, torch.zeros(2, 1, 8, 8)), str(path))
    study_path = _study(tmp_path, checkpoint=str(path), mean=[0.0], std=[1.0])
    before = tree(tmp_path)
    refused = invoke("search", str(study_path))
    assert refused.exit_code == 2 and "in another order" in refused.output and "teacher.classes" in refused.output
    assert tree(tmp_path) == before
    cfg = load_study_config(_study(tmp_path, checkpoint=str(path), mean=[0.0], std=[1.0],
                                   classes=[str(d) for d in order]))
    data = load_study_data(cfg, show_progress=False)
    teacher, summary = build_teacher(cfg, data, augment_policy(cfg, data), CPU)
    assert summary["test_accuracy"] == accuracy(predict(files["model"], data.test_images), data.test_labels)


def _onnx(folder: Path, name: str, **build) -> Path:
    net = build_model("cnn5", in_channels=1, width=0.125, **build).eval()
    side = build["image_size"]
    path = folder / name
    torch.onnx.export(net, (torch.zeros(1, 1, side, side),), str(path), input_names=["x"], output_names=["y"],
                      dynamo=False, opset_version=17)
    return path


@pytest.mark.parametrize("case,expected", [
    ("not-a-model", "is neither an autokd checkpoint, a TorchScript archive nor an ONNX model"),
    ("onnx-classes", "ONNX teacher"),
    ("onnx-size", "takes 16 px images, teacher.image_size is 8"),
    ("factory-import", "cannot import nowhere_module"),
    ("factory-not-a-module", "returned str, not a torch.nn.Module"),
])
def test_a_bad_teacher_is_one_line_exit_2_and_nothing_written(tmp_path, case, expected):
    teacher: dict = {}
    if case == "not-a-model":
        (tmp_path / "teacher.bin").write_bytes(b"\x08\x01 neither zip nor protobuf graph" * 4)
        teacher = {"checkpoint": str(tmp_path / "teacher.bin")}
    elif case == "onnx-classes":
        teacher = {"checkpoint": str(_onnx(tmp_path, "twelve.onnx", num_classes=12, image_size=8))}
        expected = "has 12 classes, the data has 10, and an ONNX file cannot be fine-tuned"
    elif case == "onnx-size":
        teacher = {"checkpoint": str(_onnx(tmp_path, "big.onnx", num_classes=10, image_size=16)), "image_size": 8}
    elif case == "factory-import":
        teacher = {"factory": "nowhere_module:build"}
    else:
        (tmp_path / "stringy.py").write_text("def build():\n    return 'a model'\n")
        teacher = {"factory": "stringy:build"}
    study_path = _study(tmp_path, **teacher)
    before = tree(tmp_path)
    result = invoke("search", str(study_path))
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2, result.output
    assert len(lines) == 1 and lines[0].startswith("error: ") and "fix: " in lines[0], result.output
    assert expected in lines[0], lines[0]
    assert tree(tmp_path) - before <= {str(tmp_path / "__pycache__")} | {
        str(p) for p in (tmp_path / "__pycache__").glob("*")}  # only Python's own bytecode of the user's module


@pytest.mark.parametrize("fmt,losses", [("torchscript", ["kd", "hint"]), ("onnx", "fitnets")])
def test_hint_losses_from_a_teacher_file_are_refused_before_anything_runs(files, tmp_path, fmt, losses):
    """A file has no hint layer to regress: one line at `check` and `search`, the folder as it was."""
    loss = {"choices": losses} if isinstance(losses, list) else losses
    space = {**SPACE, "distill": {"loss": loss, "alpha": 0.9, "temperature": 4.0}}
    study_path = write_tiny_study(tmp_path, space=space, n_trials=1,
                                  teacher={"epochs": 1, "batch_size": 64, "checkpoint": str(files[fmt])})
    before = tree(tmp_path)
    for command in ("check", "search"):
        result = invoke(command, str(study_path))
        lines = [line for line in result.output.splitlines() if line.strip()]
        assert result.exit_code == 2 and len(lines) == 1, result.output
        assert "needs the teacher's hint layer" in lines[0] and "fix: drop hint/fitnets" in lines[0], lines[0]
    assert tree(tmp_path) == before


def test_an_onnx_teacher_counts_the_macs_of_its_graph(files):
    """onnxruntime runs outside torch's flop counter: the graph's Conv/Gemm/MatMul nodes are counted."""
    onnx_module = load_model_file(files["onnx"]).module
    example = torch.zeros(1, 1, 8, 8)
    assert count_macs(onnx_module, example) == count_macs(files["model"], example) > 0
