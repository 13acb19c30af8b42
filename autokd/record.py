"""A trial's record: the one place that knows the names of a trial's (and a study's) attributes.

A trial is written once when it starts (:func:`record_start`: its config, architecture, the
teacher's accuracy, the executor) and once when it ends (:func:`record_result` with its figures,
or :func:`record_failed` with why); everything else reads it back through the named readers here
(:func:`trial_figures` for every figure at once). The search, the report, the CLI and the
benchmarks all go through this module, so a renamed attribute changes here only.

Example:
    >>> from optuna.trial import create_trial
    >>> t = create_trial(values=[0.9], user_attrs={"accuracy": 0.9, METRICS_ATTR: {"epochs_run": 3}})
    >>> trial_figures(t)["epochs_run"], trial_accuracy(t)
    (3, 0.9)
"""

from __future__ import annotations

import math
from typing import Any

from autokd.config import CONSTRAINTS, StudyConfig, latency_label

#: Figures stored as user attributes of their own: what optuna-dashboard lists and reports filter on.
#: Every other figure goes into one JSON attribute (``METRICS_ATTR``; read with ``trial_figures``).
SCALAR_ATTRS = ("accuracy", "validation_accuracy", "test_accuracy", "params", "size_bytes", "macs", "latency_ms",
                "kind", "compression", "weights_path", "trial_seconds")
#: User attribute holding every figure of a trial beyond the few scalars stored on their own.
METRICS_ATTR = "metrics"
#: System attribute naming the driver process that holds a RUNNING trial ("host:pid:start").
DRIVER_ATTR = "autokd:driver"
#: ``failed_because`` of a trial its driver stopped (Ctrl-C): the local executor's, then Ray's.
STOPPED_REASONS = ("interrupted", "driver stopped")
#: Figures a pruned trial keeps from its last report (Ray's scheduler).
PRUNED_FIGURES = ("accuracy", "epoch", "loss")
#: User attribute of a trial queued as a warm start (``enqueue:``, ``--enqueue-from``): where its configuration came from.
ENQUEUED_ATTR = "enqueued_from"
#: What a re-enqueued trial carries over: the trial it repeats, the checkpoint it resumes from, and
#: where a warm-started configuration came from.
_RETRY_ATTRS = ("retry_of", "resume_from", ENQUEUED_ATTR)
#: User attribute holding a trial's validation accuracy after each epoch (:func:`record_curve`).
CURVE_ATTR = "epoch_accuracy"
#: User attribute holding what the untrained student costs (:func:`record_costs_before_training`).
COSTS_ATTR = "costs_before_training"
#: The objectives of a study that stored none (older studies).
DEFAULT_OBJECTIVES = ("accuracy", "params", "latency_ms")
#: Study user attributes holding the front's interleaved re-timings, one each: ``retiming:<UTC date>:<id>``.
RETIMING_PREFIX = "retiming:"


# --------------------------------------------------------------------------- writing a trial


def json_safe(metrics: dict[str, Any]) -> dict[str, Any]:
    """Metrics fit for a user attribute: a non-finite float becomes None."""
    return {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in metrics.items()}


def record_start(trial: Any, config: Any, teacher_accuracy: float | None, executor: str) -> None:
    """What every trial records when it starts, whichever executor runs it (``config``: a ``TrialConfig``)."""
    trial.set_user_attr("config", config.to_params())
    trial.set_user_attr("architecture", config.describe())
    trial.set_user_attr("teacher_accuracy", teacher_accuracy)
    trial.set_user_attr("executor", executor)


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


def record_result(trial: Any, metrics: dict[str, Any], study: StudyConfig) -> list[float]:
    """Store a trial's figures (a few scalar attributes, one JSON attribute, its constraints); returns its objectives.

    About a dozen database writes per trial instead of one per figure.
    """
    safe = json_safe(metrics)
    for key in SCALAR_ATTRS:
        if key in safe:
            trial.set_user_attr(key, safe[key])
    trial.set_user_attr(METRICS_ATTR, {k: v for k, v in safe.items() if k not in SCALAR_ATTRS})
    for key, value in constraint_values(metrics, study).items():
        trial.set_constraint(key, value)
    return objective_values(metrics, study)


def record_failed(trial: Any, reason: str, log_path: str | None = None) -> None:
    """Why a trial failed (the first line of its error, or ``interrupted``, ...) and where its log is."""
    trial.set_user_attr("failed_because", reason)
    if log_path is not None:
        trial.set_user_attr("log_path", str(log_path))


def record_duplicate(trial: Any, twin: int) -> None:
    """A proposal that repeats trial ``twin``: it is told FAIL and never trains."""
    trial.set_user_attr("duplicate_of", twin)
    record_failed(trial, f"duplicate of trial {twin}: replaced before training")


def record_pruned(trial: Any, last_report: dict[str, Any], reason: str | None = None) -> None:
    """The figures a pruned trial keeps from its last report, and why early stopping stopped it (ASHA: no reason)."""
    for key in PRUNED_FIGURES:
        if last_report.get(key) is not None:
            trial.set_user_attr(key, last_report[key])
    if reason is not None:
        trial.set_user_attr("pruned_because", reason)


def record_curve(trial: Any, curve: list[float | None]) -> None:
    """The trial's validation accuracy after each epoch so far (``None`` for epochs it did not run here:
    a resumed trial's earlier ones); rewritten after every epoch."""
    trial.set_user_attr(CURVE_ATTR, list(curve))


def record_costs_before_training(trial: Any, costs: dict[str, float]) -> None:
    """What the untrained student costs (params, bytes, MACs; latency when it was timed): early stopping's figures."""
    trial.set_user_attr(COSTS_ATTR, dict(costs))


def record_weights_artifact(trial: Any, artifact_id: str) -> None:
    trial.set_user_attr("weights_artifact", artifact_id)


def retry_attrs(trial: Any, checkpoint: Any = None) -> dict[str, Any]:
    """The user attributes of a re-enqueued copy of ``trial``: the trial it repeats (the first one of a
    chain of retries) and the epoch checkpoint it resumes from (``checkpoint`` if given, else the one
    ``trial`` itself resumed from)."""
    attrs: dict[str, Any] = {"retry_of": trial.user_attrs.get("retry_of", trial.number)}
    if trial.user_attrs.get(ENQUEUED_ATTR):  # a warm start stays one when it resumes
        attrs[ENQUEUED_ATTR] = trial.user_attrs[ENQUEUED_ATTR]
    if checkpoint is not None:
        attrs["resume_from"] = str(checkpoint)
    elif trial.user_attrs.get("resume_from"):  # killed again before its first new epoch
        attrs["resume_from"] = trial.user_attrs["resume_from"]
    return attrs


def carried_attrs(trial: Any) -> dict[str, Any]:
    """The retry attributes of ``trial`` that a trial given back to the queue keeps."""
    return {k: v for k, v in trial.user_attrs.items() if k in _RETRY_ATTRS}


def enqueued_attrs(source: str) -> dict[str, Any]:
    """The user attributes of a warm-start configuration queued before sampling: where it came from
    (``enqueue[0] of studies/x.yaml``, ``trial 7 of study digits-a``)."""
    return {ENQUEUED_ATTR: source}


def queued_attrs(because: str) -> dict[str, Any]:
    """The user attributes of a trial the search queued itself, saying why."""
    return {"queued_because": because}


# --------------------------------------------------------------------------- reading a trial


def trial_figures(trial: Any) -> dict[str, Any]:
    """Every figure of a trial: its user attributes with the ``metrics`` JSON attribute unpacked."""
    figures = dict(trial.user_attrs)
    figures.update(figures.pop(METRICS_ATTR, None) or {})
    return figures


def trial_kind(figures: dict[str, Any]) -> str:
    """The trial's ``kind`` user attribute (``single``, ``pair``, ``cascade``, ...); its config's for older trials."""
    return str(figures.get("kind") or figures.get("config", {}).get("kind") or "single")


def trial_config(trial: Any) -> dict[str, Any]:
    """The trial's resolved config as stored (``TrialConfig.to_params``); empty before it started."""
    return trial.user_attrs.get("config") or {}


def trial_architecture(trial: Any) -> str | None:
    return trial.user_attrs.get("architecture")


def trial_accuracy(trial: Any) -> float:
    """The objective accuracy (validation); 0 for a trial without one."""
    return float(trial.user_attrs.get("accuracy", 0.0))


def latency_source(figures: dict[str, Any]) -> str:
    """What produced a trial's ``latency_ms`` (``ORT ms (1 thr, b1)``); trials stored before backends
    were recorded were timed in eager PyTorch at batch 1."""
    return latency_label(figures.get("latency_backend"), figures.get("latency_threads"), figures.get("latency_batch"))


def latency_header(figures: list[dict[str, Any]]) -> str:
    """A latency column's header: what produced every figure in it, or ``latency ms (mixed)``."""
    labels = {latency_source(f) for f in figures if f.get("latency_ms") is not None}
    return labels.pop() if len(labels) == 1 else "latency ms (mixed)" if labels else "CPU ms"


def record_rejected(trial: Any, constraint: str, value: float, bound: float) -> None:
    """A proposal whose cost breaks a constraint before training: told FAIL, never trained, replaced."""
    trial.set_user_attr("rejected_because", {"constraint": constraint, "value": value, "bound": bound})
    record_failed(trial, f"{constraint}: {value:g} breaks the bound {bound:g} before training; replaced")


def is_rejected(trial: Any) -> bool:
    return "rejected_because" in trial.user_attrs


def trial_macs(trial: Any) -> float:
    """MACs per input; infinite for a trial without them."""
    return trial.user_attrs.get("macs", float("inf"))


def recorded_seconds(trial: Any) -> float | None:
    """The trial's recorded training and measuring time, if any."""
    recorded = trial.user_attrs.get("trial_seconds")
    return None if recorded is None else float(recorded)


def weights_path(trial: Any) -> str | None:
    return trial.user_attrs.get("weights_path")


def weights_artifact(trial: Any) -> str | None:
    return trial.user_attrs.get("weights_artifact")


def failed_because(trial: Any) -> str | None:
    return trial.user_attrs.get("failed_because")


def pruned_because(trial: Any) -> str | None:
    """Why early stopping stopped a PRUNED trial (None for one ASHA stopped, or any other trial)."""
    return trial.user_attrs.get("pruned_because")


def trial_curve(trial: Any) -> list[float | None]:
    """The trial's validation accuracy after each epoch (:func:`record_curve`); empty when none was stored."""
    return list(trial.user_attrs.get(CURVE_ATTR) or [])


def costs_before_training(trial: Any) -> dict[str, float]:
    return dict(trial.user_attrs.get(COSTS_ATTR) or {})


def log_path(trial: Any) -> str | None:
    return trial.user_attrs.get("log_path")


def is_duplicate(trial: Any) -> bool:
    """A proposal replaced before training because it repeated another trial."""
    return "duplicate_of" in trial.user_attrs


def is_stopped(trial: Any) -> bool:
    """A trial its driver stopped (Ctrl-C, a driver shutdown), not one that failed on its own."""
    return failed_because(trial) in STOPPED_REASONS


def is_retry(trial: Any) -> bool:
    """A re-enqueued trial (its driver died or was stopped): it replays its own parameters."""
    return "retry_of" in trial.user_attrs


def enqueued_from(trial: Any) -> str | None:
    """Where a warm-start trial's configuration came from (:func:`enqueued_attrs`); None for a sampled one."""
    return trial.user_attrs.get(ENQUEUED_ATTR)


def resume_from(trial: Any) -> str | None:
    """The epoch checkpoint a re-enqueued trial resumes from."""
    return trial.user_attrs.get("resume_from")


def trial_driver(trial: Any) -> str | None:
    """The driver process that claimed the trial (:data:`DRIVER_ATTR`), if any."""
    return trial.system_attrs.get(DRIVER_ATTR)


def queued_kind(trial: Any) -> str | None:
    """The ``kind`` a trial was queued or suggested with (a WAITING trial has only fixed parameters)."""
    return trial.params.get("kind") or trial.system_attrs.get("fixed_params", {}).get("kind")


# --------------------------------------------------------------------------- the study's record


def record_teacher(study: Any, teacher: dict[str, Any], classes: list[str]) -> None:
    """The teacher's figures and the class names, stored on the study once per teacher."""
    study.set_user_attr("teacher", teacher)
    study.set_user_attr("classes", list(classes))


def record_objectives(study: Any, objectives: list[str]) -> None:
    study.set_user_attr("objectives", list(objectives))


def study_teacher(study: Any) -> dict[str, Any] | None:
    """The teacher's figures stored on the study (:func:`record_teacher`), or None before a search ran."""
    return study.user_attrs.get("teacher")


def study_classes(study: Any) -> list[str] | None:
    return study.user_attrs.get("classes")


def stored_objectives(study: Any) -> list[str] | None:
    """The objectives the study was created with; None for a study that stored none."""
    return study.user_attrs.get("objectives")


def study_objectives(study: Any) -> list[str]:
    """The study's objectives, the default ones for an older study that stored none."""
    return list(stored_objectives(study) or DEFAULT_OBJECTIVES)


# --------------------------------------------------------------------------- re-timings of the front


def record_retiming(study: Any, retiming: dict[str, Any]) -> str:
    """Store one interleaved re-timing of the front (:func:`autokd.search.retime.retime_front`); returns its key.

    Each re-timing is a study user attribute of its own (``retiming:<date>:<id>``), never a change to
    a trial: a trial's ``latency_ms`` is what the sampler saw and stays, and Optuna refuses to change
    a finished trial anyway. One key per re-timing keeps every one, also when two drivers sharing a
    PostgreSQL study re-time at once. ``retiming["members"]`` maps trial numbers (as text) to figures.
    """
    import uuid

    key = f"{RETIMING_PREFIX}{retiming['date']}:{uuid.uuid4().hex[:8]}"
    members = {n: json_safe(m) for n, m in retiming.get("members", {}).items()}
    study.set_user_attr(key, {**json_safe(retiming), "members": members})
    return key


def study_retimings(study: Any) -> list[dict[str, Any]]:
    """Every re-timing of the front stored on the study (:func:`record_retiming`), oldest first."""
    attrs = study.user_attrs
    return [attrs[key] for key in sorted(k for k in attrs if k.startswith(RETIMING_PREFIX))]


def retimed_ms(retiming: dict[str, Any], number: int) -> float | None:
    """Trial ``number``'s figure in one re-timing (the median over its rounds), None when it was not re-timed."""
    member = (retiming.get("members") or {}).get(str(number))
    return None if member is None else member.get("latency_ms")


def trial_retimings(retimings: list[dict[str, Any]], number: int) -> list[float]:
    """Trial ``number``'s figures across ``retimings`` (:func:`study_retimings`), oldest first."""
    return [ms for ms in (retimed_ms(r, number) for r in retimings) if ms is not None]
