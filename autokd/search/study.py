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


# --------------------------------------------------------------------------- resume

#: System attribute naming the driver process that holds a RUNNING trial ("host:pid:start").
DRIVER_ATTR = "autokd:driver"


def driver_id() -> str:
    """This process as ``host:pid:start-ticks``; the start time guards against a reused pid."""
    import os
    import socket

    return f"{socket.gethostname()}:{os.getpid()}:{_start_ticks(os.getpid())}"


def _start_ticks(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return "?"


def _driver_is_dead(owner: str | None) -> bool:
    """True only when the owner ran on this host and its process is gone (other hosts: heartbeat)."""
    import os
    import socket

    if not owner:
        return False
    host, _, rest = owner.partition(":")
    pid, _, ticks = rest.partition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return ticks not in ("?", _start_ticks(int(pid)))


def claim_trial(study: optuna.Study, trial_id: int) -> None:
    """Mark a RUNNING trial as held by this driver and start its heartbeat."""
    storage = study._storage
    storage.set_trial_system_attr(trial_id, DRIVER_ATTR, driver_id())
    if storage.get_heartbeat_interval() is not None:
        storage.record_heartbeat(trial_id)


def reclaim_stale_trials(study: optuna.Study, resume_path: Any = None) -> list[int]:
    """Fail the RUNNING trials whose driver is gone and re-enqueue their parameters.

    A driver is gone when its heartbeat is older than the storage's grace period, or at once when
    it ran on this host and its process no longer exists (a SIGKILLed ``autokd search``). The
    re-enqueued trial carries ``retry_of`` and, when ``resume_path(number)`` names an existing epoch
    checkpoint, ``resume_from`` so training continues from its last epoch. Safe against other
    drivers doing the same: the FAIL transition locks the row, so each trial is re-enqueued once.
    Returns the numbers of the reclaimed trials.
    """
    from pathlib import Path

    from optuna.exceptions import UpdateFinishedTrialError

    storage = study._storage
    running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    if not running:
        return []
    stale_ids: set[int] = set()
    if storage.get_heartbeat_interval() is not None:
        stale_ids = set(storage._get_stale_trial_ids(study._study_id))
    reclaimed = []
    for trial in running:
        if trial._trial_id not in stale_ids and not _driver_is_dead(trial.system_attrs.get(DRIVER_ATTR)):
            continue
        try:
            storage.set_trial_user_attr(trial._trial_id, "failed_because", "driver died")
            if not storage.set_trial_state_values(trial._trial_id, TrialState.FAIL):
                continue
        except UpdateFinishedTrialError:
            continue  # another driver reclaimed it first
        attrs: dict[str, Any] = {"retry_of": trial.number}
        checkpoint = Path(resume_path(trial.number)) if resume_path is not None else None
        if checkpoint is not None and checkpoint.is_file():
            attrs["resume_from"] = str(checkpoint)
        elif trial.user_attrs.get("resume_from"):
            attrs["resume_from"] = trial.user_attrs["resume_from"]
        if trial.params:  # a trial killed before its first suggestion has nothing to replay
            study.enqueue_trial(trial.params, user_attrs=attrs, skip_if_exists=False)
        reclaimed.append(trial.number)
    return reclaimed
