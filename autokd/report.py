"""Reports: the Pareto front as rich tables and a PNG plot, read through Optuna's API only.

The front is chosen on validation accuracy (the objective); every table shows validation and
test accuracy side by side, and per-class and committee figures are the test split's (docs/methodology.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState
from rich.console import Console
from rich.table import Table

from autokd.config import StudyConfig
from autokd.models import describe
from autokd.readout import duration, format_objective, human, percent
from autokd.record import (failed_because, is_duplicate, is_stopped, log_path, recorded_seconds, study_classes,
                           study_objectives, study_teacher, trial_accuracy, trial_config, trial_driver, trial_figures,
                           trial_kind, trial_macs)


def failed_trials(told: list[FrozenTrial]) -> list[FrozenTrial]:
    """Trials that failed while training (not duplicates replaced before training, not interrupted ones)."""
    return [t for t in told if t.state == TrialState.FAIL and not is_duplicate(t) and not is_stopped(t)]


def failure_summary(told: list[FrozenTrial]) -> str | None:
    """One line on the failed trials of a search: how many, the commonest first error, where the logs are."""
    from collections import Counter

    failed = failed_trials(told)
    if not failed:
        return None
    reasons = Counter(failed_because(t) or "unknown" for t in failed)
    reason, count = reasons.most_common(1)[0]
    logs = sorted({log_path(t) for t in failed if log_path(t)})
    where = (f"; trial logs: {', '.join(logs[:3])}{' ...' if len(logs) > 3 else ''}" if logs else "")
    return (f"{len(failed)} of {len(told)} trials failed; commonest first error ({count}x): {reason}{where}")


def pareto_trials(study: optuna.Study) -> list[FrozenTrial]:
    """The Pareto-optimal, feasible COMPLETE trials, most accurate first."""
    best = study.best_trials if study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) else []
    return sorted(best, key=lambda t: -trial_accuracy(t))


def _kd(attrs: dict[str, Any]) -> str:
    cfg = attrs.get("config", {})
    loss = cfg.get("loss", "?")
    if loss == "none":
        return "labels only"
    parts = [loss]
    if loss in ("kd", "hint", "fitnets") and cfg.get("weighting") == "distiller":
        parts.append(f"sw={cfg.get('student_weight', 0):.2f} dw={cfg.get('distill_weight', 0):.2f}")
    elif loss in ("kd", "hint", "fitnets"):
        parts.append(f"a={cfg.get('alpha', 0):.2f}")
    parts.append(f"T={cfg.get('temperature', 0):.1f}")
    return " ".join(parts)


def _compression(attrs: dict[str, Any]) -> str:
    cfg = attrs.get("config", {})
    method = cfg.get("compress.method", "none")
    if method == "none":
        return "-"
    setting = cfg.get("compress.quant_mode", "") if method == "int8" else f"{cfg.get('compress.ratio', 0):.2f}"
    return f"{method} {setting}" + (" (skipped)" if attrs.get("compression_skipped") else "")


def split_accuracy_cells(attrs: dict[str, Any]) -> list[str]:
    """Validation accuracy (what the front was chosen on) and test accuracy (reported only)."""
    return [percent(attrs.get("validation_accuracy", attrs.get("accuracy"))), percent(attrs.get("test_accuracy"))]


#: Columns of a table of trials: (header, justify); ``detail`` adds the last three (the HTML report's).
_TRIAL_COLUMNS = (("trial", "right"), ("architecture", "left"), ("val acc", "right"), ("test acc", "right"),
                  ("params", "right"), ("size", "right"), ("MACs", "right"), ("CPU ms", "right"),
                  ("KD", "left"), ("epochs", "right"), ("compression", "left"))
_DETAIL_COLUMNS = (("lr", "right"), ("weight decay", "right"), ("time", "right"))


def trial_seconds(trial: FrozenTrial) -> float | None:
    """How long a trial took: its recorded training and measuring time, else its start to finish in the database."""
    recorded = recorded_seconds(trial)
    if recorded is not None:
        return recorded
    if trial.datetime_start is not None and trial.datetime_complete is not None:
        return (trial.datetime_complete - trial.datetime_start).total_seconds()
    return None


def _trials_table(title: str, trials: list[FrozenTrial], teacher: dict[str, Any] | None, detail: bool,
                  extra: tuple[str, dict[int, str]] | None = None) -> Table:
    """One row per trial (the teacher first, dimmed); ``extra``: a last column's header and cells by trial number."""
    table = Table(title=title, title_justify="left")
    columns = _TRIAL_COLUMNS + (_DETAIL_COLUMNS if detail else ()) + (((extra[0], "left"),) if extra else ())
    for col, justify in columns:
        table.add_column(col, justify=justify, overflow="fold")
    if teacher:
        table.add_row("teacher", describe(teacher.get("architecture", "?")), *split_accuracy_cells(teacher),
                      human(teacher.get("params")), human(teacher.get("size_bytes"), "B"), human(teacher.get("macs")),
                      f"{teacher.get('latency_ms', 0):.3f}", *["-"] * (len(columns) - 8), style="dim")
    for t in trials:
        a = trial_figures(t)
        cfg = a.get("config", {})
        cells = [str(t.number), describe(a.get("architecture", "?")) + _start(a), *split_accuracy_cells(a),
                 human(a.get("params")),
                 human(a.get("size_bytes"), "B"), human(a.get("macs")), f"{a.get('latency_ms', 0):.3f}",
                 _kd(a), str(cfg.get("epochs", "-")), _compression(a)]
        if detail:
            cells += [_number(cfg.get("lr")), _number(cfg.get("weight_decay")), duration(trial_seconds(t))]
        if extra:
            cells.append(extra[1].get(t.number, ""))
        table.add_row(*cells)
    return table


def _start(a: dict[str, Any]) -> str:
    """What a student started from weights took from the file: `` (62 loaded, 2 new: fc.bias, fc.weight)``."""
    if "weights_loaded" not in a:
        return ""
    names = a.get("weights_new_names") or []
    new = f": {', '.join(names[:2])}{', ...' if len(names) > 2 else ''}" if names else ""
    return f" ({a['weights_loaded']} loaded, {a.get('weights_new', 0)} new{new})"


def _number(value: Any) -> str:
    return "-" if value is None else f"{float(value):.3g}"


def pareto_table(study: optuna.Study, teacher: dict[str, Any] | None = None, detail: bool = False) -> Table:
    """The Pareto front, most accurate first, below the teacher; ``detail``: learning rate, weight decay and
    time too."""
    trials = pareto_trials(study)
    title = (f"Pareto front of '{study.study_name}' ({len(trials)} of "
             f"{len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))} complete trials); "
             "chosen on validation, test reported only")
    return _trials_table(title, trials, teacher, detail)


def off_front_table(study: optuna.Study, detail: bool = True) -> Table:
    """The complete trials off the Pareto front, most accurate first, each with a front trial that beats it
    (no worse on every objective) or the constraint it breaks."""
    front = pareto_trials(study)
    numbers = {t.number for t in front}
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    off = sorted((t for t in complete if t.number not in numbers),
                 key=lambda t: (-trial_accuracy(t), t.number))
    signs = [1 if d == optuna.study.StudyDirection.MAXIMIZE else -1 for d in study.directions]

    def why(trial: FrozenTrial) -> str:
        broken = [name for name, value in (trial.constraints or {}).items() if value > 0]
        if broken:
            return f"breaks {', '.join(broken)}"
        for other in front:
            if all(s * a >= s * b for s, a, b in zip(signs, other.values, trial.values)):
                return f"trial {other.number}"
        return "-"

    title = (f"Trials off the front of '{study.study_name}' ({len(off)}), most accurate on validation first; "
             "each beside a front trial no worse on every objective")
    return _trials_table(title, off, None, detail, ("beaten by", {t.number: why(t) for t in off}))


def unfinished_table(study: optuna.Study) -> Table | None:
    """Failed and pruned trials with why (the first line of the error; the full traceback is in the log)."""
    trials = sorted(study.get_trials(deepcopy=False, states=(TrialState.FAIL, TrialState.PRUNED)),
                    key=lambda t: t.number)
    if not trials:
        return None
    table = Table(title=f"Failed and pruned trials ({len(trials)}); the full error is in each trial's log",
                  title_justify="left")
    for col, justify in (("trial", "right"), ("state", "left"), ("architecture", "left"), ("reason", "left"),
                         ("time", "right"), ("log", "left")):
        table.add_column(col, justify=justify, overflow="fold")
    for t in trials:
        a = trial_figures(t)
        reason = a.get("failed_because") or (f"pruned at epoch {a['epoch']}" if "epoch" in a else "unknown")
        table.add_row(str(t.number), t.state.name, describe(a["architecture"]) if a.get("architecture") else "-",
                      str(reason).splitlines()[0] if str(reason).strip() else "unknown",
                      duration(trial_seconds(t)), a.get("log_path") or "-")
    return table


def per_class_table(study: optuna.Study, classes: list[str] | None, teacher: dict[str, Any] | None,
                    top: int = 3) -> Table:
    trials = pareto_trials(study)[:top]
    key = "per_class_test_accuracy"
    table = Table(title=f"Per-class test accuracy of the {len(trials)} most accurate (on validation) Pareto trials")
    table.add_column("class", overflow="fold")
    if teacher and teacher.get(key):
        table.add_column("teacher", justify="right")
    for t in trials:
        table.add_column(f"#{t.number}", justify="right")
    per_class = [trial_figures(t).get(key, []) for t in trials]
    n = len(per_class[0]) if trials else 0
    for i in range(n):
        row = [classes[i] if classes and i < len(classes) else str(i)]
        if teacher and teacher.get(key):
            row.append(f"{100 * teacher[key][i]:.1f}")
        row += [f"{100 * values[i]:.1f}" for values in per_class]
        table.add_row(*row)
    return table


def teacher_table(teacher: dict[str, Any]) -> Table:
    """The teacher's members, their weights and accuracies, next to the ensemble's accuracy."""
    table = Table(title=f"Teacher ({teacher.get('kind', 'single')})")
    for col, justify in (("member", "left"), ("weight", "right"), ("val acc", "right"), ("test acc", "right")):
        table.add_column(col, justify=justify)
    members = teacher.get("members") or []
    val = teacher.get("member_validation_accuracy") or [None] * len(members)
    test = teacher.get("member_test_accuracy") or [None] * len(members)
    weights = teacher.get("weights") or [None] * len(members)
    for name, weight, v, t in zip(members, weights, val, test):
        table.add_row(name, "-" if weight is None else f"{weight:.3f}", percent(v), percent(t))
    name = "ensemble" if len(members) > 1 else "teacher"
    joint = bool(teacher.get("joint_head"))
    table.add_row(f"{name} (joint head)" if joint else name, "-" if joint else "1.000",
                  *split_accuracy_cells(teacher), style="bold")
    return table


def committee_trials(study: optuna.Study, top: int | None = 5) -> list[FrozenTrial]:
    """Complete committee trials (pairs, cascades): Pareto-optimal ones first, then by validation accuracy."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    committees = [t for t in complete if trial_kind(trial_figures(t)) != "single"]
    front = {t.number for t in pareto_trials(study)}
    ranked = sorted(committees, key=lambda t: (t.number not in front, -trial_accuracy(t)))
    return ranked if top is None else ranked[:top]


def _members(a: dict[str, Any]) -> dict[str, list[Any]]:
    """A committee's member figures, cheap member first (older pair trials named them ``student_*``)."""
    names = a.get("member_names") or a.get("students") or ["member 1", "member 2"]
    members = a.get("members") or []
    reused = len(members) == 2 and all(isinstance(m, int) for m in members)  # trial numbers, not specs
    return {"names": [describe(n) for n in names],
            "trials": members if reused else [None, None],
            "val": a.get("member_validation_accuracy") or a.get("student_accuracy") or [None, None],
            "test": a.get("member_test_accuracy") or a.get("test_student_accuracy") or [None, None],
            "macs": a.get("member_macs") or a.get("student_macs") or [None, None]}


def best_single_within(study: optuna.Study, macs: float) -> FrozenTrial | None:
    """The single student with the best validation accuracy among those costing at most ``macs`` MACs."""
    singles = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
               if trial_kind(trial_figures(t)) == "single" and trial_macs(t) <= macs]
    return max(singles, key=trial_accuracy, default=None)


def _routing(a: dict[str, Any]) -> str:
    router = a.get("router") or {}
    if trial_kind(a) == "cascade":
        how = f"cascade: {router.get('rule', '?')}, deferred answer {router.get('combine', '?')}"
    else:
        cfg = a.get("config", {})
        how = (f"routed pair: {cfg.get('selector.family', 'conv')} selector "
               f"{cfg.get('selector.layers', '?')}x{cfg.get('selector.width', '?')}")
    if router.get("target") == "budget":
        how += f", defer at most {100 * float(router.get('budget', 0)):.0f}%"
    elif router.get("target") == "match":
        how += f", match the large member -{float(router.get('tolerance', 0)):.2f} pt"
    router_acc = a.get("test_router_accuracy", a.get("test_selector_accuracy"))
    if router_acc is not None:
        how += f"; right member on {100 * router_acc:.1f}% of disagreements"
    return how


def committee_table(study: optuna.Study, top: int | None = 5) -> Table:
    """Each committee above its members, the oracle and the best single student at equal or lower MACs."""
    trials = committee_trials(study, top)
    front = {t.number for t in pareto_trials(study)}
    table = Table(title=f"Committees: each beside its members and the best single student at no more MACs "
                        f"({len(trials)} shown, * on the front; routing share and MACs on test)",
                  title_justify="left")
    for col, justify in (("trial", "right"), ("model", "left"), ("val acc", "right"), ("test acc", "right"),
                         ("MACs/input", "right"), ("to large", "right")):
        table.add_column(col, justify=justify, overflow="fold")
    for t in trials:
        a = trial_figures(t)
        m = _members(a)
        share = (a.get("test_routing_share") or [None, None])[1]
        table.add_row(f"{t.number}{'*' if t.number in front else ''}", _routing(a), *split_accuracy_cells(a),
                      human(a.get("test_macs", a.get("macs"))), "-" if share is None else f"{100 * share:.1f}%",
                      style="bold")
        table.add_row("", "oracle (either member right)", percent(a.get("oracle_accuracy")),
                      percent(a.get("test_oracle_accuracy")), "", "")
        for j, role in enumerate(("cheap", "large")):
            source = f" (trial {m['trials'][j]})" if m["trials"][j] is not None else " (trained for it)"
            table.add_row("", f"{role} member {m['names'][j]}{source}", percent(m["val"][j]), percent(m["test"][j]),
                          human(m["macs"][j]), "")
        best = best_single_within(study, float(a.get("macs", 0)))
        if best is not None:
            b = trial_figures(best)
            table.add_row("", f"best single at <= MACs: trial {best.number} {describe(b.get('architecture', '?'))}", *split_accuracy_cells(b),
                          human(b.get("macs")), "", style="dim")
        else:
            table.add_row("", "best single at <= MACs: none that cheap", "", "", "", "", style="dim")
    return table


def committee_warnings(study: optuna.Study) -> list[str]:
    """One line per committee whose routing is degenerate (over 95% to one member) or that is worse than a member."""
    lines = []
    for t in committee_trials(study, top=None):
        a = trial_figures(t)
        share = a.get("test_routing_share") or []
        test_members = [x for x in _members(a)["test"] if x is not None]
        if share and max(share) > 0.95:
            side = "cheap" if share[0] >= share[1] else "large"
            lines.append(f"trial {t.number} ({trial_kind(a)}): routing is degenerate, {100 * max(share):.1f}% of "
                         f"test inputs go to the {side} member")
        if test_members and a.get("test_accuracy") is not None and a["test_accuracy"] < max(test_members) - 1e-9:
            lines.append(f"trial {t.number} ({trial_kind(a)}): test accuracy {percent(a['test_accuracy'])} is below "
                         f"its best member's {percent(max(test_members))}")
    return lines


#: (label, metric, unit) of the before -> after columns; ``uncompressed_{metric}`` is the before.
_BEFORE_AFTER = (("val acc", "accuracy", "%"), ("test acc", "test_accuracy", "%"), ("params", "params", ""), ("size", "size_bytes", "B"),
                 ("MACs", "macs", ""), ("CPU ms", "latency_ms", "ms"))


def compression_table(study: optuna.Study) -> Table | None:
    """What compression bought and cost on the Pareto front: each figure before -> after, both measured.

    None when no Pareto trial asked for compression. A trial whose method could not handle its
    network shows the reason (``compression_skipped``) instead of figures.
    """
    trials = [t for t in pareto_trials(study) if trial_config(t).get("compress.method", "none") != "none"]
    if not trials:
        return None
    table = Table(title="What compression bought (Pareto trials; before -> after, both measured)")
    table.add_column("trial", justify="right")
    table.add_column("architecture", overflow="fold")
    table.add_column("compression")
    for label, _, _ in _BEFORE_AFTER:
        table.add_column(label, justify="right")
    for t in trials:
        a = trial_figures(t)
        if a.get("compression_skipped"):
            table.add_row(str(t.number), describe(a.get("architecture", "?")), f"skipped: {a['compression_skipped']}",
                          *["-"] * len(_BEFORE_AFTER))
            continue
        cells = [_before_after(a.get(f"uncompressed_{metric}"), a.get(metric), unit) for _, metric, unit in _BEFORE_AFTER]
        detail = rounded(str(a.get("compression_detail", "")))
        table.add_row(str(t.number), describe(a.get("architecture", "?")), f"{_compression(a)}: {detail}", *cells)
    return table


def rounded(text: str) -> str:
    """Long decimals in stored text to 3 significant digits: ``rank 0.313031`` -> ``rank 0.313``."""
    import math
    import re

    def short(match: re.Match) -> str:
        value = float(match.group())
        digits = max(0, 2 - math.floor(math.log10(value))) if value else 0  # never scientific notation
        return f"{value:.{digits}f}"

    return re.sub(r"\d+\.\d{4,}", short, text)


def _before_after(before: float | None, after: float | None, unit: str) -> str:
    if before is None or after is None:
        return "-"
    if unit == "%":
        return f"{100 * before:.2f} -> {100 * after:.2f} ({100 * (after - before):+.2f})"
    if unit == "ms":
        return f"{before:.3f} -> {after:.3f} ({after / before:.2f}x)" if before else "-"
    ratio = f" ({after / before:.2f}x)" if before else ""
    return f"{human(before, unit)} -> {human(after, unit)}{ratio}"


# --------------------------------------------------------------------------- figures and plots

#: How each objective reads in tables, progress lines and on plot axes: (axis label, log axis).
OBJECTIVE_AXES: dict[str, tuple[str, bool]] = {
    "accuracy": ("validation accuracy (%)", False),
    "params": ("parameters", True),
    "size_bytes": ("size on disk (bytes)", True),
    "macs": ("MACs per image", True),
    "latency_ms": ("CPU latency, batch 1 (ms)", False),
}


def best_so_far(trials: list[FrozenTrial], objectives: list[str],
                directions: list[optuna.study.StudyDirection]) -> str:
    """The best value on each objective over ``trials`` (COMPLETE ones with values), e.g. for a progress bar.

    Each objective's best is taken on its own (it may come from different trials).
    """
    done = [t for t in trials if t.state == TrialState.COMPLETE and t.values]
    if not done:
        return ""
    cells = []
    for i, (name, direction) in enumerate(zip(objectives, directions)):
        values = [t.values[i] for t in done if i < len(t.values)]
        if values:
            best = max(values) if direction == optuna.study.StudyDirection.MAXIMIZE else min(values)
            cells.append(f"{name} {format_objective(name, best)}")
    return "best: " + ", ".join(cells)


def cost_objectives(study: optuna.Study) -> list[str]:
    """The study's objectives other than accuracy, in its order; ``params`` when accuracy is the only one."""
    costs = [o for o in study_objectives(study) if o != "accuracy"]
    return costs or ["params"]


def student_kind(figures: dict[str, Any]) -> str:
    """``committee`` (any kind but ``single``: pair, cascade, ...), ``compressed`` or ``single``: how a point is drawn."""
    if trial_kind(figures) != "single":
        return "committee"
    return "compressed" if figures.get("config", {}).get("compress.method", "none") != "none" else "single"


_KIND_MARKERS = {"single": ("o", "single student"), "committee": ("s", "committee"),
                 "compressed": ("D", "compressed student")}


def robust_limits(values: list[float], log: bool, pad: float = 0.06) -> tuple[float, float]:
    """Axis limits that one outlier cannot squash: the range of the values inside Tukey's fences
    (1.5 IQR beyond the quartiles), padded; computed on log10 for a log axis."""
    import numpy as np

    v = np.asarray([x for x in values if x is not None and (x > 0 or not log)], dtype=float)
    if v.size == 0:
        return (1.0, 10.0) if log else (0.0, 1.0)
    v = np.log10(v) if log else v
    q1, q3 = np.percentile(v, [25, 75])
    fence = 1.5 * (q3 - q1)
    inliers = v[(v >= q1 - fence) & (v <= q3 + fence)]  # the axis ends at the last inlier, not at the fence
    if v.size < 8:  # too few points for quartiles to say what an outlier is
        inliers = v
    lo, hi = inliers.min(), inliers.max()
    span = hi - lo
    if span <= 0:
        span = 0.5 if log else (abs(hi) * 0.1 or 1.0)
    lo, hi = lo - pad * span, hi + pad * span
    return (10 ** lo, 10 ** hi) if log else (lo, hi)


def _step_front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The 2-D front of (cost, accuracy) points: lower cost, higher accuracy; ascending cost."""
    front: list[tuple[float, float]] = []
    for x, y in sorted(points, key=lambda p: (p[0], -p[1])):
        if not front or y > front[-1][1]:
            front.append((x, y))
    return front


def _style_axis(axis: Any, log: bool, name: str) -> None:
    """Few, readable ticks: human numbers on log axes (1, 2, 5 per decade at most), no minor labels."""
    from matplotlib import ticker

    if log:
        axis.set_major_locator(ticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0), numticks=7))
        axis.set_major_formatter(ticker.FuncFormatter(lambda v, _: _tick(v, "B" if name == "size_bytes" else "")))
        axis.set_minor_formatter(ticker.NullFormatter())
    else:
        axis.set_major_locator(ticker.MaxNLocator(nbins=6, steps=[1, 2, 2.5, 5, 10]))  # 96, 97, 98; not 95.2, 96.0, 96.8


def _tick(value: float, unit: str) -> str:
    """A short tick label: ``5k``, ``200k``, ``1.5M``."""
    for suffix, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(value) >= scale:
            return f"{value / scale:.3g}{suffix}{unit}"
    return f"{value:.3g}{unit}"


@dataclass
class PointLabel:
    """A label to draw beside one marker: its text, the marker's data position and radius (points)."""

    text: str
    x: float
    y: float
    radius: float
    color: str = "0.25"
    priority: int = 1  # lower first: it gets the free places next to its marker


#: Where a label may sit around its marker, in order of preference: right, up-right, up, ... (x, y signs).
_DIRECTIONS = ((1, 0), (1, 1), (-1, 1), (1, -1), (-1, -1), (-1, 0), (0, 1), (0, -1))
#: Gaps (points) between a marker's edge and its label: the first ring beside it, the others further out on
#: a leader line.
_GAPS = (1.5, 7.0, 13.0, 20.0, 28.0, 38.0)


def place_labels(ax: Any, labels: list[PointLabel], fontsize: float = 7) -> list[Any]:
    """Draw each label beside its own marker, where it covers no marker and no other label.

    Labels are placed one at a time (``priority`` first) at the cheapest spot of rings around their
    marker: covering a marker or a label costs most, then lying nearer another marker than its
    own, leaving the axes, and distance. A label that had to move out of the first ring gets a thin
    leader line to its marker. Call after the figure's layout is final (positions are in pixels).
    Returns the annotations, in the order of ``labels``.
    """
    import numpy as np

    fig = ax.figure
    renderer = fig.canvas.get_renderer()
    px = fig.dpi / 72.0  # pixels per point
    centres = np.array([ax.transData.transform((lab.x, lab.y)) for lab in labels]).reshape(-1, 2)
    radii = np.array([lab.radius * px for lab in labels])
    markers = np.column_stack([centres - radii[:, None], centres + radii[:, None]])  # (x0, y0, x1, y1) each
    frame = ax.get_window_extent(renderer)
    frame_box = np.array([[frame.x0, frame.y0, frame.x1, frame.y1]])
    placed = np.empty((0, 4))  # the labels drawn so far, pixels
    # Every spot around a marker: ring by ring, each direction in order of preference.
    rings = np.repeat(np.arange(len(_GAPS)), len(_DIRECTIONS))
    gaps = np.repeat(np.array(_GAPS), len(_DIRECTIONS)) * px
    ux, uy = np.tile(np.array(_DIRECTIONS, dtype=float).T, len(_GAPS))
    slant = np.where((ux != 0) & (uy != 0), 0.72, 1.0)
    preference = np.tile(np.arange(len(_DIRECTIONS)), len(_GAPS))
    drawn: list[Any] = [None] * len(labels)

    def overlaps(spots: Any, others: Any) -> Any:
        """Area each spot (S, 4) shares with each of ``others`` (O, 4), summed over them: (S,)."""
        width = np.minimum(spots[:, None, 2], others[None, :, 2]) - np.maximum(spots[:, None, 0], others[None, :, 0])
        height = np.minimum(spots[:, None, 3], others[None, :, 3]) - np.maximum(spots[:, None, 1], others[None, :, 1])
        return (np.clip(width, 0, None) * np.clip(height, 0, None)).sum(axis=1)

    for i in sorted(range(len(labels)), key=lambda k: (labels[k].priority, k)):
        lab, (cx, cy), r = labels[i], centres[i], radii[i]
        probe = ax.text(0, 0, lab.text, fontsize=fontsize)
        extent = probe.get_window_extent(renderer)
        probe.remove()
        w, h = extent.width, extent.height
        area = max(w * h, 1.0)
        mx = cx + ux * ((r + gaps) * slant + w / 2)
        my = cy + uy * ((r + gaps) * slant + h / 2)
        spots = np.column_stack([mx - w / 2, my - h / 2, mx + w / 2, my + h / 2])
        # From each spot to each marker's edge (0 inside it): a label nearer another marker than its own is ambiguous.
        x, y = centres[None, :, 0], centres[None, :, 1]
        dx = np.clip(np.maximum(spots[:, None, 0] - x, x - spots[:, None, 2]), 0, None)
        dy = np.clip(np.maximum(spots[:, None, 1] - y, y - spots[:, None, 3]), 0, None)
        near = np.clip(np.hypot(dx, dy) - radii[None, :], 0, None)
        own = near[:, i].copy()
        near[:, i] = np.inf
        others = np.delete(markers, i, axis=0)
        covered = overlaps(spots, placed) + overlaps(spots, others)
        outside = area - overlaps(spots, frame_box)
        ambiguous = near.min(axis=1, initial=np.inf) < own + 1.0
        cost = 40.0 * covered / area + 8.0 * ambiguous + 3.0 * outside / area + 1.5 * rings + 0.05 * preference
        best = int(np.argmin(cost))
        box = spots[best]
        placed = np.vstack([placed, box])
        leader = dict(arrowstyle="-", color=lab.color, lw=0.6, alpha=0.8, shrinkA=0, shrinkB=lab.radius + 0.5) \
            if rings[best] > 0 else None
        drawn[i] = ax.annotate(lab.text, (lab.x, lab.y), xytext=((box[0] - cx) / px, (box[1] - cy) / px),
                               textcoords="offset points", ha="left", va="bottom", fontsize=fontsize,
                               color=lab.color, zorder=5, annotation_clip=False, arrowprops=leader)
    return drawn


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _legend_below(fig: Any, handles: list[Any], labels: list[str]) -> float:
    """One legend under all panels, in as many columns as the figure's width holds; the height it takes (0-1)."""
    width_in, height_in = fig.get_size_inches()
    widest = max((len(label) for label in labels), default=10)
    ncol = max(1, min(len(handles), int(width_in / (0.45 + 0.075 * widest))))  # 8 pt text: ~0.075 in a character
    rows = -(-len(handles) // ncol)
    fig.legend(handles, labels, loc="lower center", ncol=ncol, fontsize=8, frameon=False)
    return min(0.4, (0.12 + 0.2 * rows) / height_in)


def _save(fig: Any, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")  # nothing drawn outside the canvas is cut
    _pyplot().close(fig)
    return path


def dominated_in(points: dict[int, tuple[float, float]]) -> set[int]:
    """The trials of ``{number: (cost, accuracy)}`` that another trial beats in this 2-D view: no more
    cost and no less accuracy, better in one."""
    return {n for n, (x, y) in points.items()
            if any(ox <= x and oy >= y and (ox < x or oy > y) for m, (ox, oy) in points.items() if m != n)}


#: How a trial is coloured on the Pareto plot: (face colour, edge colour, legend label).
_FRONT = ("tab:red", "tab:red", "Pareto front (all objectives)")
_FRONT_ELSEWHERE = ("#f7b6b2", "tab:red", "Pareto front via another objective (dominated in this panel)")
_OTHER = ("0.72", "0.45", "other trial")
#: Marker shapes are drawn black in the legend: a shape, not a colour, tells the kinds apart.
_SHAPE_COLOR = "k"


def pareto_figure(study: optuna.Study, teacher: dict[str, Any] | None = None) -> Any:
    """The figure :func:`pareto_plot` saves (matplotlib ``Figure``; close it after use)."""
    plt = _pyplot()
    from matplotlib.lines import Line2D

    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    front = {t.number for t in pareto_trials(study)}
    figures = {t.number: trial_figures(t) for t in complete}
    costs = cost_objectives(study)
    fig, axes = plt.subplots(1, len(costs), figsize=(5.6 * len(costs), 4.8), squeeze=False)
    shown: set[str] = set()  # legend entries with something drawn
    panel_labels: list[tuple[Any, list[PointLabel]]] = []
    for ax, key in zip(axes[0], costs):
        label, log = OBJECTIVE_AXES.get(key, (key, False))
        pts = [(t.number, figures[t.number].get(key), 100 * figures[t.number].get("accuracy", 0.0)) for t in complete]
        pts = [(n, x, y) for n, x, y in pts if x is not None and (x > 0 or not log)]
        ref = [(teacher[key], 100 * teacher["accuracy"])] if teacher and teacher.get(key) and \
            teacher.get("accuracy") is not None else []  # the teacher counts: off the axis only as an outlier
        xlim = robust_limits([x for _, x, _ in pts] + [x for x, _ in ref], log)
        ylim = robust_limits([y for _, _, y in pts] + [y for _, y in ref], False)
        ylim = (ylim[0], min(ylim[1], 100.5))

        def clip(x: float, y: float) -> tuple[float, float, str]:
            arrow = ("←" if x < xlim[0] else "→" if x > xlim[1] else "") + ("↓" if y < ylim[0] else "↑" if y > ylim[1] else "")
            return min(max(x, xlim[0]), xlim[1]), min(max(y, ylim[0]), ylim[1]), arrow

        labels: list[PointLabel] = []
        step = _step_front([(x, y) for _, x, y in pts])
        if step:
            xs = [clip(x, y)[0] for x, y in step] + [xlim[1]]
            ys = [clip(x, y)[1] for x, y in step] + [clip(*step[-1])[1]]
            ax.step(xs, ys, where="post", color="tab:red", alpha=0.45, lw=1.3, zorder=1)
            shown.add("step")
        beaten = dominated_in({n: (x, y) for n, x, y in pts})
        for n, x, y in sorted(pts, key=lambda p: (p[0] in front, p[0] in front and p[0] not in beaten)):
            cx, cy, arrow = clip(x, y)  # front members drawn last: on top of any grey neighbour
            style = _OTHER if n not in front else _FRONT_ELSEWHERE if n in beaten else _FRONT
            shown.add(style[2])
            shown.add(student_kind(figures[n]))
            if arrow:
                shown.add("edge")
            size = 42 if n in front else 26
            ax.scatter([cx], [cy], marker=_KIND_MARKERS[student_kind(figures[n])][0], s=size,
                       zorder=4 if n in front else 3, clip_on=False, facecolors="white" if arrow else style[0],
                       edgecolors=style[1], linewidths=1.2)
            labels.append(PointLabel(f"{n}{arrow}", cx, cy, radius=size ** 0.5 / 2 + 0.6,
                                     color="#b22222" if n in front else "0.3", priority=1 if n in front else 2))
        if ref:
            cx, cy, arrow = clip(*ref[0])
            ax.scatter([cx], [cy], marker="*", s=170, zorder=4, edgecolors="k", clip_on=False,
                       facecolors="white" if arrow else "k")
            labels.append(PointLabel(f"teacher{arrow}", cx, cy, radius=170 ** 0.5 / 2, color="k", priority=0))
            shown.add("teacher")
        ax.set_xscale("log" if log else "linear")
        ax.set_xlim(*xlim)
        ax.set_ylim(*ylim)
        _style_axis(ax.xaxis, log, key)
        _style_axis(ax.yaxis, False, "accuracy")
        ax.set_xlabel(label)
        ax.set_ylabel("validation accuracy (%)")
        ax.grid(alpha=0.3, which="major")
        panel_labels.append((ax, labels))
    committees = sorted({trial_kind(f) for f in figures.values()} - {"single"})
    names = {**{k: label for k, (_, label) in _KIND_MARKERS.items()},
             "committee": f"committee ({', '.join(committees)})"}
    handles = []
    if shown & {"committee", "compressed"}:  # one kind alone needs no key to its shape
        handles += [Line2D([], [], ls="", marker=_KIND_MARKERS[k][0], color=_SHAPE_COLOR, label=names[k])
                    for k in ("single", "committee", "compressed") if k in shown]
    handles += [Line2D([], [], ls="", marker="o", mfc=face, mec=edge, mew=1.2, label=name)
                for face, edge, name in (_FRONT, _FRONT_ELSEWHERE, _OTHER) if name in shown]
    if "step" in shown:
        handles.append(Line2D([], [], color="tab:red", alpha=0.45, label="front of this panel"))
    if "edge" in shown:
        handles.append(Line2D([], [], ls="", marker="o", mfc="white", mec="0.3",
                              label="beyond the axis (on the edge, arrow in its label)"))
    if "teacher" in shown:
        handles.append(Line2D([], [], ls="", marker="*", color="k", markersize=10, label="teacher"))
    bottom = _legend_below(fig, handles, [h.get_label() for h in handles])
    fig.suptitle(f"autokd study '{study.study_name}': {len(front)} Pareto of {len(complete)} complete trials "
                 "(labels: trial numbers)", fontsize=10)
    fig.tight_layout(rect=(0, bottom, 1, 1))
    for ax, labels in panel_labels:  # after the layout: labels are placed in pixels
        place_labels(ax, labels)
    return fig


def pareto_plot(study: optuna.Study, path: Path, teacher: dict[str, Any] | None = None) -> Path:
    """Validation accuracy against each cost objective of the study, one panel each.

    The study's Pareto trials are red (pale red where another trial beats them in this panel's two
    figures: they are on the front through another objective), the others grey; the panel's own
    front is a step line; markers tell single students, committees (pair, cascade: any ``kind``
    but ``single``) and compressed students apart; every point carries its own trial number, beside
    it or on a leader line. Axis ranges follow the bulk of the trials: a point beyond them is drawn
    hollow on the edge, its label pointing the way it lies.
    """
    return _save(pareto_figure(study, teacher), path)


def per_class_plot(study: optuna.Study, path: Path, teacher: dict[str, Any] | None = None,
                   top: int = 12) -> Path | None:
    """Per-class test accuracy of the Pareto trials (most accurate on validation first) as a heatmap.

    None when no Pareto trial holds per-class figures.
    """
    key = "per_class_test_accuracy"
    rows = [(f"trial {t.number}", trial_figures(t).get(key)) for t in pareto_trials(study)[:top]]
    rows = [(name, values) for name, values in rows if values]
    if not rows:
        return None
    if teacher and teacher.get(key):
        rows.insert(0, ("teacher", teacher[key]))
    n = max(len(v) for _, v in rows)
    classes = [str(c) for c in (study_classes(study) or [])][:n]
    classes += [str(i) for i in range(len(classes), n)]
    import numpy as np

    grid = np.full((len(rows), n), np.nan)
    for i, (_, values) in enumerate(rows):
        grid[i, :len(values)] = 100 * np.asarray(values, dtype=float)
    plt = _pyplot()
    longest = max(len(c) for c in classes)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.0 + 0.62 * n), 1.6 + 0.36 * len(rows) + 0.06 * min(longest, 30)))
    low = float(np.nanpercentile(grid, 2))
    image = ax.imshow(grid, cmap="viridis", vmin=min(low, 99.0), vmax=100.0, aspect="auto")
    ax.set_xticks(range(n), classes, rotation=40 if longest > 3 else 0, ha="right" if longest > 3 else "center",
                  fontsize=8)
    ax.set_yticks(range(len(rows)), [name for name, _ in rows], fontsize=8)
    if n <= 30:
        threshold = (min(low, 99.0) + 100.0) / 2
        for i in range(len(rows)):
            for j in range(n):
                if not np.isnan(grid[i, j]):
                    ax.text(j, i, f"{grid[i, j]:.0f}", ha="center", va="center", fontsize=7,
                            color="k" if grid[i, j] > threshold else "w")
    fig.colorbar(image, ax=ax, label="test accuracy (%)", fraction=0.04, pad=0.02)
    ax.set_title(f"Per-class test accuracy of the Pareto front of '{study.study_name}' "
                 "(most accurate on validation first)", fontsize=9)
    fig.tight_layout()
    return _save(fig, path)


def run_starts(study: optuna.Study) -> list[tuple[int, str]]:
    """Where each search run after the first began: (its first trial's number, ``resumed`` or ``another driver``).

    A run is one driver process (``autokd search``), named on every trial it started (the system
    attribute :data:`autokd.record.DRIVER_ATTR`). A run is ``resumed`` when it started after
    every trial finished by the runs before it, ``another driver`` when it ran beside them.
    Studies written before the attribute existed have no run starts.
    """
    runs: dict[str, list[FrozenTrial]] = {}
    for trial in sorted(study.get_trials(deepcopy=False), key=lambda t: t.number):
        driver = trial_driver(trial)
        if driver and trial.datetime_start is not None:
            runs.setdefault(driver, []).append(trial)
    starts: list[tuple[int, str]] = []
    earlier: list[FrozenTrial] = []
    for trials in runs.values():  # in order of each run's first trial
        first = trials[0]
        if earlier:
            finished = [t.datetime_complete for t in earlier
                        if t.state in (TrialState.COMPLETE, TrialState.PRUNED) and t.datetime_complete is not None]
            beside = any(done > first.datetime_start for done in finished)
            starts.append((first.number, "another driver" if beside else "resumed"))
        earlier += trials
    return starts


def history_plot(study: optuna.Study, path: Path) -> Path | None:
    """Each objective against trial number, with the best so far as a step line and a dashed line
    where each later run of the search began (:func:`run_starts`). None before any trial completes."""
    fig = history_figure(study)
    return None if fig is None else _save(fig, path)


def history_figure(study: optuna.Study) -> Any:
    """The figure :func:`history_plot` saves (matplotlib ``Figure``; close it after use), or None."""
    complete = sorted(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)), key=lambda t: t.number)
    if not complete:
        return None
    starts = run_starts(study)
    objectives = study_objectives(study)
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(objectives), figsize=(4.6 * len(objectives), 3.8), squeeze=False)
    for i, (ax, name) in enumerate(zip(axes[0], objectives)):
        label, log = OBJECTIVE_AXES.get(name, (name, False))
        scale = 100.0 if name == "accuracy" else 1.0
        maximize = study.directions[i] == optuna.study.StudyDirection.MAXIMIZE
        xs = [t.number for t in complete if i < len(t.values)]
        ys = [scale * t.values[i] for t in complete if i < len(t.values)]
        best, running = [], None
        for y in ys:
            running = y if running is None else (max(running, y) if maximize else min(running, y))
            best.append(running)
        lo, hi = robust_limits(ys, log)
        inside = [lo <= y <= hi for y in ys]
        ax.scatter([x for x, ok in zip(xs, inside) if ok], [y for y, ok in zip(ys, inside) if ok],
                   s=18, c="0.45", label="trial", zorder=3)
        if not all(inside):
            ax.scatter([x for x, ok in zip(xs, inside) if not ok], [min(max(y, lo), hi) for y, ok in zip(ys, inside)
                                                                    if not ok],
                       s=18, facecolors="none", edgecolors="0.3", label="beyond the axis", zorder=3, clip_on=False)
        ax.step(xs, [min(max(b, lo), hi) for b in best], where="post", color="tab:blue", lw=1.5,
                label="best so far", zorder=2)
        ax.set_yscale("log" if log else "linear")
        ax.set_ylim(lo, hi)
        _style_axis(ax.yaxis, log, name)
        ax.xaxis.set_major_locator(__import__("matplotlib.ticker", fromlist=["MaxNLocator"]).MaxNLocator(
            nbins=8, integer=True))
        ax.set_xlim(min(xs) - 0.5, max(xs) + 0.5)  # the first and last trial off the frame
        for number, how in starts:
            ax.axvline(number - 0.5, color="tab:green", ls="--", lw=1.1, zorder=1, label="a later run began")
            ax.annotate(how, (number - 0.5, 1.0), xycoords=("data", "axes fraction"), xytext=(-2, -3),
                        textcoords="offset points", rotation=90, ha="right", va="top", fontsize=7, color="tab:green")
        ax.set_xlabel("trial number")
        ax.set_ylabel(label.replace("validation accuracy", "val. accuracy"))
        ax.set_title(f"{name} ({'higher' if maximize else 'lower'} is better)", fontsize=9)
        ax.grid(alpha=0.3)
    handles, names = [], []
    for ax in axes[0]:  # one legend for all panels, below them: none covers a point
        for handle, name in zip(*ax.get_legend_handles_labels()):
            if name not in names:
                handles.append(handle)
                names.append(name)
    bottom = _legend_below(fig, handles, names)
    runs = f" in {len(starts) + 1} runs" if starts else ""
    fig.suptitle(f"Optimisation history of '{study.study_name}' ({len(complete)} complete trials{runs}; "
                 "points beyond the axis drawn hollow on its edge)", fontsize=10)
    fig.tight_layout(rect=(0, bottom, 1, 1))
    return fig


def write_plots(study: optuna.Study, folder: Path, teacher: dict[str, Any] | None = None) -> list[Path]:
    """``pareto.png``, ``per_class.png`` and ``history.png`` in ``folder`` (the study's output folder)."""
    written = [pareto_plot(study, folder / "pareto.png", teacher),
               per_class_plot(study, folder / "per_class.png", teacher),
               history_plot(study, folder / "history.png")]
    return [p for p in written if p is not None]


def teacher_info(study: optuna.Study) -> dict[str, Any] | None:
    return study_teacher(study)


def print_report(study: optuna.Study, study_cfg: StudyConfig, console: Console) -> Path:
    teacher = teacher_info(study)
    console.print(pareto_table(study, teacher))
    console.print(per_class_table(study, study_classes(study), teacher))
    compressed = compression_table(study)
    if compressed is not None:
        console.print(compressed)
    if teacher and len(teacher.get("members") or []) > 1:
        console.print(teacher_table(teacher))
    if committee_trials(study):
        console.print(committee_table(study))
        for line in committee_warnings(study):
            console.print(f"[yellow]warning:[/] {line}")
    console.print(trial_counts(study))
    plots = write_plots(study, study_cfg.output_dir, teacher)
    console.print(f"plots written: {', '.join(str(p) for p in plots)}")
    return plots[0]


# --------------------------------------------------------------------------- HTML report

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


def table_html(table: Table) -> str:
    """A rich table as an HTML ``<table>``: title as caption, right-justified columns as numbers."""
    from html import escape

    NUM = ' class="num"'
    columns = table.columns
    head = "".join(f"<th>{escape(str(c.header))}</th>" for c in columns)
    rows = []
    for i in range(table.row_count):
        cells = "".join(f"<td{NUM if c.justify == 'right' else ''}>{escape(str(c._cells[i]))}</td>" for c in columns)
        rows.append(f"<tr>{cells}</tr>")
    caption = f"<caption>{escape(str(table.title))}</caption>" if table.title else ""
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
    import base64
    from datetime import datetime, timezone
    from html import escape

    teacher = teacher_info(study)
    plots = write_plots(study, study_cfg.output_dir, teacher)
    titles = {"pareto": "Validation accuracy against each cost objective", "per_class": "Per-class test accuracy",
              "history": "Optimisation history"}
    parts = [f"<h1>autokd study '{escape(study.study_name)}'</h1>",
             f"<p>{escape(trial_counts(study))}; written {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC. "
             "The front is chosen on validation accuracy; test accuracy is reported only.</p>"]
    for plot in plots:
        data = base64.b64encode(plot.read_bytes()).decode("ascii")
        parts.append(f"<h2>{escape(titles.get(plot.stem, plot.stem))}</h2>"
                     f'<img alt="{escape(plot.stem)}" src="data:image/png;base64,{data}">')
    parts.append("<h2>Pareto front</h2>" + table_html(pareto_table(study, teacher, detail=True)))
    parts.append("<h2>Trials off the front</h2>" + table_html(off_front_table(study)))
    unfinished = unfinished_table(study)
    if unfinished is not None:
        parts.append("<h2>Failed and pruned trials</h2>" + table_html(unfinished))
    parts.append("<h2>Per-class accuracy</h2>"
                 + table_html(per_class_table(study, study_classes(study), teacher,
                                              top=len(pareto_trials(study)))))
    compressed = compression_table(study)
    if compressed is not None:
        parts.append("<h2>Compression</h2>" + table_html(compressed))
    if teacher and len(teacher.get("members") or []) > 1:
        parts.append("<h2>Teacher ensemble</h2>" + table_html(teacher_table(teacher)))
    if committee_trials(study):
        warnings = "".join(f"<p><b>warning:</b> {escape(line)}</p>" for line in committee_warnings(study))
        parts.append("<h2>Committees (pairs, cascades)</h2>" + table_html(committee_table(study, top=None)) + warnings)
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


def trial_counts(study: optuna.Study) -> str:
    """``trials: complete 16, fail 1``."""
    counts = {s.name: len(study.get_trials(deepcopy=False, states=(s,))) for s in TrialState}
    return "trials: " + ", ".join(f"{k.lower()} {v}" for k, v in counts.items() if v)
