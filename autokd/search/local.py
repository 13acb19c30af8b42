"""The in-process executor: one trial at a time in this process, through Optuna's ask and tell.

It implements :class:`autokd.search.executor.Executor`; each trial goes through
:class:`~autokd.search.lifecycle.TrialLifecycle` (proposed, claimed and heartbeated, then told),
with an epoch checkpoint per trial and Ctrl-C = FAIL + re-enqueue, as on Ray. Early stopping
(``early_stopping``) ends a trial after the epoch it is judged at: :class:`StopTrial` leaves the
training loop, the trial is told PRUNED with ``pruned_because``, and the study goes on.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Any, Callable, ContextManager

import optuna
from rich.console import Console

from autokd.checkpoint import EpochCheckpointer
from autokd.config import StudyConfig
from autokd.errors import disk_full
from autokd.search.executor import SearchProgress, run_search
from autokd.search.early_stopping import early_stopping_of
from autokd.search.lifecycle import Started, TrialLifecycle
from autokd.search.storage import StorageLost
from autokd.search.study import epoch_checkpoint
from autokd.space import SearchSpace
from autokd.trial import TRIAL_FAILURES, TrialContext, cost_checker, record_failure, run_trial


class StopTrial(Exception):
    """Raised by the epoch hook when early stopping stops the trial (not a failure: told PRUNED)."""

    def __init__(self, reason: str, last_report: dict[str, Any]):
        super().__init__(reason)
        self.reason, self.last_report = reason, last_report


def run_one(lifecycle: TrialLifecycle, started: Started, context: TrialContext,
            on_epoch: Callable[[int, int, dict], None] | None = None) -> optuna.trial.FrozenTrial:
    """Train, measure and tell one started trial; a trial failure is told FAIL with its log path.

    Ctrl-C (or any other exception) tells the trial FAIL and re-enqueues its parameters, so the
    next run resumes it from its last epoch checkpoint; then the exception goes on. A full disk
    does the same where the study can still be written, and goes on as one line
    (:class:`~autokd.errors.DiskFull`); a lost database leaves the trial to the next run's reclaim.
    """
    trial, config, study_cfg = started.trial, started.config, lifecycle.study_cfg

    def epoch_hook(epoch: int, metrics: dict[str, Any]) -> None:
        if len(study_cfg.objectives) == 1 and "accuracy" in metrics:  # Optuna keeps curves of 1-objective studies only
            trial.report(metrics["accuracy"], epoch)
        if on_epoch is not None:
            on_epoch(trial.number, epoch, metrics | {"epochs": config.train.epochs})
        reason = lifecycle.after_epoch(trial, config, epoch, metrics.get("accuracy"))
        if reason is not None:  # the epoch checkpoint is written already; PRUNED is never resumed
            raise StopTrial(reason, {"accuracy": metrics.get("accuracy"), "epoch": epoch + 1,
                                     "loss": metrics.get("loss")})

    try:
        try:
            metrics = run_trial(config, context, work_dir=started.work_dir, on_epoch=epoch_hook,
                                checkpointer=EpochCheckpointer(epoch_checkpoint(study_cfg, trial.number)),
                                resume_from=Path(started.resume_from) if started.resume_from else None)
        except StopTrial as stop:
            return lifecycle.prune(trial, stop.last_report, stop.reason)
        except TRIAL_FAILURES as err:
            if disk_full(err) is not None:
                raise
            reason, log = record_failure(started.work_dir, err)
            return lifecycle.fail(trial, reason, log)
        return lifecycle.complete(trial, metrics)
    except StorageLost:  # the database is gone: the next run reclaims the trial
        raise
    except BaseException as err:  # Ctrl-C, a full disk or a bug: the trial must not stay RUNNING, and may resume
        full = disk_full(err)
        if full is None:
            lifecycle.interrupt(trial, "interrupted")
            raise
        with contextlib.suppress(Exception):  # a SQLite study on that disk cannot record it: the next run will
            lifecycle.interrupt(trial, "disk full")
        raise full from None


class LocalExecutor:
    """One trial at a time in this process (``executor.kind: local``)."""

    label = "trials"

    def session(self, study_cfg: StudyConfig) -> ContextManager[None]:
        return contextlib.nullcontext()

    def run(self, study: optuna.Study, study_cfg: StudyConfig, space: SearchSpace, context: TrialContext,
            progress: SearchProgress) -> list[optuna.trial.FrozenTrial]:
        lifecycle = TrialLifecycle(study, study_cfg, space, executor="local",
                                   teacher_accuracy=context.teacher_summary.get("accuracy"),
                                   cost_check=cost_checker(study_cfg.constraints, context),
                                   early_stopping=early_stopping_of(study, study_cfg, context))
        deadline = None if study_cfg.timeout is None else time.monotonic() + study_cfg.timeout
        with lifecycle.heartbeat():
            while deadline is None or time.monotonic() < deadline:
                started = lifecycle.start()
                if started == "stop":
                    break
                if started == "wait":  # other drivers' running trials fill the budget; one may still fail
                    time.sleep(1.0)
                if isinstance(started, str):
                    continue
                frozen = run_one(lifecycle, started, context,
                                 lambda n, e, m: progress.epoch(n, e, m["epochs"], m.get("accuracy")))
                progress.told_trial(frozen)
        if lifecycle.exhausted is not None:
            progress.note(f"stopped early: {lifecycle.exhausted.problem}")
        return progress.told


def run_local(study: optuna.Study, study_cfg: StudyConfig, space: SearchSpace, context: TrialContext, *,
              console: Console | None = None) -> list[optuna.trial.FrozenTrial]:
    """Run trials in this process until the study's budget is spent (for scripts and tests)."""
    return run_search(study, study_cfg, space, LocalExecutor(), console=console or Console(quiet=True),
                      prepare=lambda: context)

