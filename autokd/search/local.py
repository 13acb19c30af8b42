"""The in-process executor: one trial at a time in this process, through Optuna's ask and tell.

It shares the Ray executor's protocol (:mod:`autokd.search.study`): proposals from
:func:`propose` (re-seeded sampler, no configuration twice), the study-wide :class:`Budget`
(finished plus running trials of every driver), a claimed and heartbeated RUNNING trial, and
trials of dead drivers reclaimed and re-enqueued before the first ask.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any, Callable

import optuna
from optuna.artifacts import FileSystemArtifactStore, upload_artifact
from optuna.trial import TrialState

from autokd.config import SearchSpace, StudyConfig, TrialConfig
from autokd.checkpoint import save_state
from autokd.search.study import (Budget, SpaceExhausted, claim_trial, epoch_checkpoint, finished_count, propose,
                                 reclaim_stale_trials, record_metrics, trial_dir)
from autokd.trial import TRIAL_FAILURES, TrialContext, record_failure, run_trial

HEARTBEAT_SECONDS = 10


def artifact_store(study_cfg: StudyConfig) -> FileSystemArtifactStore:
    path = study_cfg.output_dir / "artifacts"
    path.mkdir(parents=True, exist_ok=True)
    return FileSystemArtifactStore(str(path))


def run_one(study: optuna.Study, trial: optuna.Trial, config: TrialConfig, study_cfg: StudyConfig,
            context: TrialContext, on_epoch: Callable[[optuna.Trial, int, dict], None] | None = None
            ) -> optuna.trial.FrozenTrial:
    """Train, measure and tell one proposed trial; a trial failure is told FAIL with its log path."""
    trial.set_user_attr("config", config.to_params())
    trial.set_user_attr("architecture", config.describe())
    trial.set_user_attr("teacher_accuracy", context.teacher_summary.get("accuracy"))
    trial.set_user_attr("executor", "local")
    work_dir = trial_dir(study_cfg, trial.number)
    resume_from = trial.user_attrs.get("resume_from")

    def epoch_hook(epoch: int, metrics: dict[str, Any]) -> None:
        if "_state" in metrics:  # the last finished epoch, for a re-enqueued trial to resume from
            save_state(epoch_checkpoint(study_cfg, trial.number), metrics["_state"]())
        if len(study_cfg.objectives) == 1 and "accuracy" in metrics:  # Optuna keeps curves of 1-objective studies only
            trial.report(metrics["accuracy"], epoch)
        if on_epoch is not None:
            on_epoch(trial, epoch, metrics | {"epochs": config.train.epochs})

    try:
        metrics = run_trial(config, context, work_dir=work_dir, on_epoch=epoch_hook,
                            resume_from=Path(resume_from) if resume_from else None)
    except TRIAL_FAILURES as err:
        reason, log = record_failure(work_dir, err)
        trial.set_user_attr("failed_because", reason)
        trial.set_user_attr("log_path", str(log))
        return study.tell(trial, state=TrialState.FAIL)
    except BaseException:  # Ctrl-C or a bug: the trial must not stay RUNNING
        trial.set_user_attr("failed_because", "interrupted")
        study.tell(trial, state=TrialState.FAIL)
        raise
    values = record_metrics(trial, metrics, study_cfg)
    artifact_id = upload_artifact(artifact_store=artifact_store(study_cfg), file_path=metrics["weights_path"],
                                  study_or_trial=trial)
    trial.set_user_attr("weights_artifact", artifact_id)
    return study.tell(trial, values)


def run_local(study: optuna.Study, study_cfg: StudyConfig, space: SearchSpace, context: TrialContext, *,
              on_epoch: Callable[[optuna.Trial, int, dict], None] | None = None,
              on_trial_end: Callable[[optuna.Study, optuna.trial.FrozenTrial], None] | None = None,
              on_exhausted: Callable[[SpaceExhausted], None] | None = None) -> list[optuna.trial.FrozenTrial]:
    """Run trials until the study holds ``n_trials`` finished ones (or ``timeout``); returns those this call told."""
    reclaim_stale_trials(study, lambda n: epoch_checkpoint(study_cfg, n))
    remaining = None if study_cfg.n_trials is None else study_cfg.n_trials - finished_count(study)
    budget = Budget(study, study_cfg.n_trials, max_failed=max(3, remaining or 0))
    deadline = None if study_cfg.timeout is None else time.monotonic() + study_cfg.timeout
    told: list[optuna.trial.FrozenTrial] = []
    while deadline is None or time.monotonic() < deadline:
        decision = budget.decide()
        if decision == "stop":
            break
        if decision == "wait":  # other drivers' running trials fill the budget; one may still fail
            time.sleep(1.0)
            continue
        try:
            trial, config = propose(study, study_cfg, space)
        except SpaceExhausted as err:
            if on_exhausted is not None:
                on_exhausted(err)
            break
        claim_trial(study, trial._trial_id)
        with _heartbeat(study, trial._trial_id):
            frozen = run_one(study, trial, config, study_cfg, context, on_epoch)
        if frozen.state == TrialState.FAIL:
            budget.failed += 1
        told.append(frozen)
        if on_trial_end is not None:
            on_trial_end(study, frozen)
    return told


class _heartbeat:
    """Record the running trial's heartbeat every ``HEARTBEAT_SECONDS`` (when the storage keeps them)."""

    def __init__(self, study: optuna.Study, trial_id: int):
        self.storage, self.trial_id = study._storage, trial_id
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._beat, daemon=True)

    def _beat(self) -> None:
        while not self.stop.wait(HEARTBEAT_SECONDS):
            try:
                self.storage.record_heartbeat(self.trial_id)
            except Exception:  # a database hiccup must not kill the trial; the next beat retries
                pass

    def __enter__(self) -> "_heartbeat":
        if self.storage.get_heartbeat_interval() is not None:
            self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop.set()


def replay(params: dict[str, Any], space: SearchSpace) -> TrialConfig:
    """Rebuild a trial's config from stored params alone (``FixedTrial``: no study, no database)."""
    return space.suggest(optuna.trial.FixedTrial(params))
