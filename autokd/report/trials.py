"""Which trials a report shows: the front, the failed, the committees, the runs; read through Optuna's API only."""

from __future__ import annotations

from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from autokd.readout import format_objective
from autokd.record import (failed_because, is_duplicate, is_rejected, is_stopped, log_path, recorded_seconds,
                           study_objectives, trial_accuracy, trial_driver, trial_figures, trial_kind, trial_macs)


def failed_trials(told: list[FrozenTrial]) -> list[FrozenTrial]:
    """Trials that failed while training (not duplicates replaced before training, not interrupted ones)."""
    return [t for t in told if t.state == TrialState.FAIL and not is_duplicate(t) and not is_rejected(t)
            and not is_stopped(t)]


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


def trial_seconds(trial: FrozenTrial) -> float | None:
    """How long a trial took: its recorded training and measuring time, else its start to finish in the database."""
    recorded = recorded_seconds(trial)
    if recorded is not None:
        return recorded
    if trial.datetime_start is not None and trial.datetime_complete is not None:
        return (trial.datetime_complete - trial.datetime_start).total_seconds()
    return None


def committee_trials(study: optuna.Study, top: int | None = 5) -> list[FrozenTrial]:
    """Complete committee trials (pairs, cascades): Pareto-optimal ones first, then by validation accuracy."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    committees = [t for t in complete if trial_kind(trial_figures(t)) != "single"]
    front = {t.number for t in pareto_trials(study)}
    ranked = sorted(committees, key=lambda t: (t.number not in front, -trial_accuracy(t)))
    return ranked if top is None else ranked[:top]


def best_single_within(study: optuna.Study, macs: float) -> FrozenTrial | None:
    """The single student with the best validation accuracy among those costing at most ``macs`` MACs."""
    singles = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
               if trial_kind(trial_figures(t)) == "single" and trial_macs(t) <= macs]
    return max(singles, key=trial_accuracy, default=None)


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


def trial_counts(study: optuna.Study) -> str:
    """``trials: complete 16, fail 1``."""
    counts = {s.name: len(study.get_trials(deepcopy=False, states=(s,))) for s in TrialState}
    return "trials: " + ", ".join(f"{k.lower()} {v}" for k, v in counts.items() if v)
