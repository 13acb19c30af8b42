"""The in-process executor: one trial at a time in this process, through Optuna's ask and tell.

It implements :class:`autokd.search.executor.Executor` with the Ray executor's protocol:
proposals from :func:`~autokd.search.study.propose`, the study-wide budget, a claimed and
heartbeated RUNNING trial, an epoch checkpoint per trial, Ctrl-C = FAIL + re-enqueue.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

import optuna
from optuna.artifacts import FileSystemArtifactStore, upload_artifact
from optuna.trial import TrialState
from rich.console import Console

from autokd.config import StudyConfig, TrialConfig
from autokd.space import SearchSpace
from autokd.checkpoint import EpochCheckpointer
from autokd.record import record_failed, record_result, record_start, record_weights_artifact, resume_from
from autokd.search.executor import Heartbeat, SearchProgress, run_search
from autokd.search.study import (Budget, SpaceExhausted, claim_trial, epoch_checkpoint, finished_count, give_back,
                                 propose, requeue, trial_dir)
from autokd.trial import TRIAL_FAILURES, TrialContext, record_failure, run_trial

#: A torch checkpoint has no registered MIME type; guessing from ``.pt`` gives ``application/vnd.snesdev-page-table``.
WEIGHTS_MIMETYPE = "application/octet-stream"


def artifact_store(study_cfg: StudyConfig) -> FileSystemArtifactStore:
    path = study_cfg.output_dir / "artifacts"
    path.mkdir(parents=True, exist_ok=True)
    return FileSystemArtifactStore(str(path))


def run_one(study: optuna.Study, trial: optuna.Trial, config: TrialConfig, study_cfg: StudyConfig,
            context: TrialContext, on_epoch: Callable[[int, int, dict], None] | None = None
            ) -> optuna.trial.FrozenTrial:
    """Train, measure and tell one proposed trial; a trial failure is told FAIL with its log path.

    Ctrl-C (or any other exception) tells the trial FAIL and re-enqueues its parameters, so the
    next run resumes it from its last epoch checkpoint; then the exception goes on.
    """
    record_start(trial, config, context.teacher_summary.get("accuracy"), "local")
    work_dir = trial_dir(study_cfg, trial.number)
    resumed = resume_from(trial)

    def epoch_hook(epoch: int, metrics: dict[str, Any]) -> None:
        if len(study_cfg.objectives) == 1 and "accuracy" in metrics:  # Optuna keeps curves of 1-objective studies only
            trial.report(metrics["accuracy"], epoch)
        if on_epoch is not None:
            on_epoch(trial.number, epoch, metrics | {"epochs": config.train.epochs})

    try:
        metrics = run_trial(config, context, work_dir=work_dir, on_epoch=epoch_hook,
                            checkpointer=EpochCheckpointer(epoch_checkpoint(study_cfg, trial.number)),
                            resume_from=Path(resumed) if resumed else None)
    except TRIAL_FAILURES as err:
        reason, log = record_failure(work_dir, err)
        record_failed(trial, reason, str(log))
        return study.tell(trial, state=TrialState.FAIL)
    except BaseException:  # Ctrl-C or a bug: the trial must not stay RUNNING, and may resume
        record_failed(trial, "interrupted")
        requeue(study, study.tell(trial, state=TrialState.FAIL), study_cfg)
        raise
    values = record_result(trial, metrics, study_cfg)
    artifact_id = upload_artifact(artifact_store=artifact_store(study_cfg), file_path=metrics["weights_path"],
                                  study_or_trial=trial, mimetype=WEIGHTS_MIMETYPE)
    record_weights_artifact(trial, artifact_id)
    return study.tell(trial, values)


class LocalExecutor:
    """One trial at a time in this process (``executor.kind: local``)."""

    label = "trials"

    def run(self, study: optuna.Study, study_cfg: StudyConfig, space: SearchSpace, context: TrialContext,
            progress: SearchProgress) -> list[optuna.trial.FrozenTrial]:
        remaining = None if study_cfg.n_trials is None else study_cfg.n_trials - finished_count(study)
        budget = Budget(study, study_cfg.n_trials, max_failed=max(3, remaining or 0))
        deadline = None if study_cfg.timeout is None else time.monotonic() + study_cfg.timeout
        running: list[int] = []
        with Heartbeat(study, study_cfg, lambda: list(running)):
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
                    progress.note(f"stopped early: {err.problem}")
                    break
                claim_trial(study, trial._trial_id)
                if budget.surplus(trial.number):  # another driver took the last slot meanwhile
                    give_back(study, trial)
                    continue
                running[:] = [trial._trial_id]
                frozen = run_one(study, trial, config, study_cfg, context,
                                 lambda n, e, m: progress.epoch(n, e, m["epochs"], m.get("accuracy")))
                running.clear()
                if frozen.state == TrialState.FAIL:
                    budget.failed += 1
                progress.told_trial(frozen)
        return progress.told


def run_local(study: optuna.Study, study_cfg: StudyConfig, space: SearchSpace, context: TrialContext, *,
              console: Console | None = None) -> list[optuna.trial.FrozenTrial]:
    """Run trials in this process until the study's budget is spent (for scripts and tests)."""
    return run_search(study, study_cfg, space, LocalExecutor(), console=console or Console(quiet=True),
                      prepare=lambda: context)


def replay(params: dict[str, Any], space: SearchSpace) -> TrialConfig:
    """Rebuild a trial's config from stored params alone (``FixedTrial``: no study, no database)."""
    return space.suggest(optuna.trial.FixedTrial(params))
