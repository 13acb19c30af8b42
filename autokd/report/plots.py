"""The report's pictures: validation accuracy against each cost (``pareto.png``), per-class test accuracy
(``per_class.png``) and each objective by trial (``history.png``), drawn with matplotlib off screen."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from autokd.record import study_classes, study_objectives, trial_figures, trial_kind
from autokd.report.labels import PointLabel, place_labels
from autokd.report.trials import cost_objectives, pareto_trials, run_starts


#: How each objective reads in tables, progress lines and on plot axes: (axis label, log axis).
OBJECTIVE_AXES: dict[str, tuple[str, bool]] = {
    "accuracy": ("validation accuracy (%)", False),
    "params": ("parameters", True),
    "size_bytes": ("size on disk (bytes)", True),
    "macs": ("MACs per image", True),
    "latency_ms": ("CPU latency, batch 1 (ms)", False),
}


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
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    front = {t.number for t in pareto_trials(study)}
    figures = {t.number: trial_figures(t) for t in complete}
    costs = cost_objectives(study)
    fig, axes = plt.subplots(1, len(costs), figsize=(5.6 * len(costs), 4.8), squeeze=False)
    shown: set[str] = set()  # legend entries with something drawn
    panel_labels = [(ax, _pareto_panel(ax, key, complete, front, figures, teacher, shown))
                    for ax, key in zip(axes[0], costs)]
    handles = _pareto_legend(shown, figures)
    bottom = _legend_below(fig, handles, [h.get_label() for h in handles])
    fig.suptitle(f"autokd study '{study.study_name}': {len(front)} Pareto of {len(complete)} complete trials "
                 "(labels: trial numbers)", fontsize=10)
    fig.tight_layout(rect=(0, bottom, 1, 1))
    for ax, labels in panel_labels:  # after the layout: labels are placed in pixels
        place_labels(ax, labels)
    return fig


def _pareto_panel(ax: Any, key: str, complete: list[FrozenTrial], front: set[int], figures: dict[int, dict[str, Any]],
                  teacher: dict[str, Any] | None, shown: set[str]) -> list[PointLabel]:
    """Validation accuracy against one cost objective; adds what it drew to ``shown``; returns its labels."""
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
    return labels


def _pareto_legend(shown: set[str], figures: dict[int, dict[str, Any]]) -> list[Any]:
    """Legend handles for what the panels drew (``shown``): marker shapes only when kinds are mixed."""
    from matplotlib.lines import Line2D

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
    return handles


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
