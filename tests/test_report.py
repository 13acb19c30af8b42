"""Reports: plots that follow the study, the self-contained HTML report, and the CLI's face."""

from __future__ import annotations

import re

import optuna
import pytest
from typer.testing import CliRunner

from autokd.cli import app
from autokd.measure import cpu_model
from autokd.readout import format_objective
from autokd.report import best_so_far, cost_objectives, robust_limits, rounded, student_kind
from tests.tiny import write_tiny_study

runner = CliRunner()


def test_robust_limits_ignore_one_outlier():
    values = [4e3, 5e3, 6e3, 9e3, 1e4, 1.2e4, 4e4, 5e8]
    lo, hi = robust_limits(values, log=True)
    assert lo < 4e3 and 4e4 < hi < 5e8  # the 5e8 outlier is clipped to the edge, not given the axis
    lo, hi = robust_limits([97.0, 97.5, 98.0, 98.2, 98.5, 98.8, 99.0, 10.0], log=False)
    assert 10.0 < lo < 97.0 and hi > 99.0
    assert robust_limits([1.0, 2.0, 3.0, 40.0], log=False)[1] > 40.0  # too few points to call one an outlier


def test_objective_figures_read_as_people_read_them():
    assert format_objective("accuracy", 0.97222) == "97.22%"
    assert format_objective("size_bytes", 48_100) == "48.10kB" and format_objective("latency_ms", 0.41234) == "0.412 ms"
    study = optuna.create_study(directions=["maximize", "minimize"])
    study.set_user_attr("objectives", ["accuracy", "params"])
    for acc, params in ((0.9, 5000), (0.95, 9000), (0.8, 3000)):
        trial = study.ask()
        study.tell(trial, [acc, params])
    assert best_so_far(study.trials, ["accuracy", "params"], study.directions) == "best: accuracy 95.00%, params 3.00k"
    assert cost_objectives(study) == ["params"]
    study.set_user_attr("objectives", ["accuracy"])
    assert cost_objectives(study) == ["params"]  # accuracy alone: plotted against params


def test_stored_text_is_rounded():
    assert rounded("rank 0.313031: 3/5 layers factorized, ft 1 ep") == "rank 0.313: 3/5 layers factorized, ft 1 ep"
    assert rounded("1234.56789 kept, 0.00012345 left, 1.25 B/param") == "1235 kept, 0.000123 left, 1.25 B/param"


def test_student_kinds():
    assert student_kind({"kind": "cascade", "config": {"kind": "cascade"}}) == "committee"  # any kind but single
    assert student_kind({"kind": "pair", "config": {}}) == "committee"  # the trial's kind attribute decides
    assert student_kind({"config": {"kind": "pair"}}) == "committee"  # trials stored before the attribute
    assert student_kind({"config": {"kind": "single", "compress.method": "structured"}}) == "compressed"
    assert student_kind({"config": {"kind": "single", "compress.method": "none"}}) == "single"


def test_version_and_flags_shown_the_typer_way():
    version = runner.invoke(app, ["--version"])
    assert version.exit_code == 0 and re.match(r"autokd \d+\.\d+", version.output)
    for command in ([], ["search"], ["report"], ["export"], ["dashboard"], ["teacher", "train"]):
        shown = runner.invoke(app, [*command, "--help"], terminal_width=160)
        assert shown.exit_code == 0 and "<bool>" not in shown.output, command
    assert "--html" in runner.invoke(app, ["report", "--help"]).output


# --------------------------------------------------------------------------- a real study, resumed

@pytest.fixture(scope="module")
def resumed_study(tmp_path_factory, tiny_teacher):
    """A real tiny study searched twice, the second time as a new process with a higher budget (a resume).

    One learning rate of the space (1e4) diverges; the second run starts with a queued trial at
    that rate, so the study always holds a failed trial with its recorded reason.
    """
    import subprocess
    import sys

    from tests.tiny import TINY_SPACE

    folder = tmp_path_factory.mktemp("resumed")
    space = {**TINY_SPACE, "train": {**TINY_SPACE["train"], "epochs": 1, "lr": {"choices": [0.03, 0.05, 0.1, 1.0e4]}}}
    path = write_tiny_study(folder, name="resumed", space=space, teacher={"checkpoint": str(tiny_teacher)},
                            objectives=["accuracy", "params", "latency_ms"], n_trials=3)
    first = runner.invoke(app, ["search", str(path)], catch_exceptions=False)
    assert first.exit_code == 0, first.output
    storage = f"sqlite:///{folder / 'resumed' / 'study.db'}"
    optuna.load_study(study_name="resumed", storage=storage).enqueue_trial({"lr": 1.0e4})
    second = subprocess.run([sys.executable, "-m", "autokd", "search", str(path), "--n-trials", "6"],
                            capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stdout + second.stderr
    return path, optuna.load_study(study_name="resumed", storage=storage)


@pytest.mark.slow
def test_html_report_is_self_contained(resumed_study, tmp_path):
    study_path, study = resumed_study
    out = study_path.parent / "resumed"
    from optuna.artifacts import get_all_artifact_meta

    from autokd.search.internals import storage_of

    for trial in study.get_trials(states=(optuna.trial.TrialState.COMPLETE,)):
        (meta,) = get_all_artifact_meta(trial, storage=storage_of(study))
        assert meta.mimetype == "application/octet-stream"  # not the guess from .pt (a SNES page table)
    result = runner.invoke(app, ["report", str(study_path), "--html"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    for plot in ("pareto.png", "per_class.png", "history.png"):
        assert (out / plot).stat().st_size > 10_000, plot
    page = (out / "report.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and page.count('src="data:image/png;base64,') == 3
    assert not re.search(r"(?:src|href)=\"(?!data:)", page) and "http://" not in page and "https://" not in page
    assert "<table>" in page and "Pareto front of &#x27;resumed&#x27;" in page and "Per-class test accuracy" in page
    assert "<th>val acc</th>" in page and "<th>test acc</th>" in page
    assert "name: resumed" in page and "objectives:" in page  # the study's settings (study.yaml)
    for name in ("autokd", "torch", "optuna", "python"):
        assert f"<th>{name}</th>" in page
    assert cpu_model() in page
    elsewhere = tmp_path / "elsewhere" / "r.html"
    named = runner.invoke(app, ["report", str(study_path), "--out", str(elsewhere)], catch_exceptions=False)
    assert named.exit_code == 0 and elsewhere.read_text().count("data:image/png;base64,") == 3


def test_too_large_images_name_only_settings_that_exist(tmp_path):
    from PIL import Image

    from autokd.data import MAX_IMAGE_SIZE

    side = MAX_IMAGE_SIZE + 16
    for cls in ("a", "b"):
        (tmp_path / "big" / cls).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (side, side), (80 * i, 0, 0)).save(tmp_path / "big" / cls / f"{i}.png")
    result = runner.invoke(app, ["search", "--dataset", f"imagefolder:{tmp_path / 'big'}",
                                 "--output", str(tmp_path / "out")])
    assert result.exit_code == 2 and f"{side} px" in result.output
    assert "image_size: N" in result.output  # the study key
    flags = runner.invoke(app, ["search", "--help"], terminal_width=200).output
    assert "--image-size" not in result.output or "--image-size" in flags  # no flag that does not exist
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("panels", [1, 2, 3])
def test_the_legend_fits_under_one_panel_or_several(panels: int):
    """A one-panel Pareto plot (a study with one cost) once cut its seven-entry legend at both edges."""
    from matplotlib.lines import Line2D

    from autokd.report.plots import _legend_below, _pyplot

    plt = _pyplot()
    fig, _ = plt.subplots(1, panels, figsize=(5.6 * panels, 4.8), squeeze=False)
    labels = ["single student", "committee (cascade, pair)", "Pareto (all objectives)", "other trial",
              "front of this panel", "beyond the axis (on the edge)", "teacher"]
    bottom = _legend_below(fig, [Line2D([], [], marker="o", label=x) for x in labels], labels)
    fig.tight_layout(rect=(0, bottom, 1, 1))
    renderer = fig.canvas.get_renderer()
    legend, canvas = fig.legends[0].get_window_extent(renderer), fig.bbox
    axes_bottom = min(ax.get_window_extent(renderer).y0 for ax in fig.axes)
    assert canvas.x0 <= legend.x0 and legend.x1 <= canvas.x1     # not cut at either side
    assert legend.y1 < axes_bottom                              # below the panels, covering no point
    plt.close(fig)


def _label_boxes(fig):
    """Per panel: {label text: (annotation, its box in pixels)} and the dots' centres in pixels."""
    from matplotlib.text import Annotation

    renderer = fig.canvas.get_renderer()
    panels = []
    for ax in fig.axes:
        labels = [a for a in ax.texts if isinstance(a, Annotation)]
        dots = [ax.transData.transform(xy) for c in ax.collections for xy in c.get_offsets()]
        panels.append((ax, {a.get_text(): (a, a.get_window_extent(renderer)) for a in labels}, dots,
                       len(labels)))
    return panels


@pytest.mark.slow
def test_every_trial_is_labelled_once_beside_its_own_dot(resumed_study):
    import numpy as np

    from autokd.record import trial_figures
    from autokd.record import study_teacher
    from autokd.report import cost_objectives, pareto_figure, pareto_trials

    _, study = resumed_study
    complete = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    front = {t.number for t in pareto_trials(study)}
    assert front and len(complete) > len(front)  # both kinds of point are drawn
    fig = pareto_figure(study, study_teacher(study))
    try:
        for (ax, labels, dots, count), key in zip(_label_boxes(fig), cost_objectives(study)):
            numbers = {text.rstrip("←→↑↓"): text for text in labels if text[0].isdigit()}
            assert count == len(labels) == len(complete) + 1  # one label per trial (never "3,11") and the teacher's
            assert set(numbers) == {str(t.number) for t in complete}
            for trial in complete:
                annotation, box = labels[numbers[str(trial.number)]]
                figures = trial_figures(trial)
                if numbers[str(trial.number)] == str(trial.number):  # inside the axes: at the trial's own figures
                    assert annotation.xy == pytest.approx((figures[key], 100 * figures["accuracy"]))
                own = ax.transData.transform(annotation.xy)
                gap = [np.hypot(max(box.x0 - x, 0, x - box.x1), max(box.y0 - y, 0, y - box.y1)) for x, y in dots]
                mine = np.hypot(max(box.x0 - own[0], 0, own[0] - box.x1), max(box.y0 - own[1], 0, own[1] - box.y1))
                # beside its own dot (no other dot nearer, bar one at the same spot) or on a leader line to it
                assert annotation.arrow_patch is not None or mine <= min(gap) + 1.0 or \
                    all(np.hypot(*(d - own)) < 2 or g >= mine for d, g in zip(dots, gap)), trial.number
                if trial.number in front:
                    assert annotation.get_color() != "0.3"  # front labels are in the front's colour
            boxes = [box for _, box in labels.values()]
            for i, a in enumerate(boxes):  # no label covers another
                assert not any(a.overlaps(b) for b in boxes[i + 1:])
    finally:
        import matplotlib.pyplot as plt

        plt.close(fig)


@pytest.mark.slow
def test_history_marks_where_the_resumed_run_began(resumed_study):
    from autokd.report import history_figure, run_starts
    from autokd.record import DRIVER_ATTR

    _, study = resumed_study
    trials = sorted(study.trials, key=lambda t: t.number)
    first_driver = trials[0].system_attrs[DRIVER_ATTR]
    resumed_at = min(t.number for t in trials if t.system_attrs.get(DRIVER_ATTR, first_driver) != first_driver)
    assert run_starts(study) == [(resumed_at, "resumed")]
    fig = history_figure(study)
    try:
        for ax in fig.axes:
            marks = [t for t in ax.texts if t.get_text() == "resumed"]
            assert len(marks) == 1 and marks[0].xy[0] == resumed_at - 0.5
            assert any(list(line.get_xdata()) == [resumed_at - 0.5] * 2 for line in ax.lines)
        assert "in 2 runs" in fig._suptitle.get_text()
    finally:
        import matplotlib.pyplot as plt

        plt.close(fig)


@pytest.mark.slow
def test_html_lists_trials_off_the_front_and_failed_ones_with_why(resumed_study):
    from html import escape

    from autokd.report import pareto_trials

    path, study = resumed_study
    result = runner.invoke(app, ["report", str(path), "--html"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    page = (path.parent / "resumed" / "report.html").read_text()
    front = {t.number for t in pareto_trials(study)}
    complete = {t.number for t in study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))}
    off = page[page.index("<h2>Trials off the front</h2>"):]
    off = off[:off.index("<h2>", 4)]
    rows = re.findall(r'<tr><td class="num">(\d+)</td>', off)
    assert sorted(map(int, rows)) == sorted(complete - front) and complete - front
    for header in ("lr", "weight decay", "time", "beaten by"):
        assert f"<th>{header}</th>" in off
    assert "<th>lr</th>" in page[:page.index("<h2>Trials off the front</h2>")]  # the front's table too
    failed = study.get_trials(states=(optuna.trial.TrialState.FAIL,))
    assert any("diverged" in t.user_attrs["failed_because"] for t in failed)
    section = page[page.index("<h2>Failed and pruned trials</h2>"):]
    for trial in failed:
        reason = trial.user_attrs["failed_because"].splitlines()[0]
        assert f'<tr><td class="num">{trial.number}</td><td>FAIL</td>' in section
        assert escape(reason) in section and escape(trial.user_attrs["log_path"]) in section
    assert re.search(r"<th>CPU cores</th><td>\d+ logical", page)
    assert re.search(r"<th>trials measured on</th><td>[^<]+\d+ cores", page)
