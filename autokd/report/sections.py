"""The report's sections, defined once: each a titled table of text cells that the console
(:mod:`autokd.report.console`) and the HTML page (:mod:`autokd.report.html`) render alike.

The front is chosen on validation accuracy (the objective); every table shows validation and
test accuracy side by side, and per-class and committee figures are the test split's (docs/methodology.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from autokd.naming import describe
from autokd.readout import duration, human, percent, pruned_reason
from autokd.ranking import kendall_tau
from autokd.record import (latency_header, retimed_ms, study_classes, study_retimings, study_teacher, trial_accuracy,
                           trial_config, trial_figures, trial_kind, trial_retimings)
from autokd.report.trials import best_single_within, committee_trials, pareto_trials, trial_seconds


@dataclass(frozen=True)
class Column:
    """A column's header, alignment (``right`` for numbers) and how a long cell wraps (rich's ``overflow``)."""

    header: str
    justify: str = "left"
    overflow: str = "ellipsis"


@dataclass(frozen=True)
class Row:
    cells: tuple[str, ...]
    style: str | None = None  # the console's (``dim``, ``bold``); HTML shows every row alike


@dataclass
class Section:
    """One table of the report: ``heading`` names it on the HTML page, ``title`` captions the table;
    ``notes`` are warnings printed after it."""

    heading: str
    title: str
    title_justify: str = "center"
    columns: list[Column] = field(default_factory=list)
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add_column(self, header: str, justify: str = "left", overflow: str = "ellipsis") -> None:
        self.columns.append(Column(header, justify, overflow))

    def add_row(self, *cells: str, style: str | None = None) -> None:
        self.rows.append(Row(tuple(cells), style))


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


#: The header of the column beside a trial's own latency: its figure in the latest interleaved re-timing.
RETIMED_HEADER = "re-timed ms"

#: Columns of a table of trials: (header, justify); ``detail`` adds the last three (the HTML report's).
_TRIAL_COLUMNS = (("trial", "right"), ("architecture", "left"), ("val acc", "right"), ("test acc", "right"),
                  ("params", "right"), ("size", "right"), ("MACs", "right"), ("CPU ms", "right"),
                  ("KD", "left"), ("epochs", "right"), ("compression", "left"))


_DETAIL_COLUMNS = (("lr", "right"), ("weight decay", "right"), ("time", "right"))


def _start(a: dict[str, Any]) -> str:
    """What a student started from weights took from the file: `` (62 loaded, 2 new: fc.bias, fc.weight)``."""
    if "weights_loaded" not in a:
        return ""
    names = a.get("weights_new_names") or []
    new = f": {', '.join(names[:2])}{', ...' if len(names) > 2 else ''}" if names else ""
    return f" ({a['weights_loaded']} loaded, {a.get('weights_new', 0)} new{new})"


def _number(value: Any) -> str:
    return "-" if value is None else f"{float(value):.3g}"


def _trials_section(heading: str, title: str, trials: list[FrozenTrial], teacher: dict[str, Any] | None,
                    detail: bool, extra: tuple[str, dict[int, str]] | None = None,
                    retimed: dict[int, str] | None = None) -> Section:
    """One row per trial (the teacher first, dimmed); ``extra``: a last column's header and cells by trial number;
    ``retimed``: a ``re-timed ms`` column beside the latency (cells by trial number)."""
    section = Section(heading, title, title_justify="left")
    columns = _TRIAL_COLUMNS + (_DETAIL_COLUMNS if detail else ()) + (((extra[0], "left"),) if extra else ())
    latency = latency_header([trial_figures(t) for t in trials])  # which backend, threads and batch timed them
    columns = tuple(pair for col, justify in columns
                    for pair in ([(latency, justify)] + ([(RETIMED_HEADER, "right")] if retimed is not None else [])
                                 if col == "CPU ms" else [(col, justify)]))
    for col, justify in columns:
        section.add_column(col, justify=justify, overflow="fold")
    if teacher:
        section.add_row("teacher", describe(teacher.get("architecture", "?")), *split_accuracy_cells(teacher),
                        human(teacher.get("params")), human(teacher.get("size_bytes"), "B"), human(teacher.get("macs")),
                        f"{teacher.get('latency_ms', 0):.3f}", *["-"] * (len(columns) - 8), style="dim")
    for t in trials:
        a = trial_figures(t)
        cfg = a.get("config", {})
        cells = [str(t.number), describe(a.get("architecture", "?")) + _start(a), *split_accuracy_cells(a),
                 human(a.get("params")),
                 human(a.get("size_bytes"), "B"), human(a.get("macs")), f"{a.get('latency_ms', 0):.3f}",
                 *([retimed.get(t.number, "-")] if retimed is not None else []),
                 _kd(a), str(cfg.get("epochs", "-")), _compression(a)]
        if detail:
            cells += [_number(cfg.get("lr")), _number(cfg.get("weight_decay")), duration(trial_seconds(t))]
        if extra:
            cells.append(extra[1].get(t.number, ""))
        section.add_row(*cells)
    return section


def pareto_section(study: optuna.Study, teacher: dict[str, Any] | None = None, detail: bool = False) -> Section:
    """The Pareto front, most accurate first, below the teacher; ``detail``: learning rate, weight decay and
    time too."""
    trials = pareto_trials(study)
    title = (f"Pareto front of '{study.study_name}' ({len(trials)} of "
             f"{len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))} complete trials), "
             "most accurate on validation first; chosen on validation, test reported only")
    retimings = study_retimings(study)
    if not retimings:
        return _trials_section("Pareto front", title, trials, teacher, detail)
    latest = {t.number: ms_cell(trial_retimings(retimings, t.number)[-1]) for t in trials
              if trial_retimings(retimings, t.number)}
    return _trials_section("Pareto front", title + f"; {RETIMED_HEADER}: the latest interleaved re-timing",
                           trials, teacher, detail, retimed=latest)


def ms_cell(value: float | None) -> str:
    """A latency in ms to 3 significant digits (onnxruntime figures of small students are 0.00x ms)."""
    return "-" if value is None else f"{value:.3g}" if value < 1 else f"{value:.3f}"


def retiming_section(study: optuna.Study, last: int | None = 3) -> Section | None:
    """The front's interleaved re-timings beside the trials' own figures (None before any re-timing).

    One column per re-timing (the ``last`` ones; all with None), headed by its date and rounds; rows are
    the current front's members, fastest in the latest re-timing first. Its notes give the rank
    agreement (Kendall tau) of the last two re-timings and of the trials' own figures with the latest.
    """
    retimings = study_retimings(study)
    if not retimings:
        return None
    shown = retimings if last is None else retimings[-last:]
    front = pareto_trials(study)
    newest = {t.number: trial_retimings(retimings, t.number)[-1:] for t in front}
    rows = sorted(front, key=lambda t: (not newest[t.number], newest[t.number] or [0.0], t.number))
    agreement = "".join(f"; {line}" for line in rank_agreement(retimings, front))
    section = Section("Interleaved re-timings", f"Interleaved re-timings: the front's members timed together "
                      f"({len(shown)} of {len(retimings)} re-timings; median over rounds, ms), fastest in the "
                      f"latest first; per-trial: each timed alone when its trial ended{agreement}",
                      title_justify="left")
    section.add_column("trial", justify="right")
    section.add_column("architecture", overflow="fold")
    section.add_column(f"per-trial {latency_header([trial_figures(t) for t in front])}", justify="right")
    for r in shown:
        section.add_column(f"{str(r.get('date', '?'))[5:16].replace('T', ' ')} {r.get('trigger', '?')} "
                           f"({r.get('rounds')} rounds)", justify="right")
    for t in rows:
        a = trial_figures(t)
        section.add_row(str(t.number), describe(a.get("architecture", "?")), ms_cell(a.get("latency_ms")),
                        *[ms_cell(retimed_ms(r, t.number)) for r in shown])
    skipped = sorted(set().union(*(r.get("skipped") or {} for r in retimings)), key=int)
    if skipped:
        section.notes.append(f"not re-timed: trial(s) {', '.join(skipped)} (committees: their latency is per input "
                             "over a routed stream of validation images)")
    return section


def rank_agreement(retimings: list[dict[str, Any]], front: list[FrozenTrial]) -> list[str]:
    """How far the orders by latency agree (Kendall tau, 3 members or more): the last two re-timings, and
    the trials' own figures against the latest."""
    notes = []
    both = [t.number for t in front if len(retimings) > 1 and retimed_ms(retimings[-1], t.number) is not None
            and retimed_ms(retimings[-2], t.number) is not None]
    if len(both) > 2:
        tau = kendall_tau([retimed_ms(retimings[-2], n) for n in both], [retimed_ms(retimings[-1], n) for n in both])
        notes.append(f"the last two re-timings agree on the order of {len(both)} members with Kendall tau {tau:.2f}")
    own = [t for t in front if retimed_ms(retimings[-1], t.number) is not None]
    if len(own) > 2:
        tau = kendall_tau([trial_figures(t).get("latency_ms") or 0.0 for t in own],
                          [retimed_ms(retimings[-1], t.number) for t in own])
        notes.append(f"per-trial figures vs the latest re-timing: Kendall tau {tau:.2f}")
    return notes


def off_front_section(study: optuna.Study, detail: bool = True) -> Section:
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
    return _trials_section("Trials off the front", title, off, None, detail,
                           ("beaten by", {t.number: why(t) for t in off}))


def unfinished_section(study: optuna.Study) -> Section | None:
    """Failed and pruned trials with why (the first line of the error; the full traceback is in the log)."""
    trials = sorted(study.get_trials(deepcopy=False, states=(TrialState.FAIL, TrialState.PRUNED)),
                    key=lambda t: t.number)
    if not trials:
        return None
    section = Section("Failed and pruned trials",
                      f"Failed and pruned trials ({len(trials)}); the full error is in each trial's log",
                      title_justify="left")
    for col, justify in (("trial", "right"), ("state", "left"), ("architecture", "left"), ("reason", "left"),
                         ("time", "right"), ("log", "left")):
        section.add_column(col, justify=justify, overflow="fold")
    for t in trials:
        a = trial_figures(t)
        reason = a.get("failed_because") or (f"pruned {pruned_reason(t)}" if t.state == TrialState.PRUNED else "unknown")
        section.add_row(str(t.number), t.state.name, describe(a["architecture"]) if a.get("architecture") else "-",
                        str(reason).splitlines()[0] if str(reason).strip() else "unknown",
                        duration(trial_seconds(t)), a.get("log_path") or "-")
    return section


def per_class_section(study: optuna.Study, classes: list[str] | None, teacher: dict[str, Any] | None,
                      top: int = 3) -> Section:
    trials = pareto_trials(study)[:top]
    key = "per_class_test_accuracy"
    section = Section("Per-class accuracy",
                      f"Per-class test accuracy of the {len(trials)} most accurate (on validation) Pareto trials")
    section.add_column("class", overflow="fold")
    if teacher and teacher.get(key):
        section.add_column("teacher", justify="right")
    for t in trials:
        section.add_column(f"#{t.number}", justify="right")
    per_class = [trial_figures(t).get(key, []) for t in trials]
    n = len(per_class[0]) if trials else 0
    for i in range(n):
        row = [classes[i] if classes and i < len(classes) else str(i)]
        if teacher and teacher.get(key):
            row.append(f"{100 * teacher[key][i]:.1f}")
        row += [f"{100 * values[i]:.1f}" for values in per_class]
        section.add_row(*row)
    return section


def teacher_section(teacher: dict[str, Any]) -> Section:
    """The teacher's members, their weights and accuracies, next to the ensemble's accuracy."""
    section = Section("Teacher ensemble", f"Teacher ({teacher.get('kind', 'single')})")
    for col, justify in (("member", "left"), ("weight", "right"), ("val acc", "right"), ("test acc", "right")):
        section.add_column(col, justify=justify)
    members = teacher.get("members") or []
    val = teacher.get("member_validation_accuracy") or [None] * len(members)
    test = teacher.get("member_test_accuracy") or [None] * len(members)
    weights = teacher.get("weights") or [None] * len(members)
    for name, weight, v, t in zip(members, weights, val, test):
        section.add_row(name, "-" if weight is None else f"{weight:.3f}", percent(v), percent(t))
    name = "ensemble" if len(members) > 1 else "teacher"
    joint = bool(teacher.get("joint_head"))
    section.add_row(f"{name} (joint head)" if joint else name, "-" if joint else "1.000",
                    *split_accuracy_cells(teacher), style="bold")
    return section


def committee_section(study: optuna.Study, top: int | None = 5) -> Section:
    """Each committee above its members, the oracle and the best single student at equal or lower MACs;
    its notes warn of degenerate routing and of committees worse than a member (:func:`committee_warnings`)."""
    trials = committee_trials(study, top)
    front = {t.number for t in pareto_trials(study)}
    section = Section("Committees (pairs, cascades)",
                      f"Committees: each beside its members and the best single student at no more MACs "
                      f"({len(trials)} shown, * on the front; routing share and MACs on test)",
                      title_justify="left", notes=committee_warnings(study))
    for col, justify in (("trial", "right"), ("model", "left"), ("val acc", "right"), ("test acc", "right"),
                         ("MACs/input", "right"), ("to large", "right")):
        section.add_column(col, justify=justify, overflow="fold")
    for t in trials:
        _committee_rows(section, study, t, t.number in front)
    return section


def _committee_rows(section: Section, study: optuna.Study, t: FrozenTrial, on_front: bool) -> None:
    """A committee's rows: itself (bold), its oracle, its two members, the best single at no more MACs (dim)."""
    a = trial_figures(t)
    m = _members(a)
    share = (a.get("test_routing_share") or [None, None])[1]
    section.add_row(f"{t.number}{'*' if on_front else ''}", _routing(a), *split_accuracy_cells(a),
                    human(a.get("test_macs", a.get("macs"))), "-" if share is None else f"{100 * share:.1f}%",
                    style="bold")
    section.add_row("", "oracle (either member right)", percent(a.get("oracle_accuracy")),
                    percent(a.get("test_oracle_accuracy")), "", "")
    for j, role in enumerate(("cheap", "large")):
        source = f" (trial {m['trials'][j]})" if m["trials"][j] is not None else " (trained for it)"
        section.add_row("", f"{role} member {m['names'][j]}{source}", percent(m["val"][j]), percent(m["test"][j]),
                        human(m["macs"][j]), "")
    best = best_single_within(study, float(a.get("macs", 0)))
    if best is not None:
        b = trial_figures(best)
        section.add_row("", f"best single at <= MACs: trial {best.number} {describe(b.get('architecture', '?'))}",
                        *split_accuracy_cells(b), human(b.get("macs")), "", style="dim")
    else:
        section.add_row("", "best single at <= MACs: none that cheap", "", "", "", "", style="dim")


def compression_section(study: optuna.Study) -> Section | None:
    """What compression bought and cost on the Pareto front: each figure before -> after, both measured.

    None when no Pareto trial asked for compression. A trial whose method could not handle its
    network shows the reason (``compression_skipped``) instead of figures.
    """
    trials = [t for t in pareto_trials(study) if trial_config(t).get("compress.method", "none") != "none"]
    if not trials:
        return None
    section = Section("Compression", "What compression bought (Pareto trials; before -> after, both measured)")
    section.add_column("trial", justify="right")
    section.add_column("architecture", overflow="fold")
    section.add_column("compression")
    for label, _, _ in _BEFORE_AFTER:
        section.add_column(label, justify="right")
    for t in trials:
        a = trial_figures(t)
        if a.get("compression_skipped"):
            section.add_row(str(t.number), describe(a.get("architecture", "?")), f"skipped: {a['compression_skipped']}",
                            *["-"] * len(_BEFORE_AFTER))
            continue
        cells = [_before_after(a.get(f"uncompressed_{metric}"), a.get(metric), unit) for _, metric, unit in _BEFORE_AFTER]
        detail = rounded(str(a.get("compression_detail", "")))
        section.add_row(str(t.number), describe(a.get("architecture", "?")), f"{_compression(a)}: {detail}", *cells)
    return section


def report_sections(study: optuna.Study, full: bool = False) -> list[Section]:
    """The report's sections in order: what ``autokd report`` prints, or with ``full`` what ``report.html``
    holds (every front member's per-class figures and every committee, learning rate, weight decay and time
    on the front, and the trials off it, failed and pruned)."""
    teacher = study_teacher(study)
    sections: list[Section | None] = [pareto_section(study, teacher, detail=full),
                                      retiming_section(study, last=None if full else 3)]
    if full:
        sections += [off_front_section(study), unfinished_section(study)]
    top = len(pareto_trials(study)) if full else 3
    sections += [per_class_section(study, study_classes(study), teacher, top=top), compression_section(study)]
    if teacher and len(teacher.get("members") or []) > 1:
        sections.append(teacher_section(teacher))
    if committee_trials(study):
        sections.append(committee_section(study, top=None if full else 5))
    return [s for s in sections if s is not None]


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
