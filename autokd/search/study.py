"""Opening studies, proposing trials and writing their results: the one door to the database.

Both executors (in-process and Ray Tune) propose trials through :func:`propose` and count the
study's budget through :class:`Budget`, so resuming, a second driver and a crash behave alike.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

import optuna
from optuna.trial import TrialState

from autokd.config import CONSTRAINTS, StudyConfig, TrialConfig
from autokd.errors import AutokdError
from autokd.record import (DRIVER_ATTR, carried_attrs, is_retry, is_stopped, latency_source, queued_attrs,
                           queued_kind, record_duplicate, record_failed, record_objectives, record_rejected,
                           retry_attrs, stored_objectives, trial_accuracy, trial_config, trial_driver, trial_figures,
                           trial_kind, weights_path)
from autokd.search.internals import fail_trial, record_heartbeat, set_system_attr, system_attrs
from autokd.search.driver import driver_id, driver_is_dead
from autokd.search.storage import open_storage

if TYPE_CHECKING:  # the space needs torch; opening a study (the report) does not
    from autokd.search.startup import CostSpread
    from autokd.space import SearchSpace

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
#: Checkpoint file of a trial's last finished epoch, inside ``trials/NNNNN/epoch/``.
EPOCH_FILE = "epoch.pt"
#: Trials whose configuration may not be proposed again: finished, or being trained by a driver.
TAKEN = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)
#: Proposals drawn (the study's sampler first, then random ones) before the space counts as exhausted.
MAX_PROPOSALS = 30
_SAMPLER_ATTEMPTS = 3
#: Seconds a "wait for other drivers' trials" answer is reused before the database is asked again.
_WAIT_RECHECK_SECONDS = 1.0



def trial_dir(study_cfg: StudyConfig, number: int) -> Path:
    """The one folder of trial ``number``: its weights, epoch checkpoint and log."""
    return study_cfg.output_dir / "trials" / f"{number:05d}"


def epoch_checkpoint(study_cfg: StudyConfig, number: int) -> Path:
    return trial_dir(study_cfg, number) / "epoch" / EPOCH_FILE


def sampler_seed(study_seed: int, trials_stored: int) -> int:
    """The sampler's seed for the next proposal: the study's seed and how many trials it holds.

    A fresh sampler seeded by the study alone replays its random start-up phase in every process
    (a resumed study, a second driver, a restart after a crash would re-propose trials 0, 1, ...);
    mixing in the history gives each proposal its own stream while a fresh study with the same
    seed, driven by one process, still proposes the same trials in the same order.
    """
    digest = hashlib.sha256(f"autokd:{study_seed}:{trials_stored}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


def make_sampler(study: StudyConfig, trials_stored: int = 0, *, random: bool = False) -> optuna.samplers.BaseSampler:
    seed = sampler_seed(study.seed, trials_stored)
    if random or study.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if study.sampler == "nsga2":
        population = max(4, min(50, (study.n_trials or 40) // 3))
        return optuna.samplers.NSGAIISampler(population_size=population, seed=seed)
    return optuna.samplers.TPESampler(n_startup_trials=study.startup_trials, multivariate=True, constant_liar=True,
                                      seed=seed)


class SpaceExhausted(AutokdError):
    """Every proposal repeated a configuration the study already holds."""


def duplicate_of(study: optuna.Study, trial: optuna.Trial) -> int | None:
    """The number of another finished or running trial with exactly ``trial``'s parameters, if any.

    Parameters are compared, not resolved configs: they are in the database as soon as a trial
    has been suggested, so of two drivers proposing the same configuration at once, the one that
    checks last always sees the other (both may see each other; then both are replaced).
    """
    params = trial.params
    for other in study.get_trials(deepcopy=False, states=TAKEN):
        if other.number != trial.number and other.params == params:
            return other.number
    return None


def finished_students(study: Any, limit: int) -> list[Any]:
    """Up to ``limit`` finished single, uncompressed trials whose weights exist; Pareto ones first.

    Order: non-dominated trials (among these singles, by the study's directions) by accuracy,
    then the rest by accuracy; ties by trial number. Deterministic for a given study state.
    """
    from optuna.trial import TrialState

    singles = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        cfg = trial_config(t)
        path = weights_path(t)
        if cfg.get("kind", "single") != "single" or cfg.get("compress.method", "none") != "none":
            continue
        if not path or not Path(path).exists() or t.values is None:
            continue
        singles.append(t)
    signs = [1.0 if d.name.lower() == "maximize" else -1.0 for d in study.directions]
    scored = [(t, [s * v for s, v in zip(signs, t.values)]) for t in singles]

    def dominated(a: list[float]) -> bool:
        return any(all(x >= y for x, y in zip(b, a)) and any(x > y for x, y in zip(b, a)) for _, b in scored)

    key = lambda t: (-trial_accuracy(t), t.number)  # noqa: E731
    front = sorted((t for t, v in scored if not dominated(v)), key=key)
    rest = sorted((t for t, v in scored if dominated(v)), key=key)
    return (front + rest)[:limit]


#: Finished singles a reuse committee draws its two members from.
REUSE_MEMBERS = 2


def queue_single_if_needed(study: optuna.Study, finished: int) -> None:
    """Queue a ``kind: single`` trial while the study holds too few singles for a reuse committee.

    ``finished``: reusable singles already finished. Singles running or queued count as coming (a
    crash between queueing and asking leaves a WAITING one, which the next proposal pops).
    """
    coming = sum(queued_kind(t) == "single" for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING, TrialState.WAITING)))
    if finished + coming < REUSE_MEMBERS:
        study.enqueue_trial({"kind": "single"}, user_attrs=queued_attrs("singles first: committees reuse them"))


#: Checks a proposal's cost before it trains: the constraint it breaks ``(name, value, bound)``, or None.
CostCheck = Callable[[TrialConfig], "tuple[str, float, float] | None"]


def propose(study: optuna.Study, study_cfg: StudyConfig, space: SearchSpace,
            cost_check: CostCheck | None = None, spread: CostSpread | None = None) -> tuple[optuna.Trial, TrialConfig]:
    """Ask the study for its next trial, never one that repeats a finished or running configuration.

    The sampler is re-seeded from the study's history before each ask (:func:`sampler_seed`). A
    re-enqueued trial (``retry_of``: its driver died or was stopped) replays its own parameters.
    Any other proposal equal to a taken trial's is told FAIL with ``duplicate_of`` (it never
    trains) and replaced: by the study's sampler, then by random proposals; after
    ``MAX_PROPOSALS`` duplicates the space counts as exhausted (:class:`SpaceExhausted`). A proposal
    whose cost ``cost_check`` finds over a constraint is told FAIL with ``rejected_because`` (the
    constraint, its value and bound) and replaced the same way, before any training. During TPE's
    start-up, ``spread`` chooses the sampler's proposal by its cost (:mod:`autokd.search.startup`).
    """
    # Finished single students a reuse pair may draw from (replaced duplicates never change them).
    students = finished_students(study, space.reuse_pool) if space.reuse_pool else ()
    for attempt in range(MAX_PROPOSALS):
        if space.singles_first:
            queue_single_if_needed(study, len(students))
        # Queued (WAITING) trials do not count: popping one does not add a trial to the history.
        stored = len(study.get_trials(deepcopy=False, states=(*TAKEN, TrialState.FAIL)))
        sampler = make_sampler(study_cfg, stored, random=attempt >= _SAMPLER_ATTEMPTS)
        # the spread's pick on the first try only: a replaced pick (a duplicate, a latency over its bound)
        # falls back to the sampler, so a pool that keeps choosing it cannot exhaust the proposals
        use_spread = spread is not None and attempt == 0
        chosen = spread.choose(study, sampler_seed(study_cfg.seed, stored), students) if use_spread else None
        study.sampler = optuna.samplers.PartialFixedSampler(chosen, sampler) if chosen else sampler
        trial = study.ask()
        config = space.suggest(trial, students)
        if is_retry(trial):
            return trial, config
        twin = duplicate_of(study, trial)
        broken = cost_check(config) if twin is None and cost_check is not None else None
        if twin is None and broken is None:
            return trial, config
        if twin is not None:
            record_duplicate(trial, twin)
        else:
            record_rejected(trial, *broken)
        study.tell(trial, state=TrialState.FAIL)
    raise SpaceExhausted(f"the last {MAX_PROPOSALS} proposals all repeated configurations study "
                         f"'{study_cfg.name}' already holds or broke its constraints before training: "
                         "its search space looks exhausted",
                         "widen the search space, loosen the constraints, or lower n_trials")


class Budget:
    """The study's shared budget: how many trials may still start, asked of the database.

    ``n_trials`` counts finished trials (COMPLETE, PRUNED) of the whole study, whichever driver
    ran them. A driver starts a trial only while finished + running < n_trials; when RUNNING
    trials of other drivers fill the rest, it waits (one of them may still fail), and it stops
    when the study holds n_trials finished trials.
    """

    def __init__(self, study: optuna.Study, n_trials: int | None, max_failed: int):
        self.study, self.n_trials, self.max_failed = study, n_trials, max_failed
        self.failed = 0
        self._wait_until = 0.0

    def counts(self) -> tuple[int, int]:
        trials = self.study.get_trials(deepcopy=False, states=(*FINISHED, TrialState.RUNNING))
        done = sum(t.state in FINISHED for t in trials)
        return done, len(trials) - done

    def decide(self) -> str:
        """``"go"``, ``"wait"`` (ask again later) or ``"stop"``."""
        if self.failed > self.max_failed:
            return "stop"
        if self.n_trials is None:
            return "go"
        if time.monotonic() < self._wait_until:
            return "wait"
        done, running = self.counts()
        if done >= self.n_trials:
            return "stop"
        if done + running >= self.n_trials:
            self._wait_until = time.monotonic() + _WAIT_RECHECK_SECONDS
            return "wait"
        return "go"

    def recheck(self) -> None:
        """A trial was told: the next decision asks the database at once (the last trial's tell ends the run
        now, not after a wait of ``_WAIT_RECHECK_SECONDS`` and Tune's own second of sleep)."""
        self._wait_until = 0.0

    def surplus(self, number: int) -> bool:
        """True when trials numbered below ``number`` already fill the budget (two drivers raced)."""
        if self.n_trials is None:
            return False
        trials = self.study.get_trials(deepcopy=False, states=(*FINISHED, TrialState.RUNNING))
        return sum(t.number < number for t in trials) >= self.n_trials


def open_study(study: StudyConfig, *, create: bool = True, heartbeat: bool = True) -> optuna.Study:
    """Create or load the study named in ``study``; refuse when stored directions differ.

    Optuna silently keeps the stored directions when they differ from the ones asked for, so a
    resumed study whose YAML changed its objectives would optimise the wrong thing: refuse.
    """
    storage = open_storage(study.storage_url, heartbeat=heartbeat, on_stale=RequeueStale(study),
                           retry_seconds=study.storage_retry_seconds)
    names = [s.study_name for s in optuna.get_all_study_summaries(storage, include_best_trial=False)]
    if study.name in names:
        existing = optuna.load_study(study_name=study.name, storage=storage, sampler=make_sampler(study))
        stored = [d.name.lower() for d in existing.directions]
        objectives = stored_objectives(existing)
        if stored != study.directions or (objectives and objectives != study.objectives):
            raise AutokdError(
                f"study '{study.name}' is stored with objectives {objectives or stored}, "
                f"the YAML asks for {study.objectives}",
                "restore the original objectives, or give the study a new name")
        if create:
            _refuse_other_latency(existing, study)
        if existing.metric_names is None and create:  # a study created before metrics were named (search only)
            existing.set_metric_names(study.objectives)
        return existing
    if not create:
        raise AutokdError(f"no study named '{study.name}' in {_safe(study)}",
                          f"run 'autokd search' first, or pick one of: {', '.join(names) or '(none stored)'}")
    created = optuna.create_study(study_name=study.name, storage=storage, directions=study.directions,
                                  sampler=make_sampler(study), load_if_exists=True)
    record_objectives(created, study.objectives)
    created.set_metric_names(study.objectives)  # optuna-dashboard and study.metric_names show them
    return created


def _refuse_other_latency(existing: optuna.Study, study: StudyConfig) -> None:
    """Refuse to go on with latencies timed another way than the stored trials' when latency is ranked on.

    Trials stored before backends were recorded read as eager PyTorch (:func:`autokd.record.latency_source`),
    so a study from before ``onnxruntime`` became the default goes on with ``latency_backend: torch``.
    """
    ranked = "latency_ms" in study.objectives or any(CONSTRAINTS[k][0] == "latency_ms" for k in study.constraints)
    if not ranked:
        return
    wanted = study.latency_settings.label
    for t in existing.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        figures = trial_figures(t)
        if trial_kind(figures) == "single" and latency_source(figures) != wanted:
            raise AutokdError(f"study '{study.name}' holds latencies timed as '{latency_source(figures)}' "
                              f"(trial {t.number}), the YAML asks for '{wanted}'",
                              "set latency_backend, latency_threads and latency_batch as the study was run, "
                              "or give the study a new name")


def _safe(study: StudyConfig) -> str:
    from autokd.search.storage import redact_url

    return redact_url(study.storage_url)


def finished_count(study: optuna.Study) -> int:
    """Trials that count against the budget: COMPLETE and PRUNED (FAIL ones are retried)."""
    return len(study.get_trials(deepcopy=False, states=FINISHED))


# --------------------------------------------------------------------------- resume

def claim_trial(study: optuna.Study, trial: optuna.Trial) -> None:
    """Mark a RUNNING trial as held by this driver and start its heartbeat."""
    set_system_attr(study, trial, DRIVER_ATTR, driver_id())
    record_heartbeat(study, trial)


def interrupted_trials(study: optuna.Study) -> list[int]:
    """Numbers of the trials this process claimed and then told FAIL because it was stopped (Ctrl-C)."""
    me = driver_id()
    return sorted(t.number for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,))
                  if trial_driver(t) == me and is_stopped(t))


def requeue(study: optuna.Study, trial: optuna.trial.FrozenTrial, study_cfg: StudyConfig) -> None:
    """Enqueue a failed trial's parameters again, to resume from its last epoch checkpoint.

    The queued trial carries ``retry_of`` (the trial it repeats, so :func:`propose` lets it
    replay its parameters) and, when the trial left an epoch checkpoint, ``resume_from``. A
    trial that failed before its first suggestion has nothing to replay.
    """
    if not trial.params:
        return
    checkpoint = epoch_checkpoint(study_cfg, trial.number)
    attrs = retry_attrs(trial, checkpoint if checkpoint.is_file() else None)
    study.enqueue_trial(trial.params, user_attrs=attrs, skip_if_exists=False)


def give_back(study: optuna.Study, trial: optuna.Trial) -> None:
    """Undo a trial asked for while another driver took the study's last slot (:meth:`Budget.surplus`).

    It is told FAIL (``surplus``, never trained); a queued trial's fixed parameters go back in
    the queue for whichever driver has room.
    """
    record_failed(trial, "surplus: the study's budget was already full")
    fixed = system_attrs(study, trial).get("fixed_params")
    frozen = study.tell(trial, state=TrialState.FAIL)
    if fixed:
        study.enqueue_trial(fixed, user_attrs=carried_attrs(frozen))


class RequeueStale:
    """The storage's heartbeat-stale callback: a trial whose driver stopped beating is re-enqueued.

    ``optuna.storages.fail_stale_trials(study)`` fails each RUNNING trial whose heartbeat is
    older than the grace period (exactly once, whichever driver calls it) and hands it here.
    """

    def __init__(self, study_cfg: StudyConfig):
        self.study_cfg = study_cfg

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        requeue(study, trial, self.study_cfg)


def reclaim_stale_trials(study: optuna.Study, study_cfg: StudyConfig) -> list[int]:
    """Fail the RUNNING trials whose driver is gone and re-enqueue their parameters.

    A driver is gone when its heartbeat is older than the storage's grace period (Optuna's
    ``fail_stale_trials``, which calls :class:`RequeueStale`), or at once when it ran on this
    host and its process no longer exists (a SIGKILLed ``autokd search``). Safe against other
    drivers doing the same: the FAIL transition locks the row, so each trial is re-enqueued
    once. Returns the numbers of the trials reclaimed here.
    """
    before = {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}
    optuna.storages.fail_stale_trials(study)
    reclaimed = [t.number for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,)) if t.number in before]
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if not driver_is_dead(trial_driver(trial)):
            continue
        if not fail_trial(study, trial, lambda writer: record_failed(writer, "driver died")):
            continue  # another driver reclaimed it first
        requeue(study, trial, study_cfg)
        reclaimed.append(trial.number)
    return sorted(reclaimed)


_HELD_BY_THIS_PROCESS: set[str] = set()


@contextlib.contextmanager
def single_sqlite_driver(study_cfg: StudyConfig) -> Iterator[None]:
    """Refuse a second driver on one SQLite file, whichever executor (PostgreSQL takes several).

    SQLite serialises writers on a file lock; two drivers asking and telling at once end in
    "database is locked" under load, and SQLite files cannot be shared across machines anyway.
    The lock is an ``flock`` on ``study.db.driver.lock`` beside the database, released by the
    kernel even on SIGKILL (the file then stays, unlocked, and the next driver takes it over). On
    any other exit (a normal finish, Ctrl-C, an error) the holder removes the file while still
    holding the lock; a driver that opened the old file meanwhile notices that its lock is on a
    removed file and takes the new one, so two drivers never hold different files.
    """
    from sqlalchemy.engine import make_url

    url = make_url(study_cfg.storage_url)
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
        yield
        return
    lock_path = Path(url.database).with_name(Path(url.database).name + ".driver.lock")
    if str(lock_path) in _HELD_BY_THIS_PROCESS:  # re-entrant: the CLI holds it around the executor's own
        yield
        return
    import fcntl

    handle = _lock_driver_file(lock_path, study_cfg)
    try:
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}\n")
        handle.flush()
        _HELD_BY_THIS_PROCESS.add(str(lock_path))
        try:
            yield
        finally:
            _HELD_BY_THIS_PROCESS.discard(str(lock_path))
            lock_path.unlink(missing_ok=True)  # still locked: nobody can take the file while it goes
            fcntl.flock(handle, fcntl.LOCK_UN)
    finally:
        handle.close()


def _lock_driver_file(lock_path: Path, study_cfg: StudyConfig) -> Any:
    """Open and ``flock`` the lock file that ``lock_path`` names now; refuse when another process holds it."""
    import fcntl

    while True:
        handle = open(lock_path, "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise AutokdError(
                f"study database {_safe(study_cfg)} is already driven by {holder}; "
                "SQLite takes one driver at a time",
                "wait for it to finish, or put the study on PostgreSQL "
                "(--storage postgresql+psycopg://user@host/db) to run several drivers") from None
        try:
            same = os.stat(lock_path).st_ino == os.fstat(handle.fileno()).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return handle
        handle.close()  # the previous holder removed this file as it finished: lock the one the path names now
