"""One trial's way through the study, from proposal to tell: the same for both executors.

An executor only decides where :func:`autokd.trial.run_trial` runs (this process, a Ray worker);
everything it does to the study goes through :class:`TrialLifecycle`:

1. :meth:`~TrialLifecycle.start`: ask the study's budget, :func:`~autokd.search.study.propose` a
   configuration no finished or running trial has, claim the trial for this driver (its heartbeat
   starts), give it back when another driver took the last slot meanwhile, and record what every
   trial records when it starts (config, architecture, teacher accuracy, executor);
2. then exactly one of :meth:`~TrialLifecycle.complete` (figures recorded, weights uploaded as an
   artifact, told COMPLETE), :meth:`~TrialLifecycle.fail` (why and where its log is, told FAIL),
   :meth:`~TrialLifecycle.interrupt` (its driver stopped: told FAIL and its parameters re-enqueued
   to resume from the last epoch checkpoint) or :meth:`~TrialLifecycle.prune` (told PRUNED with
   its last figures and, when early stopping stopped it, ``pruned_because``).

While it trains, the executor hands each epoch's validation accuracy to
:meth:`~TrialLifecycle.after_epoch`: the trial's curve is stored and early stopping
(:mod:`autokd.search.early_stopping`) says whether it should stop.

While an executor runs trials, :class:`Heartbeat` keeps the claimed ones fresh and reclaims those of
drivers that died.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.artifacts import FileSystemArtifactStore, upload_artifact
from optuna.trial import TrialState

from autokd.config import StudyConfig, TrialConfig
from autokd.errors import disk_full
from autokd.record import (record_failed, record_pruned, record_result, record_start, record_weights_artifact,
                           resume_from)
from autokd.search.early_stopping import EarlyStopping
from autokd.search.startup import CostSpread
from autokd.search.internals import record_heartbeat, storage_of
from autokd.search.storage import HEARTBEAT_SECONDS, StorageLost
from autokd.search.study import (Budget, CostCheck, SpaceExhausted, claim_trial, finished_count, give_back, propose,
                                 reclaim_stale_trials, requeue, trial_dir)
from autokd.space import SearchSpace

#: A torch checkpoint has no registered MIME type; guessing from ``.pt`` gives ``application/vnd.snesdev-page-table``.
WEIGHTS_MIMETYPE = "application/octet-stream"


def artifact_store(study_cfg: StudyConfig) -> FileSystemArtifactStore:
    """Where a study's artifacts (each trial's weights) live: ``OUTPUT/artifacts``."""
    path = study_cfg.output_dir / "artifacts"
    path.mkdir(parents=True, exist_ok=True)
    return FileSystemArtifactStore(str(path))


@dataclass(frozen=True)
class Started:
    """A claimed RUNNING trial and what its executor needs to run it."""

    trial: optuna.Trial
    config: TrialConfig
    work_dir: Path
    resume_from: str | None  # the epoch checkpoint a re-enqueued trial resumes from


class TrialLifecycle:
    """The trials of one study, from proposal to tell, for whichever executor runs them.

    ``executor`` names it in each trial's record (``local``, ``ray``). Thread-safe: a
    :class:`Heartbeat` reads the live trials while the executor starts and tells others.
    """

    def __init__(self, study: optuna.Study, study_cfg: StudyConfig, space: SearchSpace, *, executor: str,
                 teacher_accuracy: float | None, cost_check: CostCheck | None = None,
                 early_stopping: EarlyStopping | None = None):
        self.study, self.study_cfg, self.space = study, study_cfg, space
        self.early_stopping = early_stopping or EarlyStopping(study, study_cfg, None)  # None: curves only
        self.cost_check = cost_check  # a proposal over a cost constraint is replaced before it trains
        probe = self.early_stopping.probe
        self.spread = CostSpread(study_cfg, space, probe) if probe is not None else None  # TPE's start-up by cost
        self.executor, self.teacher_accuracy = executor, teacher_accuracy
        remaining = None if study_cfg.n_trials is None else study_cfg.n_trials - finished_count(study)
        self.budget = Budget(study, study_cfg.n_trials, max_failed=max(3, remaining or 0))
        self.exhausted: SpaceExhausted | None = None  # set when proposals stopped because the space ran out
        self._live: dict[int, optuna.Trial] = {}  # number -> trial asked and not told yet
        self._lock = threading.Lock()

    def live_trials(self) -> list[optuna.Trial]:
        with self._lock:
            return list(self._live.values())

    def heartbeat(self) -> "Heartbeat":
        """The heartbeat of this lifecycle's live trials, as a context manager around the executor's run."""
        return Heartbeat(self.study, self.study_cfg, self.live_trials)

    def start(self) -> Started | str:
        """The next trial, proposed, claimed and recorded as started; else why not.

        ``"stop"``: the budget is spent, too many trials failed, or the space is exhausted
        (:attr:`exhausted`); ``"wait"``: other drivers' running trials fill the budget (ask again
        in a while, one of them may fail); ``"again"``: another driver took the slot just now (ask
        again at once).
        """
        decision = self.budget.decide()
        if decision != "go":
            return decision
        try:
            with self._lock:
                trial, config = propose(self.study, self.study_cfg, self.space, self.cost_check, self.spread)
                self._live[trial.number] = trial
        except SpaceExhausted as err:
            self.exhausted = err
            return "stop"
        claim_trial(self.study, trial)
        if self.budget.surplus(trial.number):  # another driver took the last slot meanwhile
            self.give_back(trial)
            return "again"
        record_start(trial, config, self.teacher_accuracy, self.executor)
        return Started(trial, config, trial_dir(self.study_cfg, trial.number), resume_from(trial))

    def give_back(self, trial: optuna.Trial) -> None:
        """Undo a started trial that must not run (:func:`~autokd.search.study.give_back`)."""
        with self._lock:
            give_back(self.study, trial)
            self._live.pop(trial.number, None)

    def complete(self, trial: optuna.Trial, metrics: dict[str, Any]) -> optuna.trial.FrozenTrial:
        """Record the trial's figures, upload its weights (when this process can read them), tell COMPLETE."""
        values = record_result(trial, metrics, self.study_cfg)
        weights = metrics.get("weights_path")
        if weights and Path(weights).is_file():
            artifact_id = upload_artifact(artifact_store=artifact_store(self.study_cfg), file_path=weights,
                                          study_or_trial=trial, mimetype=WEIGHTS_MIMETYPE)
            record_weights_artifact(trial, artifact_id)
        return self._tell(trial, values, TrialState.COMPLETE)

    def fail(self, trial: optuna.Trial, reason: str, log_path: Path | str) -> optuna.trial.FrozenTrial:
        """The trial failed on its own (diverged, a shape its family cannot take): told FAIL, counted."""
        record_failed(trial, reason, str(log_path))
        frozen = self._tell(trial, None, TrialState.FAIL)
        self.budget.failed += 1
        return frozen

    def interrupt(self, trial: optuna.Trial, reason: str) -> optuna.trial.FrozenTrial:
        """Its driver stopped it (Ctrl-C, a shutdown): told FAIL and re-enqueued to resume from its last epoch."""
        record_failed(trial, reason)
        frozen = self._tell(trial, None, TrialState.FAIL)
        requeue(self.study, frozen, self.study_cfg)
        return frozen

    def after_epoch(self, trial: optuna.Trial, config: TrialConfig, epoch: int, accuracy: float | None) -> str | None:
        """Store epoch ``epoch``'s (0-based) validation accuracy; why early stopping stops the trial now, or None."""
        return self.early_stopping.after_epoch(trial, config, epoch, config.train.epochs, accuracy)

    def prune(self, trial: optuna.Trial, last_report: dict[str, Any], reason: str | None = None
              ) -> optuna.trial.FrozenTrial:
        """Stopped by early stopping (``reason``: the trials that dominate it) or ASHA: told PRUNED, keeping
        the figures of its last epoch report. PRUNED counts toward ``n_trials`` and is never re-run."""
        record_pruned(trial, last_report, reason)
        return self._tell(trial, None, TrialState.PRUNED)

    def _tell(self, trial: optuna.Trial, values: list[float] | None, state: TrialState) -> optuna.trial.FrozenTrial:
        with self._lock:
            frozen = self.study.tell(trial, values, state=state)
            self._live.pop(trial.number, None)
        self.budget.recheck()
        self.early_stopping.forget(trial.number)
        return frozen


class Heartbeat:
    """A thread that keeps this driver's RUNNING trials fresh and reclaims those of dead drivers.

    ``live_trials()`` names the trials this driver holds right now.
    """

    def __init__(self, study: optuna.Study, study_cfg: StudyConfig, live_trials: Any):
        self.study, self.study_cfg, self.live_trials = study, study_cfg, live_trials
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._beat, daemon=True, name="autokd-heartbeat")

    def _beat(self) -> None:
        storage = storage_of(self.study)
        while not self.stop.wait(HEARTBEAT_SECONDS):
            try:
                for trial in self.live_trials():
                    record_heartbeat(self.study, trial)
                # Right after an outage every driver's heartbeats are old: reclaim only once all had
                # a beat to catch up, or a live driver's trials would be failed as a dead one's.
                if getattr(storage, "settled", lambda _: True)(2 * HEARTBEAT_SECONDS):
                    reclaim_stale_trials(self.study, self.study_cfg)
            except StorageLost:  # the driver's own next call to the storage says so, in one line
                return
            except Exception as err:  # a database hiccup must not kill the search; the next beat retries
                if disk_full(err) is not None:  # a SQLite study on a full disk: the driver's next write says so
                    continue
                logging.getLogger(__name__).warning("heartbeat failed: %s", type(err).__name__)

    def __enter__(self) -> "Heartbeat":
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop.set()
        self.thread.join(timeout=5)
