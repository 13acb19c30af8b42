"""Interleaved re-timing of the front: every member timed in every round (onnxruntime, eager, a command),
a search stores a re-timing of exactly its front (the trials' own figures untouched), a resumed search
and ``autokd report --retime`` add one each, and the report shows them beside the per-trial figures."""

from __future__ import annotations

import stat
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from autokd.cli import app
from autokd.config import LatencySettings, load_study_config
from autokd.latency import interleaved_rounds, member_timers
from autokd.ranking import kendall_tau
from autokd.models import build_model
from autokd.record import study_retimings, trial_figures
from autokd.report.sections import ms_cell
from autokd.search.study import open_study
from tests.tiny import TINY_SPACE, write_tiny_study

runner = CliRunner()
ONE_EPOCH_SPACE = {**TINY_SPACE, "train": {**TINY_SPACE["train"], "epochs": 1}}
ONE_EPOCH_TEACHER = {"family": "cnn5", "knobs": {"width": 0.25}, "epochs": 1}


def small_models() -> list[torch.nn.Module]:
    """Three real digits students of different sizes (latency does not depend on the weights' values)."""
    torch.manual_seed(0)
    return [build_model("cnn5", num_classes=10, in_channels=1, image_size=8, width=0.125, hidden=16),
            build_model("vgg", num_classes=10, in_channels=1, image_size=8, variant=7, width=0.0625),
            build_model("cnn5", num_classes=10, in_channels=1, image_size=8, width=1.0, hidden=128)]


def logged(timers, calls: list[int]):
    """Each timer, appending its index to ``calls`` when called (the order the rounds visit members in)."""
    return [lambda i=i, t=t: (calls.append(i), t.time())[1] for i, t in enumerate(timers)]


@pytest.mark.parametrize("backend", ["onnxruntime", "torch"])
def test_interleaving_times_every_member_once_in_every_round(backend):
    models = small_models()
    settings = LatencySettings(backend=backend, threads=1, runs=5, min_seconds=0.0, warmup=2)
    rounds, calls = 6, []
    with member_timers(models, [torch.rand(1, 1, 8, 8)] * 3, settings, rounds) as timers:
        assert [t.backend for t in timers] == [backend] * 3
        figures = interleaved_rounds(logged(timers, calls), rounds, seed=0)
    assert [len(f) for f in figures] == [rounds] * 3 and all(ms > 0 for f in figures for ms in f)
    visits = [calls[r * 3:(r + 1) * 3] for r in range(rounds)]
    assert all(sorted(v) == [0, 1, 2] for v in visits)  # each round: every member exactly once
    assert len({tuple(v) for v in visits}) > 1  # in more than one order


def test_interleaving_runs_the_command_once_per_member_and_round(tmp_path):
    log = tmp_path / "printed.txt"
    board = tmp_path / "board.py"
    board.write_text(f"#!{sys.executable}\nimport os, sys\nms = os.path.getsize(sys.argv[1]) / 1000\n"
                     f"open({str(log)!r}, 'a').write(f'{{sys.argv[1]}} {{ms}}\\n')\nprint(ms)\n")
    board.chmod(board.stat().st_mode | stat.S_IXUSR)
    settings = LatencySettings(backend="command", command=f"{board} {{model}}", runs=5)
    with member_timers(small_models(), [torch.rand(1, 1, 8, 8)] * 3, settings, rounds=3) as timers:
        figures = interleaved_rounds([t.time for t in timers], 3)
    lines = [line.split() for line in log.read_text().splitlines()]
    assert len(lines) == 9 and len({path for path, _ in lines}) == 3  # 3 rounds x 3 members, one file each
    printed = {path: float(ms) for path, ms in lines}
    assert sorted(f[0] for f in figures) == sorted(printed.values())  # what the command printed, as printed
    assert all(len(set(f)) == 1 for f in figures)


def test_kendall_tau_by_hand():
    assert kendall_tau([1, 2, 3, 4], [10, 20, 30, 40]) == 1.0
    assert kendall_tau([1, 2, 3, 4], [40, 30, 20, 10]) == -1.0
    assert kendall_tau([1, 2, 3], [10, 30, 20]) == pytest.approx(1 / 3)  # 2 concordant pairs, 1 discordant


def front_numbers(study_path: Path) -> set[str]:
    study = open_study(load_study_config(study_path), create=False)
    return {str(t.number) for t in study.best_trials}


@pytest.mark.slow
def test_search_resume_and_report_retime_store_and_show_each_re_timing(tmp_path):
    settings = dict(teacher=ONE_EPOCH_TEACHER, space=ONE_EPOCH_SPACE, objectives=["accuracy", "latency_ms"],
                    retime_rounds=4)
    study = write_tiny_study(tmp_path, n_trials=2, retime_front=False, **settings)
    first = runner.invoke(app, ["search", str(study)], catch_exceptions=False)
    assert first.exit_code == 0 and "re-timed" not in first.output, first.output
    assert study_retimings(open_study(load_study_config(study), create=False)) == []  # switched off: none

    write_tiny_study(tmp_path, n_trials=3, retime_front=True, **settings)  # the same study, re-timing on
    resumed = runner.invoke(app, ["search", str(study)], catch_exceptions=False)
    assert resumed.exit_code == 0 and "front re-timed together" in resumed.output, resumed.output
    stored = open_study(load_study_config(study), create=False)
    retimings = study_retimings(stored)
    assert [r["trigger"] for r in retimings] == ["search"] and len(stored.trials) == 3
    assert set(retimings[0]["members"]) == front_numbers(study)  # exactly the front after the last trial
    for number, member in retimings[0]["members"].items():
        trial = stored.trials[int(number)]
        assert len(member["rounds_ms"]) == 4 and member["backend"] == "onnxruntime"
        # the trial's own figure, which the sampler saw, is untouched
        assert trial.values[1] == trial_figures(trial)["latency_ms"] == member["per_trial_ms"]
    assert (retimings[0]["backend"], retimings[0]["threads"], retimings[0]["batch"]) == ("onnxruntime", 1, 1)

    report = runner.invoke(app, ["report", str(study), "--retime", "--html"], catch_exceptions=False)
    assert report.exit_code == 0, report.output
    retimings = study_retimings(open_study(load_study_config(study), create=False))
    assert [r["trigger"] for r in retimings] == ["search", "report"]
    assert set(retimings[1]["members"]) == front_numbers(study)
    assert "re-timed ms" in report.output, report.output
    cells = report.output.split("Interleaved re-timings")[-1]
    for number in front_numbers(study):  # each member's row holds its figure in both re-timings, in order
        row = next(line for line in cells.splitlines() if line.strip("│┃ ").startswith(f"{number} "))
        figures = [ms_cell(r["members"][number]["latency_ms"]) for r in retimings]
        assert all(f in row for f in figures) and row.index(figures[0]) < row.rindex(figures[1]), (row, figures)
    html = (tmp_path / "tiny" / "report.html").read_text()
    assert "Interleaved re-timings" in html and "re-timed ms" in html
    assert all(f"{r['date'][5:16].replace('T', ' ')} {r['trigger']} (4 rounds)" in html for r in retimings)

    # a re-timing that cannot finish (the study's latency command fails) is one line, exit 2, nothing stored
    broken = tmp_path / "broken.py"
    broken.write_text(f"#!{sys.executable}\nimport sys\nprint('board unreachable')\nsys.exit(3)\n")
    broken.chmod(broken.stat().st_mode | stat.S_IXUSR)
    write_tiny_study(tmp_path, n_trials=3, latency_backend="command", latency_command=f"{broken} {{model}}", **settings)
    failed = runner.invoke(app, ["report", str(study), "--retime"], catch_exceptions=False)
    lines = [line for line in failed.output.splitlines() if line.strip()]
    assert failed.exit_code == 2 and len(lines) == 1 and "board unreachable" in lines[0], failed.output
    assert lines[0].startswith("error: re-timing the front failed") and "; fix: " in lines[0]
    assert len(study_retimings(open_study(load_study_config(study), create=False))) == 2
