"""End to end through the real CLI: search, resume, report, export, teacher train, bad input."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from typer.testing import CliRunner

from autokd.cli import app
from autokd.record import trial_figures
from tests.tiny import write_tiny_study

runner = CliRunner()
pytestmark = pytest.mark.slow


def invoke(*args: str):
    result = runner.invoke(app, list(args), catch_exceptions=False)
    return result


def snapshot(folder: Path) -> dict[str, object]:
    """Every file's mtime, except SQLite's own files: the last connection to close checkpoints the
    WAL into ``study.db`` (same rows, new mtime) whenever the pool lets go, so for a study database
    the snapshot holds what it stores (trials and study attributes) instead."""
    if not folder.exists():
        return {}
    files = {str(p): p.stat().st_mtime_ns for p in folder.rglob("*") if not p.name.startswith("study.db")}
    for db in folder.rglob("study.db"):
        storage = f"sqlite:///{db}"
        for summary in optuna.get_all_study_summaries(storage, include_best_trial=False):
            study = optuna.load_study(study_name=summary.study_name, storage=storage)
            files[f"{db}:{summary.study_name}"] = (
                study.user_attrs, [(t.number, t.state, t.values, t.params, t.user_attrs) for t in study.trials])
    return files


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    """One tiny study searched to 3 trials, then resumed to a total of 5 on 3 torch threads per trial."""
    folder = tmp_path_factory.mktemp("study")
    study_path = write_tiny_study(folder)
    first = invoke("search", str(study_path))
    assert first.exit_code == 0, first.output
    second = invoke("search", str(study_path), "--n-trials", "5", "--threads-per-trial", "3")
    assert second.exit_code == 0, second.output
    return study_path, folder / "tiny", first.output, second.output


def test_search_stores_every_figure_and_resume_counts_study_total(searched, figure):
    study_path, out, first, second = searched
    assert "Pareto front of 'tiny'" in first
    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{out / 'study.db'}")
    complete = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert len(complete) == 5  # 3 from the first call, 2 more: the budget is the study's total
    for trial in complete:
        attrs = trial_figures(trial)
        for key in ("accuracy", "validation_accuracy", "test_accuracy", "per_class_validation_accuracy",
                    "per_class_test_accuracy", "params", "size_bytes", "macs", "latency_ms", "config",
                    "architecture", "cpu_model", "torch_version", "weights_path", "weights_artifact"):
            assert key in attrs, key
        assert trial.values == [attrs["accuracy"], attrs["params"]]
        assert len(attrs["per_class_test_accuracy"]) == 10 and attrs["macs"] > 0 and attrs["size_bytes"] > 0
        assert attrs["validation_accuracy"] == attrs["accuracy"] == trial.values[0]
        assert Path(attrs["weights_path"]).exists()
    assert [trial_figures(t)["train_threads"] for t in complete[3:]] == [3, 3]  # --threads-per-trial
    teacher = study.user_attrs["teacher"]
    assert figure("teacher accuracy", teacher["accuracy"]) > 0.5 and teacher["params"] > 0
    assert (out / "teacher.pt").exists() and (out / "study.yaml").exists()
    # the second call reused the stored teacher instead of training again
    assert "teacher cnn5" in second and study.user_attrs["objectives"] == ["accuracy", "params"]


def test_report_prints_front_and_writes_plot(searched):
    study_path, out, *_ = searched
    result = invoke("report", str(study_path))
    assert result.exit_code == 0, result.output
    assert "Pareto front" in result.output and "Per-class test accuracy" in result.output
    assert "val acc" in result.output and "test acc" in result.output
    assert (out / "pareto.png").stat().st_size > 10_000
    by_folder = invoke("report", str(out))
    assert by_folder.exit_code == 0


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_export_agrees_with_pytorch(searched, fmt, tmp_path, figure):
    study_path, out, *_ = searched
    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{out / 'study.db'}")
    number = study.best_trials[0].number
    target = tmp_path / f"model.{fmt}"
    result = invoke("export", str(study_path), "--trial", str(number), "--format", fmt, "--out", str(target))
    assert result.exit_code == 0, result.output
    assert target.stat().st_size > 0
    agree = float(result.output.split("agree with PyTorch on")[1].split("%")[0])
    assert figure("agreement %", agree) >= 99.0


def test_changed_objectives_are_refused_on_resume(searched, tmp_path):
    study_path, out, *_ = searched
    changed = write_tiny_study(tmp_path, objectives=["accuracy", "latency_ms"], output=str(out))
    before = snapshot(out)
    result = invoke("search", str(changed))
    assert result.exit_code == 2
    assert "objectives" in result.output and "new name" in result.output
    assert snapshot(out) == before


@pytest.mark.parametrize("case", ["malformed", "unknown_family", "bad_teacher_knob", "unknown_objective", "missing_dataset",
                                  "missing_checkpoint", "corrupt_checkpoint", "bad_storage", "unknown_dataset",
                                  "corrupt_image", "empty_dataset"])
def test_bad_input_is_one_line_exit_2_and_leaves_files(tmp_path, case):
    out = tmp_path / "out"
    kwargs: dict = {"output": str(out)}
    if case == "unknown_family":
        kwargs["teacher"] = {"family": "resnet999"}
    elif case == "bad_teacher_knob":
        kwargs["teacher"] = {"family": "cnn5", "knobs": {"width": 0}}
    elif case == "unknown_objective":
        kwargs["objectives"] = ["accuracy", "flops"]
    elif case == "missing_dataset":
        kwargs["dataset"] = f"imagefolder:{tmp_path / 'nowhere'}"
    elif case in ("corrupt_image", "empty_dataset"):
        for split in ("train", "test"):
            for cls in ("a", "b"):
                (tmp_path / "imgs" / split / cls).mkdir(parents=True)
        if case == "corrupt_image":
            (tmp_path / "imgs" / "train" / "a" / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
        kwargs["dataset"] = f"imagefolder:{tmp_path / 'imgs'}"
    elif case == "unknown_dataset":
        kwargs["dataset"] = "imagenet"
    elif case == "missing_checkpoint":
        kwargs["teacher"] = {"checkpoint": str(tmp_path / "missing.pt")}
    elif case == "corrupt_checkpoint":
        (tmp_path / "corrupt.pt").write_bytes(b"\x00not a checkpoint" * 10)
        kwargs["teacher"] = {"checkpoint": str(tmp_path / "corrupt.pt")}
    elif case == "bad_storage":
        kwargs["storage"] = "postgresql+psycopg://autokd:s3cret@127.0.0.1:1/nodb"
    study = write_tiny_study(tmp_path, **kwargs)
    if case == "malformed":
        study.write_text(study.read_text() + "\n  - : [\n")
    before = snapshot(tmp_path)
    result = invoke("search", str(study))
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "fix: " in lines[0], result.output
    assert "Traceback" not in result.output and "s3cret" not in result.output
    assert snapshot(tmp_path) == before and not out.exists()


def test_teacher_train_writes_a_loadable_checkpoint(tmp_path):
    target = tmp_path / "t.pt"
    result = invoke("teacher", "train", "--out", str(target), "--family", "cnn5", "--knob", "width=0.25",
                    "--epochs", "2")
    assert result.exit_code == 0, result.output
    study = write_tiny_study(tmp_path, teacher={"checkpoint": str(target)}, n_trials=1)
    assert invoke("search", str(study)).exit_code == 0
    bad = invoke("teacher", "train", "--out", str(tmp_path / "x.pt"), "--family", "nope")
    assert bad.exit_code == 2 and "unknown model family" in bad.output


