"""Latency backends end to end: onnxruntime figures match a separate timing of the export, a command's
number is recorded as printed, a failing command fails one trial, constraints reject before training,
bad latency settings are one line and exit 2."""

from __future__ import annotations

import os
import stat
import sys
import tempfile
from pathlib import Path

import optuna
import pytest
import torch
from optuna.trial import TrialState
from typer.testing import CliRunner

from autokd.cli import app
from autokd.config import LatencySettings, load_study_config
from autokd.export import load_trial_model
from autokd.latency import command_latency, export_onnx, onnx_latency_stats
from autokd.record import latency_header, study_retimings, study_teacher, trial_figures
from autokd.search.study import open_study, trial_dir
from tests.tiny import TINY_SPACE, write_tiny_study

runner = CliRunner()
pytestmark = pytest.mark.slow

#: One-epoch students, fixed KD settings: the quickest real trials.
ONE_EPOCH_SPACE = {**TINY_SPACE, "train": {**TINY_SPACE["train"], "epochs": 1}}
ONE_EPOCH_TEACHER = {"family": "cnn5", "knobs": {"width": 0.25}, "epochs": 1}


def invoke(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


def script(folder: Path, name: str, body: str) -> Path:
    """An executable python script under ``folder``."""
    path = folder / name
    path.write_text(f"#!{sys.executable}\nimport os, sys, time\n{body}\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def trials_of(study_path: Path) -> list[optuna.trial.FrozenTrial]:
    return open_study(load_study_config(study_path), create=False).get_trials(deepcopy=False)


def test_onnxruntime_figures_match_a_separate_timing_of_the_export(tmp_path):
    study = write_tiny_study(tmp_path, n_trials=2, teacher=ONE_EPOCH_TEACHER, space=ONE_EPOCH_SPACE,
                             objectives=["accuracy", "latency_ms"], latency_backend="onnxruntime",
                             latency_threads=1, latency_runs=30, latency_min_seconds=0.3)
    result = invoke("search", str(study))
    assert result.exit_code == 0, result.output
    done = [t for t in trials_of(study) if t.state == TrialState.COMPLETE]
    assert len(done) == 2
    settings = LatencySettings(backend="onnxruntime", threads=1, runs=30, min_seconds=0.3)
    for t in done:
        figures = trial_figures(t)
        assert (figures["latency_backend"], figures["latency_threads"], figures["latency_batch"]) == ("onnxruntime", 1, 1)
        model, _ = load_trial_model(Path(figures["weights_path"]))
        example = torch.rand(1, 1, 8, 8)
        with tempfile.TemporaryDirectory() as folder:
            path = export_onnx(model, Path(folder) / "m.onnx", example)
            again = min(onnx_latency_stats(path, example, settings).median_ms for _ in range(3))
        # The host is shared and loaded: medians of one model drift 2x over seconds; a torch eager
        # figure of these students is 5-20x the onnxruntime one, so a 4x band still tells them apart.
        assert again / 4 <= figures["latency_ms"] <= again * 4, (figures["latency_ms"], again)
    assert latency_header([trial_figures(t) for t in done]) == "ORT ms (1 thr, b1)"
    report = invoke("report", str(study))
    assert report.exit_code == 0 and "ORT ms (1 thr, b1)" in report.output, report.output


def test_command_backend_records_what_the_command_prints(tmp_path):
    log = tmp_path / "printed.txt"
    board = script(tmp_path, "board.py", f"ms = os.path.getsize(sys.argv[1]) / 1000 + 0.125\n"
                                         f"open({str(log)!r}, 'a').write(f'{{ms}}\\n')\nprint('copying...')\nprint(ms)")
    study = write_tiny_study(tmp_path, n_trials=2, teacher=ONE_EPOCH_TEACHER, space=ONE_EPOCH_SPACE,
                             objectives=["accuracy", "latency_ms"], latency_backend="command",
                             latency_command=f"{board} {{model}}", retime_rounds=3, retime_front=True)
    result = invoke("search", str(study))
    assert result.exit_code == 0, result.output
    done = sorted((t for t in trials_of(study) if t.state == TrialState.COMPLETE), key=lambda t: t.number)
    printed = [float(line) for line in log.read_text().split()]  # the teacher's, each trial's, then the re-timing's
    assert [trial_figures(t)["latency_ms"] for t in done] == printed[1:3]
    [retiming] = study_retimings(open_study(load_study_config(study), create=False))  # through the command too
    assert len(printed) == 3 + 3 * len(retiming["members"])
    assert sorted(ms for m in retiming["members"].values() for ms in m["rounds_ms"]) == pytest.approx(sorted(printed[3:]))
    assert study_teacher(open_study(load_study_config(study), create=False))["latency_ms"] == printed[0]
    assert all(trial_figures(t)["latency_backend"] == "command" for t in done)
    assert (tmp_path / "tiny" / "latency_command.lock").exists()  # one at a time across the study


def test_a_failing_command_fails_one_trial_and_the_study_goes_on(tmp_path):
    count = tmp_path / "count"  # call 0 times the teacher, call 1 the first trial: that one fails
    flaky = script(tmp_path, "flaky.py", f"n = int(open({str(count)!r}).read()) if os.path.exists({str(count)!r}) else 0\n"
                                         f"open({str(count)!r}, 'w').write(str(n + 1))\n"
                                         "if n == 1:\n    print('connecting to board'); print('board unreachable', file=sys.stderr); sys.exit(3)\n"
                                         "print(1.5)")
    study = write_tiny_study(tmp_path, n_trials=2, teacher=ONE_EPOCH_TEACHER, space=ONE_EPOCH_SPACE,
                             latency_backend="command", latency_command=f"{flaky} {{model}}")
    result = invoke("search", str(study))
    assert result.exit_code == 0, result.output
    trials = trials_of(study)
    failed = [t for t in trials if t.state == TrialState.FAIL]
    assert len(failed) == 1 and sum(t.state == TrialState.COMPLETE for t in trials) == 2
    reason = failed[0].user_attrs["failed_because"]
    assert "\n" not in reason and "board unreachable" in reason and "exited with 3" in reason, reason


@pytest.mark.parametrize("prints, error", [("print('not a number')", "'not a number'"),
                                           ("time.sleep(5)", "timed out after 0.5 s")])
def test_command_output_is_checked(tmp_path, prints, error):
    command = script(tmp_path, "bad.py", prints)
    settings = LatencySettings(backend="command", command=f"{command} {{model}}", command_timeout=0.5)
    with pytest.raises(RuntimeError, match=error) as caught:
        command_latency(tmp_path / "m.onnx", settings)
    assert "\n" not in str(caught.value)


def test_a_constrained_study_rejects_an_over_budget_student_before_training(tmp_path):
    # cnn5 at width 0.25 has 6,730 parameters with hidden=16 and 11,770 with hidden=128.
    space = {"students": {"cnn5": {"width": 0.25, "hidden": {"int": [16, 128]}}},
             "distill": {"loss": "kd", "alpha": 0.9, "temperature": 4.0},
             "train": {"epochs": 1, "batch_size": 64, "lr": 0.05}}
    study = write_tiny_study(tmp_path, n_trials=1, teacher=ONE_EPOCH_TEACHER, space=space,
                             constraints={"max_params": 7000}, latency_backend="torch")
    (tmp_path / "tiny").mkdir()
    stored = open_study(load_study_config(study))
    stored.enqueue_trial({"family": "cnn5", "cnn5.hidden": 128})
    stored.enqueue_trial({"family": "cnn5", "cnn5.hidden": 16})
    result = invoke("search", str(study))
    assert result.exit_code == 0, result.output
    trials = sorted(trials_of(study), key=lambda t: t.number)
    rejected, trained = trials[0], trials[1]
    assert rejected.state == TrialState.FAIL and trained.state == TrialState.COMPLETE
    assert rejected.user_attrs["rejected_because"] == {"constraint": "max_params", "value": 11770.0, "bound": 7000.0}
    assert "max_params" in rejected.user_attrs["failed_because"]
    assert not trial_dir(load_study_config(study), rejected.number).exists()  # no epoch ran: its folder was never made
    assert not rejected.intermediate_values and "history" not in trial_figures(rejected)
    assert trial_figures(trained)["params"] <= 7000


@pytest.mark.parametrize("case", ["unknown_backend", "command_without_template", "template_without_model",
                                  "command_not_found"])
@pytest.mark.parametrize("command", ["search", "check"])
def test_bad_latency_settings_are_one_line_exit_2(tmp_path, case, command):
    out = tmp_path / "out"
    settings = {
        "unknown_backend": {"latency_backend": "tflite"},
        "command_without_template": {"latency_backend": "command"},
        "template_without_model": {"latency_backend": "command", "latency_command": "echo 1.0"},
        "command_not_found": {"latency_backend": "command", "latency_command": "no-such-board-bench {model}"},
    }[case]
    study = write_tiny_study(tmp_path, output=str(out), **settings)
    before = {str(p) for p in tmp_path.rglob("*")}
    result = invoke(command, str(study))
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "fix: " in lines[0], result.output
    assert "latency" in lines[0]
    assert {str(p) for p in tmp_path.rglob("*")} == before and not out.exists()


def test_unknown_backend_flag_is_one_line_exit_2(tmp_path):
    study = write_tiny_study(tmp_path, output=str(tmp_path / "out"))
    result = invoke("search", str(study), "--latency-backend", "tflite")
    assert result.exit_code == 2 and "--latency-backend" in result.output, result.output
    assert not (tmp_path / "out").exists()


def test_a_study_timed_another_way_is_not_resumed_with_the_new_default(tmp_path):
    study = write_tiny_study(tmp_path, n_trials=1, teacher=ONE_EPOCH_TEACHER, space=ONE_EPOCH_SPACE,
                             objectives=["accuracy", "latency_ms"], latency_backend="torch")
    assert invoke("search", str(study)).exit_code == 0
    resumed = invoke("search", str(study), "--n-trials", "2", "--latency-backend", "onnxruntime")
    assert resumed.exit_code == 2 and "eager ms (1 thr, b1)" in resumed.output, resumed.output
    assert len([line for line in resumed.output.strip().splitlines() if line.strip()]) == 1
    report = invoke("report", str(study))  # still readable, its column saying how it was timed
    assert report.exit_code == 0 and "eager ms (1 thr, b1)" in report.output, report.output
