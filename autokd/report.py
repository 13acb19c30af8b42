"""Reports: the Pareto front as rich tables and a PNG plot, read through Optuna's API only.

The front is chosen on validation accuracy (the objective); every table shows validation and
test accuracy side by side, and per-class and pair figures are the test split's (docs/methodology.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState
from rich.console import Console
from rich.table import Table

from autokd.config import StudyConfig


def human(n: float | None, unit: str = "") -> str:
    if n is None:
        return "-"
    for suffix, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f}{suffix}{unit}"
    return f"{n:.0f}{unit}" if float(n).is_integer() else f"{n:.3g}{unit}"


#: User attribute holding every figure of a trial beyond the few scalars stored on their own.
METRICS_ATTR = "metrics"


def trial_figures(trial: FrozenTrial) -> dict[str, Any]:
    """Every figure of a trial: its user attributes with the ``metrics`` JSON attribute unpacked."""
    figures = dict(trial.user_attrs)
    figures.update(figures.pop(METRICS_ATTR, None) or {})
    return figures


def trial_line(trial: FrozenTrial) -> str:
    """One line per finished trial, as a search prints it (both executors)."""
    a = trial_figures(trial)
    if trial.state != TrialState.COMPLETE:
        why = a.get("failed_because") or (f"at epoch {a.get('epoch')}" if "epoch" in a else "")
        log = f" (log: {a['log_path']})" if a.get("log_path") else ""
        return f"trial {trial.number:>3} {trial.state.name} {why}{log}".rstrip()
    return (f"trial {trial.number:>3} {a.get('architecture', '')[:48]:<48} val {percent(a.get('validation_accuracy'))} "
            f"test {percent(a.get('test_accuracy'))}  params {a['params']:>9,}  {a['latency_ms']:.3f} ms  "
            f"({a['trial_seconds']:.1f} s)")


def failed_trials(told: list[FrozenTrial]) -> list[FrozenTrial]:
    """Trials that failed while training (not duplicates replaced before training, not interrupted ones)."""
    return [t for t in told if t.state == TrialState.FAIL and "duplicate_of" not in t.user_attrs
            and t.user_attrs.get("failed_because") not in ("interrupted", "driver stopped")]


def failure_summary(told: list[FrozenTrial]) -> str | None:
    """One line on the failed trials of a search: how many, the commonest first error, where the logs are."""
    from collections import Counter

    failed = failed_trials(told)
    if not failed:
        return None
    reasons = Counter(t.user_attrs.get("failed_because") or "unknown" for t in failed)
    reason, count = reasons.most_common(1)[0]
    logs = sorted({t.user_attrs["log_path"] for t in failed if t.user_attrs.get("log_path")})
    where = (f"; trial logs: {', '.join(logs[:3])}{' ...' if len(logs) > 3 else ''}" if logs else "")
    return (f"{len(failed)} of {len(told)} trials failed; commonest first error ({count}x): {reason}{where}")


def pareto_trials(study: optuna.Study) -> list[FrozenTrial]:
    """The Pareto-optimal, feasible COMPLETE trials, most accurate first."""
    best = study.best_trials if study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) else []
    return sorted(best, key=lambda t: -float(t.user_attrs.get("accuracy", 0.0)))


def _kd(attrs: dict[str, Any]) -> str:
    cfg = attrs.get("config", {})
    loss = cfg.get("loss", "?")
    if loss == "none":
        return "labels only"
    parts = [loss]
    if loss in ("kd", "hint"):
        parts.append(f"a={cfg.get('alpha', 0):.2f}")
    parts.append(f"T={cfg.get('temperature', 0):.1f}")
    return " ".join(parts)


def _compression(attrs: dict[str, Any]) -> str:
    cfg = attrs.get("config", {})
    method = cfg.get("compress.method", "none")
    if method == "none":
        return "-"
    setting = cfg.get("compress.quant_mode", "") if method == "int8" else f"{cfg.get('compress.ratio', 0):g}"
    return f"{method} {setting}" + (" (skipped)" if attrs.get("compression_skipped") else "")


def percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}%"


def split_accuracy_cells(attrs: dict[str, Any]) -> list[str]:
    """Validation accuracy (what the front was chosen on) and test accuracy (reported only)."""
    return [percent(attrs.get("validation_accuracy", attrs.get("accuracy"))), percent(attrs.get("test_accuracy"))]


def pareto_table(study: optuna.Study, teacher: dict[str, Any] | None = None) -> Table:
    trials = pareto_trials(study)
    table = Table(title=f"Pareto front of '{study.study_name}' ({len(trials)} of "
                        f"{len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))} complete trials); "
                        "chosen on validation, test reported only",
                  title_justify="left")
    for col, justify in (("trial", "right"), ("architecture", "left"), ("val acc", "right"), ("test acc", "right"),
                         ("params", "right"), ("size", "right"), ("MACs", "right"), ("CPU ms", "right"),
                         ("KD", "left"), ("epochs", "right"), ("compression", "left")):
        table.add_column(col, justify=justify)
    if teacher:
        table.add_row("teacher", teacher.get("architecture", "-"), *split_accuracy_cells(teacher),
                      human(teacher.get("params")), human(teacher.get("size_bytes"), "B"), human(teacher.get("macs")),
                      f"{teacher.get('latency_ms', 0):.3f}", "-", "-", "-", style="dim")
    for t in trials:
        a = trial_figures(t)
        table.add_row(str(t.number), a.get("architecture", "?"), *split_accuracy_cells(a), human(a.get("params")),
                      human(a.get("size_bytes"), "B"), human(a.get("macs")), f"{a.get('latency_ms', 0):.3f}",
                      _kd(a), str(a.get("config", {}).get("epochs", "-")), _compression(a))
    return table


def per_class_table(study: optuna.Study, classes: list[str] | None, teacher: dict[str, Any] | None,
                    top: int = 3) -> Table:
    trials = pareto_trials(study)[:top]
    key = "per_class_test_accuracy"
    table = Table(title=f"Per-class test accuracy of the {len(trials)} most accurate (on validation) Pareto trials")
    table.add_column("class")
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


def pareto_plot(study: optuna.Study, path: Path, teacher: dict[str, Any] | None = None) -> Path:
    """Accuracy against params and against CPU latency; Pareto trials highlighted."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    front = {t.number for t in pareto_trials(study)}
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    for ax, key, label in ((axes[0], "params", "parameters"), (axes[1], "latency_ms", "CPU latency, batch 1 (ms)")):
        for trials, style in (([t for t in complete if t.number not in front], dict(c="0.6", s=18, label="trial")),
                              ([t for t in complete if t.number in front], dict(c="tab:red", s=36, label="Pareto"))):
            xs = [t.user_attrs.get(key, 0) for t in trials]
            ys = [100 * t.user_attrs.get("accuracy", 0) for t in trials]
            ax.scatter(xs, ys, **style)
        if teacher and teacher.get(key):
            ax.scatter([teacher[key]], [100 * teacher["accuracy"]], marker="*", s=160, c="k", label="teacher")
        ax.set_xscale("log")
        ax.set_xlabel(label)
        ax.set_ylabel("validation accuracy (%)")
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right")
    fig.suptitle(f"autokd study '{study.study_name}'")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


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


def pair_trials(study: optuna.Study, top: int = 3) -> list[FrozenTrial]:
    """The best pair trials: Pareto-optimal ones first, then the most accurate other pairs."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    pairs = [t for t in complete if t.user_attrs.get("config", {}).get("kind") == "pair"]
    front = {t.number for t in pareto_trials(study)}
    return sorted(pairs, key=lambda t: (t.number not in front, -float(t.user_attrs.get("accuracy", 0.0))))[:top]


def pair_table(study: optuna.Study, teacher: dict[str, Any] | None, top: int = 3, max_classes: int = 20) -> Table:
    """Routed vs oracle vs each student vs the teacher, per class, for the best pair trials."""
    trials = pair_trials(study, top)
    front = {t.number for t in pareto_trials(study)}
    table = Table(title=f"Pairs: routed vs oracle vs each student ({len(trials)} best pair trials; "
                        "test split, routing share on test)")
    for col, justify in (("trial", "right"), ("model", "left"), ("val acc", "right"), ("test acc", "right"),
                         ("routed to", "right")):
        table.add_column(col, justify=justify)
    n = len(trial_figures(trials[0]).get("test_per_class_accuracy", [])) if trials else 0
    n = n if n <= max_classes else 0  # too many classes for columns: overall figures only
    classes = study.user_attrs.get("classes") or [str(i) for i in range(n)]
    for i in range(n):
        table.add_column(str(classes[i])[:6], justify="right")

    def cells(per_class: list[float] | None) -> list[str]:
        shown = [f"{100 * v:.0f}" for v in (per_class or [])[:n]]
        return shown + [""] * (n - len(shown))

    if teacher:
        table.add_row("", "teacher", *split_accuracy_cells(teacher), "", *cells(teacher.get("per_class_test_accuracy")),
                      style="dim")
    for t in trials:
        a = trial_figures(t)
        mark = f"{t.number}{'*' if t.number in front else ''}"
        sel = a.get("test_selector_accuracy")
        sel_text = f", selector {100 * sel:.1f}% on disagreements" if sel is not None else ""
        table.add_row(mark, f"routed{sel_text}", *split_accuracy_cells(a), "", *cells(a.get("test_per_class_accuracy")),
                      style="bold")
        table.add_row("", "oracle (either right)", percent(a.get("oracle_accuracy")), percent(a.get("test_oracle_accuracy")),
                      "", *cells(a.get("test_oracle_per_class_accuracy")))
        names = a.get("students") or ["student 1", "student 2"]
        source = a.get("reused_from") or [None, None]
        val_members = a.get("student_accuracy") or [None, None]
        test_members = a.get("test_student_accuracy") or [None, None]
        shares = a.get("test_routing_share") or [0.0, 0.0]
        for j in range(2):
            name = names[j] + (f" (trial {source[j]})" if source[j] is not None else "")
            table.add_row("", name, percent(val_members[j]), percent(test_members[j]), f"{100 * shares[j]:.0f}%",
                          *cells((a.get("test_student_per_class_accuracy") or [None, None])[j]))
    return table


#: (label, metric, unit) of the before -> after columns; ``uncompressed_{metric}`` is the before.
_BEFORE_AFTER = (("val acc", "accuracy", "%"), ("test acc", "test_accuracy", "%"), ("params", "params", ""), ("size", "size_bytes", "B"),
                 ("MACs", "macs", ""), ("CPU ms", "latency_ms", "ms"))


def compression_table(study: optuna.Study) -> Table | None:
    """What compression bought and cost on the Pareto front: each figure before -> after, both measured.

    None when no Pareto trial asked for compression. A trial whose method could not handle its
    network shows the reason (``compression_skipped``) instead of figures.
    """
    trials = [t for t in pareto_trials(study) if t.user_attrs.get("config", {}).get("compress.method", "none") != "none"]
    if not trials:
        return None
    table = Table(title="What compression bought (Pareto trials; before -> after, both measured)")
    table.add_column("trial", justify="right")
    table.add_column("architecture")
    table.add_column("compression")
    for label, _, _ in _BEFORE_AFTER:
        table.add_column(label, justify="right")
    for t in trials:
        a = trial_figures(t)
        if a.get("compression_skipped"):
            table.add_row(str(t.number), a.get("architecture", "?"), f"skipped: {a['compression_skipped']}",
                          *["-"] * len(_BEFORE_AFTER))
            continue
        cells = [_before_after(a.get(f"uncompressed_{metric}"), a.get(metric), unit) for _, metric, unit in _BEFORE_AFTER]
        detail = a.get("compression_detail", "")
        table.add_row(str(t.number), a.get("architecture", "?"), f"{_compression(a)}: {detail}", *cells)
    return table


def _before_after(before: float | None, after: float | None, unit: str) -> str:
    if before is None or after is None:
        return "-"
    if unit == "%":
        return f"{100 * before:.2f} -> {100 * after:.2f} ({100 * (after - before):+.2f})"
    if unit == "ms":
        return f"{before:.3f} -> {after:.3f} ({after / before:.2f}x)" if before else "-"
    ratio = f" ({after / before:.2f}x)" if before else ""
    return f"{human(before, unit)} -> {human(after, unit)}{ratio}"


def teacher_info(study: optuna.Study) -> dict[str, Any] | None:
    return study.user_attrs.get("teacher")


def print_report(study: optuna.Study, study_cfg: StudyConfig, console: Console) -> Path:
    teacher = teacher_info(study)
    console.print(pareto_table(study, teacher))
    console.print(per_class_table(study, study.user_attrs.get("classes"), teacher))
    compressed = compression_table(study)
    if compressed is not None:
        console.print(compressed)
    if teacher and len(teacher.get("members") or []) > 1:
        console.print(teacher_table(teacher))
    if pair_trials(study):
        console.print(pair_table(study, teacher))
    counts = {s.name: len(study.get_trials(deepcopy=False, states=(s,))) for s in TrialState}
    console.print("trials: " + ", ".join(f"{k.lower()} {v}" for k, v in counts.items() if v))
    plot = pareto_plot(study, study_cfg.output_dir / "pareto.png", teacher)
    console.print(f"Pareto plot written to {plot}")
    return plot
