"""Reports: plots that follow the study, the self-contained HTML report, and the CLI's face."""

from __future__ import annotations

import re

import optuna
import pytest
from typer.testing import CliRunner

from autokd.cli import app
from autokd.measure import cpu_model
from autokd.report import architecture, best_so_far, cost_objectives, format_objective, robust_limits, rounded, student_kind
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


def test_knobs_in_name_order_in_every_model_of_a_committee():
    text = "cnn5(width=0.273,hidden=45) | vgg(width=0.1,variant=7) + selector"
    assert architecture({"architecture": text}) == "cnn5(hidden=45,width=0.273) | vgg(variant=7,width=0.1) + selector"
    assert architecture({"architecture": "resnet18(width=64) + vgg(width=1.0,variant=7)"}) == \
        "resnet18(width=64) + vgg(variant=7,width=1.0)"
    assert architecture({"architecture": "mlp()"}) == "mlp()"


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


@pytest.mark.slow
def test_html_report_is_self_contained(tmp_path):
    study_path = write_tiny_study(tmp_path, objectives=["accuracy", "params", "latency_ms"])
    searched = runner.invoke(app, ["search", str(study_path)], catch_exceptions=False)
    assert searched.exit_code == 0, searched.output
    out = tmp_path / "tiny"
    from optuna.artifacts import get_all_artifact_meta

    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{out / 'study.db'}")
    for trial in study.get_trials(states=(optuna.trial.TrialState.COMPLETE,)):
        (meta,) = get_all_artifact_meta(trial, storage=study._storage)
        assert meta.mimetype == "application/octet-stream"  # not the guess from .pt (a SNES page table)
    result = runner.invoke(app, ["report", str(study_path), "--html"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    for plot in ("pareto.png", "per_class.png", "history.png"):
        assert (out / plot).stat().st_size > 10_000, plot
    page = (out / "report.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and page.count('src="data:image/png;base64,') == 3
    assert not re.search(r"(?:src|href)=\"(?!data:)", page) and "http://" not in page and "https://" not in page
    assert "<table>" in page and "Pareto front of &#x27;tiny&#x27;" in page and "Per-class test accuracy" in page
    assert "<th>val acc</th>" in page and "<th>test acc</th>" in page
    assert "name: tiny" in page and "objectives:" in page  # the study's settings (study.yaml)
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

    from autokd.report import _legend_below, _pyplot

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
