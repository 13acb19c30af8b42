"""The report as one self-contained HTML page: plots embedded, every section, the study's settings,
versions and hardware; opens offline."""

from __future__ import annotations

import base64
from datetime import datetime, timezone
from html import escape
from pathlib import Path

import optuna
from optuna.trial import TrialState

from autokd.config import StudyConfig
from autokd.record import study_teacher, trial_figures
from autokd.report.plots import write_plots
from autokd.report.sections import Section, report_sections
from autokd.report.trials import trial_counts


_HTML_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto; max-width: 1280px;
       padding: 0 1em; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.15em; margin-top: 2em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.85em; }
caption { text-align: left; font-weight: 600; padding: 0.3em 0; }
th, td { border: 1px solid #ddd; padding: 0.25em 0.55em; vertical-align: top; }
th { background: #f3f3f3; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
img { max-width: 100%; display: block; margin: 0.8em 0; border: 1px solid #eee; }
pre { background: #f7f7f7; padding: 0.8em; overflow-x: auto; font-size: 0.85em; }
"""


def section_html(section: Section) -> str:
    """A section as an HTML ``<table>``: title as caption, right-justified columns as numbers."""
    num = ' class="num"'
    head = "".join(f"<th>{escape(c.header)}</th>" for c in section.columns)
    rows = []
    for row in section.rows:
        cells = "".join(f"<td{num if c.justify == 'right' else ''}>{escape(cell)}</td>"
                        for c, cell in zip(section.columns, row.cells))
        rows.append(f"<tr>{cells}</tr>")
    caption = f"<caption>{escape(section.title)}</caption>" if section.title else ""
    return f"<table>{caption}<thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _environment(study: optuna.Study | None = None) -> list[tuple[str, str]]:
    """Versions and hardware of the machine writing the report, then where the study's trials were measured."""
    import os
    import platform

    import torch

    from autokd import __version__
    from autokd.measure import cpu_model

    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    cores = f"{os.cpu_count()} logical" + (f", {usable} usable by this process" if usable != os.cpu_count() else "")
    rows = [("autokd", __version__), ("torch", torch.__version__), ("optuna", optuna.__version__),
            ("python", platform.python_version()), ("CPU", cpu_model()), ("CPU cores", cores),
            ("torch threads", str(torch.get_num_threads()))]
    if torch.cuda.is_available():
        rows.append(("GPU", torch.cuda.get_device_name(0)))
    if study is not None:
        rows += _measured_on(study)
    return rows


def _measured_on(study: optuna.Study) -> list[tuple[str, str]]:
    """Each machine the complete trials were measured on (CPU model, cores where recorded, latency threads)."""
    from collections import Counter

    machines: Counter[str] = Counter()
    for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        a = trial_figures(trial)
        if not a.get("cpu_model"):
            continue
        where = [str(a["cpu_model"])]
        if a.get("cpu_cores"):
            where.append(f"{a['cpu_cores']} cores")
        if a.get("gpu_name"):
            where.append(str(a["gpu_name"]))
        if a.get("latency_threads"):
            where.append(f"latency on {a['latency_threads']} thread{'s' * (a['latency_threads'] != 1)}")
        machines[", ".join(where)] += 1
    return [("trials measured on", f"{where} ({count} trials)") for where, count in machines.most_common()]


def html_report(study: optuna.Study, study_cfg: StudyConfig, path: Path, settings: str) -> Path:
    """One self-contained HTML file: plots embedded as base64 PNG, every report table, the study's
    ``settings`` (its ``study.yaml``, without a password), versions and hardware. Opens offline.
    """
    plots = write_plots(study, study_cfg.output_dir, study_teacher(study))
    titles = {"pareto": "Validation accuracy against each cost objective", "per_class": "Per-class test accuracy",
              "history": "Optimisation history"}
    parts = [f"<h1>autokd study '{escape(study.study_name)}'</h1>",
             f"<p>{escape(trial_counts(study))}; written {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC. "
             "The front is chosen on validation accuracy; test accuracy is reported only.</p>"]
    for plot in plots:
        data = base64.b64encode(plot.read_bytes()).decode("ascii")
        parts.append(f"<h2>{escape(titles.get(plot.stem, plot.stem))}</h2>"
                     f'<img alt="{escape(plot.stem)}" src="data:image/png;base64,{data}">')
    for section in report_sections(study, full=True):
        notes = "".join(f"<p><b>warning:</b> {escape(line)}</p>" for line in section.notes)
        parts.append(f"<h2>{escape(section.heading)}</h2>" + section_html(section) + notes)
    parts.append("<h2>Study settings</h2><pre>" + escape(settings) + "</pre>")
    parts.append("<h2>Versions and hardware</h2><table><tbody>"
                 + "".join(f"<tr><th>{escape(k)}</th><td>{escape(v)}</td></tr>" for k, v in _environment(study))
                 + "</tbody></table>")
    page = ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>autokd report: {escape(study.study_name)}</title><style>{_HTML_STYLE}</style></head>"
            f"<body>{''.join(parts)}</body></html>\n")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page, encoding="utf-8")
    return path
