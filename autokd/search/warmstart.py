"""Warm starts in the study: enqueue fixed configurations so they run before sampled ones.

:func:`front_warm` reads another study's Pareto front (its stored trial configs) and keeps the
configurations that fit this search space (:func:`autokd.warmstart.fixed_params`, not strict);
:func:`enqueue_warm` queues configurations with Optuna's ``enqueue_trial(skip_if_exists=True)``: a
configuration the study already holds, in any state (finished, failed, running or still queued), is
not queued again, so a resumed study never runs one twice. Queued trials are asked first, in
order, by either executor (:func:`autokd.search.study.propose`), and count toward ``n_trials``.
"""

from __future__ import annotations

import optuna

from autokd.config import StudyConfig
from autokd.record import enqueued_attrs, trial_config
from autokd.search.study import finished_count
from autokd.space import SearchSpace
from autokd.warmstart import Unfit, Warm, WarmStart, fixed_params, not_enqueued_line


def front_warm(other: optuna.Study, label: str, space: SearchSpace) -> WarmStart:
    """The Pareto front of ``other`` (feasible, by its own objectives and validation figures), in trial
    order, as configurations of ``space``; each trial that does not fit is named with why."""
    configs, skipped = [], []
    for trial in sorted(other.best_trials, key=lambda t: t.number):
        params = trial_config(trial)
        kind = params.get("kind", "single")
        try:
            if not params:
                raise Unfit("no stored configuration")
            if kind != "single":
                raise Unfit(f"a {kind}: only single students are enqueued")
            fixed, config = fixed_params(space, params, strict=False)
        except Unfit as err:
            skipped.append(f"trial {trial.number} ({err})")
            continue
        configs.append(Warm(fixed, config, f"trial {trial.number} of study {label}"))
    return WarmStart(tuple(configs), tuple(skipped))


def enqueue_warm(study: optuna.Study, warm: WarmStart) -> tuple[int, int]:
    """Queue ``warm``'s configurations in order; returns (queued now, already in the study)."""
    before = len(study.get_trials(deepcopy=False))
    for config in warm.configs:
        study.enqueue_trial(config.params, user_attrs=enqueued_attrs(config.source), skip_if_exists=True)
    queued = len(study.get_trials(deepcopy=False)) - before
    return queued, len(warm.configs) - queued


def enqueue_lines(study: optuna.Study, study_cfg: StudyConfig, warm: WarmStart) -> list[str]:
    """Queue ``warm`` unless the study's budget is already spent; the lines a search prints about it."""
    lines = [not_enqueued_line(warm.skipped)] if warm.skipped else []
    if not warm.configs or (study_cfg.n_trials is not None and finished_count(study) >= study_cfg.n_trials):
        return lines
    queued, present = enqueue_warm(study, warm)
    held = f" ({present} already in the study)" if present else ""
    return lines + [f"enqueued {queued} configuration{'s' * (queued != 1)} to run before sampled ones{held}"]


__all__ = ["Warm", "WarmStart", "enqueue_lines", "enqueue_warm", "front_warm"]
