"""Opening studies and writing trial results: the one door to the database."""

from __future__ import annotations

import math
from typing import Any

import optuna
from optuna.trial import TrialState

from autokd.config import CONSTRAINTS, StudyConfig
from autokd.errors import AutokdError
from autokd.search.storage import open_storage

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)

#: Metrics too large or too nested for a user attribute stay in the trial's artifacts.
_SKIP_ATTRS = {"_state"}


def make_sampler(study: StudyConfig) -> optuna.samplers.BaseSampler:
    if study.sampler == "nsga2":
        population = max(4, min(50, (study.n_trials or 40) // 3))
        return optuna.samplers.NSGAIISampler(population_size=population, seed=study.seed)
    if study.sampler == "random":
        return optuna.samplers.RandomSampler(seed=study.seed)
    startup = max(4, min(10, (study.n_trials or 30) // 3))
    return optuna.samplers.TPESampler(n_startup_trials=startup, multivariate=True, constant_liar=True,
                                      seed=study.seed)


def open_study(study: StudyConfig, *, create: bool = True, heartbeat: bool = True) -> optuna.Study:
    """Create or load the study named in ``study``; refuse when stored directions differ.

    Optuna silently keeps the stored directions when they differ from the ones asked for, so a
    resumed study whose YAML changed its objectives would optimise the wrong thing: refuse.
    """
    storage = open_storage(study.storage_url, heartbeat=heartbeat)
    names = [s.study_name for s in optuna.get_all_study_summaries(storage, include_best_trial=False)]
    if study.name in names:
        existing = optuna.load_study(study_name=study.name, storage=storage, sampler=make_sampler(study))
        stored = [d.name.lower() for d in existing.directions]
        stored_objectives = existing.user_attrs.get("objectives")
        if stored != study.directions or (stored_objectives and stored_objectives != study.objectives):
            raise AutokdError(
                f"study '{study.name}' is stored with objectives {stored_objectives or stored}, "
                f"the YAML asks for {study.objectives}",
                "restore the original objectives, or give the study a new name")
        return existing
    if not create:
        raise AutokdError(f"no study named '{study.name}' in {_safe(study)}",
                          f"run 'autokd search' first, or pick one of: {', '.join(names) or '(none stored)'}")
    created = optuna.create_study(study_name=study.name, storage=storage, directions=study.directions,
                                  sampler=make_sampler(study), load_if_exists=True)
    created.set_user_attr("objectives", study.objectives)
    return created


def _safe(study: StudyConfig) -> str:
    from autokd.search.storage import redact_url

    return redact_url(study.storage_url)


def finished_count(study: optuna.Study) -> int:
    """Trials that count against the budget: COMPLETE and PRUNED (FAIL ones are retried)."""
    return len(study.get_trials(deepcopy=False, states=FINISHED))


def objective_values(metrics: dict[str, Any], study: StudyConfig) -> list[float]:
    return [float(metrics[name]) for name in study.objectives]


def constraint_values(metrics: dict[str, Any], study: StudyConfig) -> dict[str, float]:
    """Optuna convention: a constraint is satisfied when its value is <= 0."""
    values = {}
    for key, bound in study.constraints.items():
        metric, kind = CONSTRAINTS[key]
        value = float(metrics[metric])
        values[key] = value - bound if kind == "max" else bound - value
    return values


def user_attrs(metrics: dict[str, Any]) -> dict[str, Any]:
    """JSON-safe metrics for ``trial.set_user_attr``: scalars, strings, lists of numbers."""
    attrs = {}
    for key, value in metrics.items():
        if key in _SKIP_ATTRS:
            continue
        if isinstance(value, float) and not math.isfinite(value):
            value = None
        attrs[key] = value
    return attrs


def record_metrics(trial: optuna.Trial, metrics: dict[str, Any], study: StudyConfig) -> list[float]:
    """Store every figure on the trial (user attrs + constraints) and return the objective values."""
    for key, value in user_attrs(metrics).items():
        trial.set_user_attr(key, value)
    for key, value in constraint_values(metrics, study).items():
        trial.set_constraint(key, value)
    return objective_values(metrics, study)
