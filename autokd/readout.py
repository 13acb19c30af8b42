"""How figures read to a person: numbers, percentages, durations, objectives, one line per trial.

Shared by the search's progress lines and the report's tables, so both read alike.
"""

from __future__ import annotations

from optuna.trial import FrozenTrial, TrialState

from autokd.naming import describe
from autokd.record import failed_because, log_path, pruned_because, trial_figures


def human(n: float | None, unit: str = "") -> str:
    if n is None:
        return "-"
    for suffix, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f}{suffix}{unit}"
    return f"{n:.0f}{unit}" if float(n).is_integer() else f"{n:.3g}{unit}"


def percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}%"


def duration(seconds: float | None) -> str:
    """``8.4 s``, ``3 min 05 s``, ``1 h 02 min``."""
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes} min {secs:02d} s" if minutes < 60 else f"{minutes // 60} h {minutes % 60:02d} min"


def format_objective(name: str, value: float | None) -> str:
    """One objective's value as a person reads it: ``97.22%``, ``12.3k``, ``48.1kB``, ``0.412 ms``."""
    if value is None:
        return "-"
    if name == "accuracy":
        return percent(value)
    if name == "latency_ms":
        return f"{value:.3f} ms"
    return human(value, "B" if name == "size_bytes" else "")


def pruned_reason(trial: FrozenTrial) -> str:
    """Why a PRUNED trial stopped: ``at epoch 2 by early stopping: trial 3 (...) ...``, or ``at epoch 2`` (ASHA)."""
    a = trial.user_attrs
    at = f"at epoch {a['epoch']}" if "epoch" in a else ""
    because = pruned_because(trial)
    return f"{at} by early stopping: {because}".strip() if because else at


def trial_line(trial: FrozenTrial) -> str:
    """One line per finished trial, as a search prints it (both executors)."""
    a = trial_figures(trial)
    if trial.state != TrialState.COMPLETE:
        why = failed_because(trial) or pruned_reason(trial)
        log = f" (log: {log_path(trial)})" if log_path(trial) else ""
        return f"trial {trial.number:>3} {trial.state.name} {why}{log}".rstrip()
    return (f"trial {trial.number:>3} {describe(a.get('architecture', '?')):<48} val {percent(a.get('validation_accuracy'))} "
            f"test {percent(a.get('test_accuracy'))}  params {a['params']:>9,}  {a['latency_ms']:.3f} ms  "
            f"({a['trial_seconds']:.1f} s)")
