"""The Ray Tune executor: trials spread over every CPU/GPU of a Ray cluster, Optuna deciding.

The driver runs a ``tune.Tuner`` whose search algorithm, :class:`StudySearch`, is a Tune
``Searcher`` over the study's own ask and tell, so Tune's trials *are* the Optuna study's trials;
only the driver writes to the database. Workers run :func:`train_trial`, which keeps the data and
the teacher alive across trials (``cached_context``) and never touches the database.

It shares the in-process executor's protocol (:mod:`autokd.search.study`):

* proposals come from :func:`propose`: a sampler re-seeded from the study's history, and never a
  configuration the study already finished or is running;
* the budget is the *study's* total of finished trials, shared by every driver of the study;
* the final metrics land on the Optuna trial as user attributes and constraints, with the same
  values as the local executor (``autokd.record.record_result``), before the trial is told;
* each epoch's report reaches the driver's scheduler (:func:`_make_scheduler`) first: the curve is
  stored and early stopping judges the trial there (:meth:`TrialLifecycle.after_epoch`), so a
  trial it stops ends right after that epoch; then ASHA, when ``executor.asha`` is on;
* a trial stopped by early stopping or ASHA is told PRUNED with its last metrics (and
  ``pruned_because`` when early stopping stopped it); one interrupted by a driver
  shutdown is told FAIL and re-enqueued; a failing trial (diverged, bad shape) is told FAIL;
* each RUNNING trial carries its driver's identity and a heartbeat, so a later driver can tell a
  trial whose driver died (reclaim: FAIL + re-enqueue) from one another live driver is running.

A worker that dies mid-trial is retried by Tune (``FailureConfig``) from its last epoch
checkpoint (``tune.report(..., checkpoint=...)``); the same checkpoint, kept in the trial's
folder, lets a trial re-enqueued after a driver crash resume from its last epoch.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import optuna
from rich.console import Console

from autokd.config import StudyConfig, TrialConfig
from autokd.errors import FULL_DISK_FIX, DiskFull, disk_full
from autokd.space import SearchSpace
from autokd.record import study_teacher
from autokd.search.early_stopping import early_stopping_of
from autokd.search.executor import SearchProgress, run_search
from autokd.search.lifecycle import TrialLifecycle
from autokd.search.ray_runtime import RayStart, trial_error_lines
from autokd.search.storage import StorageLost, strip_password
from autokd.search.study import EPOCH_FILE, CostCheck, trial_dir
from autokd.trial import TRIAL_LOG, cost_checker

#: Key of the executor's own values in the config Tune passes to the trainable.
META = "_autokd"


# --------------------------------------------------------------------------- worker side


def train_trial(config: dict[str, Any], *, study_yaml: str, cwd: str) -> None:
    """The Tune function trainable: one trial on a worker, reporting every epoch.

    Failures of the trial itself (a diverged student, a shape a family cannot take) are reported
    as a final result with ``failed`` so the trial is told FAIL at once; a full disk as one with
    ``fatal``, which ends the run (retrying would fail the same way); anything else (the worker
    dying) is left to Tune's ``FailureConfig``, which restarts from the last checkpoint.
    """
    from ray import tune

    from autokd.checkpoint import EpochCheckpointer
    from autokd.context import cached_context
    from autokd.trial import TRIAL_FAILURES, record_failure, run_trial

    if Path(cwd).is_dir():  # Tune starts trainables in a scratch folder; relative paths mean the driver's
        os.chdir(cwd)
    meta = config[META]
    trial_cfg = TrialConfig.from_json(meta["config"])
    context = cached_context(study_yaml)
    work_dir = Path(meta["work_dir"])
    epoch_dir = work_dir / "epoch"

    resume_from = Path(meta["resume_from"]) if meta.get("resume_from") else None
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:  # a retry after the worker died: Tune hands back the last epoch
        with checkpoint.as_directory() as folder:
            restored = epoch_dir / f".restored{os.getpid()}.pt"
            epoch_dir.mkdir(parents=True, exist_ok=True)
            restored.write_bytes((Path(folder) / EPOCH_FILE).read_bytes())
            resume_from = restored

    def on_epoch(epoch: int, metrics: dict[str, Any]) -> None:
        target = epoch_dir / EPOCH_FILE  # written (atomically) by the checkpointer just before this call
        report = {"epoch": epoch + 1, "epochs": trial_cfg.train.epochs, "accuracy": metrics.get("accuracy"),
                  "loss": metrics.get("loss"), "final": False}
        if not target.is_file():  # a pair trial keeps no epoch checkpoints
            tune.report(report)
            return
        with tempfile.TemporaryDirectory(dir=epoch_dir) as folder:  # Tune copies it to storage_path
            os.link(target, Path(folder) / EPOCH_FILE)
            tune.report(report, checkpoint=tune.Checkpoint.from_directory(folder))

    try:
        try:
            metrics = run_trial(trial_cfg, context, work_dir=work_dir, on_epoch=on_epoch,
                                checkpointer=EpochCheckpointer(epoch_dir / EPOCH_FILE), resume_from=resume_from)
        except TRIAL_FAILURES as err:
            if disk_full(err) is not None:
                raise
            reason, _ = record_failure(work_dir, err)  # the traceback goes to the trial's log, not the console
            tune.report({"final": True, "failed": reason})
            return
    except Exception as err:  # a full disk is the run's end, not this trial's failure: no retries against it
        full = disk_full(err)
        if full is None:
            raise
        tune.report({"final": True, "fatal": full.problem})
        return
    metrics["teacher_accuracy"] = context.teacher_summary.get("accuracy")
    final = {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    tune.report({**final, "final": True, "metrics_json": json.dumps(metrics, default=str)})


# --------------------------------------------------------------------------- driver side


class _StudySearchBasics:
    """The parts of the study searcher that need no Ray import: pickling, fatal errors, cleanup."""

    study_cfg: StudyConfig
    running: dict[str, optuna.Trial]
    fatal: Exception | None

    # Tune pickles its searcher (tuner.pkl, experiment checkpoints). The study lives in the
    # database and resume goes through it (``reclaim_stale_trials``), so only settings are kept.
    def __getstate__(self) -> dict:
        state = {k: v for k, v in self.__dict__.items() if k in ("_metric", "_mode")}
        # tuner.pkl sits in the output folder: the storage URL goes in without its password.
        state["study_cfg"] = self.study_cfg.model_copy(update={"storage": strip_password(self.study_cfg.storage)})
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)

    def save(self, checkpoint_path: str) -> None:
        return None

    def restore(self, checkpoint_path: str) -> None:
        return None

    def fail_unfinished(self) -> None:
        """Tell FAIL (and re-enqueue) each trial Tune ended without reporting its end (Ctrl-C, timeout)."""
        for trial_id in list(self.running):
            self.on_trial_complete(trial_id, None)  # type: ignore[attr-defined]

    @contextlib.contextmanager
    def fatal_guard(self) -> Iterator[None]:
        """A lost database or a full disk ends the whole run (Tune would count it against a trial and
        retry that): remembered here, every trial stopped, and raised by the driver after ``fit``."""
        try:
            yield
        except Exception as err:
            fatal = err if isinstance(err, StorageLost) else disk_full(err)
            if fatal is None:
                raise
            self.fatal = self.fatal or fatal
            _stop_every_trial()


def _tell_finished(lifecycle: TrialLifecycle, ot_trial: optuna.Trial, result: dict, error: bool,
                   pruned: bool, reason: str | None = None) -> optuna.trial.FrozenTrial:
    """Tell the study how a Tune trial ended: COMPLETE, FAIL, PRUNED (``reason``: early stopping's), or
    interrupted (resumed next run)."""
    if result.get("final") and not result.get("failed") and not error:
        return lifecycle.complete(ot_trial, json.loads(result["metrics_json"]))
    if result.get("failed") or error:
        return lifecycle.fail(ot_trial, result.get("failed") or "worker failed too often",
                              trial_dir(lifecycle.study_cfg, ot_trial.number) / TRIAL_LOG)
    if pruned:
        return lifecycle.prune(ot_trial, result, reason)
    return lifecycle.interrupt(ot_trial, "driver stopped")  # a driver shutdown: the next run resumes it


def _make_study_search_class() -> type:
    from ray.tune.search import Searcher

    class StudySearch(_StudySearchBasics, Searcher):
        """A Tune searcher over the study's own ask and tell: each Tune trial is one trial of ``lifecycle``."""

        def __init__(self, lifecycle: TrialLifecycle, *, pruned_by_scheduler: dict[str, str | None],
                     on_told: Callable[[optuna.trial.FrozenTrial], None]):
            study_cfg = lifecycle.study_cfg
            single = len(study_cfg.objectives) == 1
            modes = ["max" if d == "maximize" else "min" for d in study_cfg.directions]
            super().__init__(metric=study_cfg.objectives[0] if single else list(study_cfg.objectives),
                             mode=modes[0] if single else modes)
            self.lifecycle, self.study_cfg, self.on_told = lifecycle, study_cfg, on_told
            self.pruned_by_scheduler = pruned_by_scheduler
            self.running: dict[str, optuna.Trial] = {}  # Tune trial id -> the Optuna trial it runs, until told
            self.configs: dict[str, TrialConfig] = {}  # Tune trial id -> its config, until told
            self.fatal: Exception | None = None  # what ended the run for every trial (database lost, disk full)

        def suggest(self, trial_id: str) -> dict | str | None:
            if self.fatal is not None:
                return Searcher.FINISHED
            with self.fatal_guard():
                return self._suggest(trial_id)
            return Searcher.FINISHED

        def _suggest(self, trial_id: str) -> dict | str | None:
            started = self.lifecycle.start()
            if isinstance(started, str):
                return Searcher.FINISHED if started == "stop" else None
            self.running[trial_id] = started.trial
            self.configs[trial_id] = started.config
            return {META: {"number": started.trial.number, "config": started.config.to_json(),
                           "work_dir": str(started.work_dir), "resume_from": started.resume_from}}

        def on_trial_result(self, trial_id: str, result: dict) -> None:
            if isinstance(self.metric, str) and not result.get("final") and result.get(self.metric) is not None:
                with self.fatal_guard():
                    self.running[trial_id].report(result[self.metric], int(result["epoch"]))

        def after_epoch(self, trial_id: str, result: dict) -> str | None:
            """An epoch's report, seen by the scheduler before anything else: store the curve; why early
            stopping stops the trial now, or None."""
            ot_trial, config = self.running.get(trial_id), self.configs.get(trial_id)
            if ot_trial is None or config is None or result.get("final") or not result.get("epoch"):
                return None
            with self.fatal_guard():
                return self.lifecycle.after_epoch(ot_trial, config, int(result["epoch"]) - 1, result.get("accuracy"))
            return None

        def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
            if self.fatal is not None:  # the database is gone or the disk full: the next run reclaims the trial
                return
            with self.fatal_guard():
                self._on_trial_complete(trial_id, result, error)

        def _on_trial_complete(self, trial_id: str, result: dict | None, error: bool) -> None:
            ot_trial = self.running.pop(trial_id, None)
            self.configs.pop(trial_id, None)
            if ot_trial is None:  # told already, or never ours
                return
            result = result or {}
            if result.get("fatal"):  # the worker's disk is full: stop the run, resume this trial next time
                self.fatal = DiskFull(result["fatal"], FULL_DISK_FIX)
                _stop_every_trial()
                with contextlib.suppress(Exception):  # a SQLite study on that same disk cannot record it
                    self.lifecycle.interrupt(ot_trial, "disk full")
                return
            self.on_told(_tell_finished(self.lifecycle, ot_trial, result, error,
                                        pruned=trial_id in self.pruned_by_scheduler,
                                        reason=self.pruned_by_scheduler.get(trial_id)))

    return StudySearch


def _make_scheduler(pruned: dict[str, str | None], after_epoch: Callable[[str, dict], str | None],
                    asha: bool) -> Any:
    """The driver's view of every epoch report, before Tune's searcher sees it: ``after_epoch`` (the
    searcher's: curve stored, early stopping judged) may stop the trial at once; then ASHA on the epoch
    accuracy when ``asha``. Remembers which trials it stopped, and early stopping's reason (told PRUNED)."""
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, TrialScheduler

    class EpochScheduler(ASHAScheduler if asha else FIFOScheduler):  # type: ignore[misc, valid-type]
        def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
            if result.get("final"):
                return TrialScheduler.CONTINUE
            reason = after_epoch(trial.trial_id, result)  # never a reason at the last epoch
            if reason is not None:
                pruned[trial.trial_id] = reason
                return TrialScheduler.STOP
            if result.get("epoch", 0) >= result.get("epochs", float("inf")):
                return TrialScheduler.CONTINUE  # a fully trained trial always reaches its final metrics
            decision = super().on_trial_result(tune_controller, trial, result)
            if decision == TrialScheduler.STOP:
                pruned[trial.trial_id] = None
            return decision

    if not asha:
        return EpochScheduler()
    return EpochScheduler(time_attr="training_iteration", metric="accuracy", mode="max", max_t=10_000,
                          grace_period=1, reduction_factor=2)


# --------------------------------------------------------------------------- entry point


class RayExecutor:
    """Trials on Ray Tune workers (``executor.kind: ray``), ``max_concurrent`` at a time.

    ``trainable`` replaces :func:`train_trial` (same signature and reports); the overhead
    benchmark passes one that trains nothing. The driver's ``context`` is not used: workers
    build their own (``cached_context``) from the study file and the teacher checkpoint.
    """

    def __init__(self, trainable: Callable[..., None] | None = None):
        self.trainable = trainable or train_trial
        self._ray: RayStart | None = None

    @property
    def label(self) -> str:
        return "trials (ray)"

    @contextlib.contextmanager
    def session(self, study_cfg: StudyConfig) -> Iterator[None]:
        """Ray for the whole search: started in the background while the driver prepares the teacher
        (Ray's start is mostly waiting on its processes: about 3 s of the demo, and the teacher phase
        leaves a core idle), stopped when the search ends, by an error or a Ctrl-C too."""
        self._ray = RayStart(study_cfg)
        try:
            yield
        finally:
            ray, self._ray = self._ray, None
            ray.stop()

    def run(self, study: optuna.Study, study_cfg: StudyConfig, space: SearchSpace, context: Any,
            progress: SearchProgress) -> list[optuna.trial.FrozenTrial]:
        if self._ray is None:
            raise RuntimeError("RayExecutor.run runs inside session(); autokd.search.executor.run_search opens it")
        self._ray.wait()  # its start's error (a cluster that went away) is raised here
        return _fit(study, study_cfg, space, progress, self.trainable, cost_checker(study_cfg.constraints, context),
                    context)


def run_ray(optuna_study: optuna.Study, study_cfg: StudyConfig, space: SearchSpace, *, console: Console,
            prepare: Callable[[], Any] | None = None, trainable: Callable[..., None] | None = None
            ) -> list[optuna.trial.FrozenTrial]:
    """Run trials on Ray Tune until the study holds ``n_trials`` finished ones (scripts and tests).

    Example:
        >>> run_ray(open_study(cfg), cfg, SearchSpace.load(cfg.search_space), console=Console())  # doctest: +SKIP
    """
    return run_search(optuna_study, study_cfg, space, RayExecutor(trainable), console=console, prepare=prepare)


def _fit(optuna_study: optuna.Study, study_cfg: StudyConfig, space: SearchSpace, progress: SearchProgress,
         trainable_fn: Callable[..., None], cost_check: CostCheck | None = None,
         context: Any = None) -> list[optuna.trial.FrozenTrial]:
    from ray import tune
    from ray.tune.search import ConcurrencyLimiter

    ex = study_cfg.executor
    pruned: dict[str, str | None] = {}  # Tune trial id -> early stopping's reason (None: ASHA's)
    teacher = study_teacher(optuna_study) or {}
    lifecycle = TrialLifecycle(optuna_study, study_cfg, space, executor="ray", teacher_accuracy=teacher.get("accuracy"),
                               cost_check=cost_check,  # the driver's: over-budget proposals are replaced untrained
                               early_stopping=early_stopping_of(optuna_study, study_cfg, context))
    searcher = _make_study_search_class()(lifecycle, pruned_by_scheduler=pruned, on_told=progress.told_trial)
    worker_cfg = study_cfg.model_copy(update={
        "output": str(study_cfg.output_dir), "base_dir": str(Path(study_cfg.base_dir).resolve()),
        "storage": None})  # workers never see the database, nor its password
    trainable = tune.with_resources(
        tune.with_parameters(trainable_fn, study_yaml=worker_cfg.to_yaml(), cwd=os.getcwd()),
        {"cpu": ex.cpus_per_trial, "gpu": ex.gpus_per_trial})
    results = study_cfg.output_dir / "ray_results"
    ctrl_c = _ctrl_c_stopper()
    tuner = tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(search_alg=ConcurrencyLimiter(searcher, max_concurrent=ex.max_concurrent),
                                    scheduler=_make_scheduler(pruned, searcher.after_epoch, ex.asha), num_samples=-1,
                                    time_budget_s=study_cfg.timeout, reuse_actors=True,
                                    trial_name_creator=_tune_name, trial_dirname_creator=_tune_name),
        run_config=tune.RunConfig(
            name=f"{study_cfg.name}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}", storage_path=str(results),
            failure_config=tune.FailureConfig(max_failures=ex.max_failures),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1), verbose=0, stop=ctrl_c,
            callbacks=[trial_error_lines(study_cfg, progress.note, META)]))  # a worker death: one line

    with lifecycle.heartbeat(), ctrl_c.installed():
        try:
            tuner.fit()
        finally:
            if searcher.fatal is None:
                with searcher.fatal_guard():
                    searcher.fail_unfinished()
    if searcher.fatal is not None:  # running trials stay RUNNING: the next run re-enqueues them
        raise searcher.fatal
    if ctrl_c.pressed:  # running trials were told FAIL and re-enqueued; the CLI exits 130
        raise KeyboardInterrupt
    if lifecycle.exhausted is not None:
        progress.note(f"stopped early: {lifecycle.exhausted.problem}")
    return progress.told


#: Set by the first Ctrl-C during ``tuner.fit``; module-level because Tune pickles its stopper.
_CTRL_C = threading.Event()
#: Set when the database is lost or a disk full: every trial stops (``StudySearch.fatal`` says why).
_FATAL = threading.Event()


def _stop_every_trial() -> None:
    """End the run (:class:`_CtrlCStopper` asks): a function, because Tune pickles the searcher's class by
    value and an ``Event`` (a lock) does not pickle."""
    _FATAL.set()


class _CtrlCStopper:
    """A Tune stopper that ends the run at the first Ctrl-C (a second one aborts at once).

    Tune's own SIGINT handler would end the run too, but silently and with exit code 0; this one
    lets the searcher tell the running trials FAIL (and re-enqueue them), then the driver re-raises
    KeyboardInterrupt so the CLI reports the interruption as the local executor does.
    """

    def __call__(self, trial_id: str, result: dict) -> bool:
        return False

    def stop_all(self) -> bool:
        return _CTRL_C.is_set() or _FATAL.is_set()

    @property
    def pressed(self) -> bool:
        return _CTRL_C.is_set()

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        import signal

        _CTRL_C.clear()
        _FATAL.clear()
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous_env = os.environ.get("TUNE_DISABLE_SIGINT_HANDLER")
        os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"

        def on_sigint(signum: int, frame: Any) -> None:
            _CTRL_C.set()
            signal.signal(signal.SIGINT, signal.default_int_handler)  # a second Ctrl-C aborts

        previous = signal.signal(signal.SIGINT, on_sigint)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)
            if previous_env is None:
                os.environ.pop("TUNE_DISABLE_SIGINT_HANDLER", None)
            else:
                os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = previous_env


def _ctrl_c_stopper() -> Any:
    from ray.tune.stopper import Stopper

    Stopper.register(_CtrlCStopper)  # a Stopper by interface; defined at module level to pickle by reference
    return _CtrlCStopper()


def _tune_name(trial: Any) -> str:
    return f"trial_{trial.trial_id}"
