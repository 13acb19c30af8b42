"""Faults of the world around a study: a database that goes away for a while, a disk that fills up.

Every test drives real ``autokd search`` processes on a tiny digits study and checks the study
itself. The outages are real: the test's PostgreSQL database refuses new connections and has its
open ones terminated (``ALLOW_CONNECTIONS false`` + ``pg_terminate_backend``), then takes them again;
the server itself keeps running for everyone else.

* an outage shorter than ``storage_retry_seconds``: the study finishes with exactly its budget,
  exit 0, one line when the wait starts and one when it ends, no traceback;
* an outage longer than the limit: one line, exit 2; the next run completes the budget;
* a full disk (a small tmpfs the test mounts and fills, with the study on it or on PostgreSQL):
  one line, exit 2, no trial retries spent, and the next run, once there is room, resumes;
* a Ray worker killed before its trial's first epoch checkpoint: the line says the trial restarts;
* faults at random (seeded) moments of a whole study: the invariants hold after each.
"""

from __future__ import annotations

import json
import os
import random
import signal
import threading
import time
from pathlib import Path

import pytest
from optuna.trial import TrialState
from ray_support import (assert_exact, cmdline, descendants, kill_tree, load, run_search, running_with_checkpoint,
                         start_search, wait_for, write_study)

from autokd.record import trial_driver
from tests.conftest import POSTGRES_ADMIN
from tests.tiny import TEST_SEED

pytestmark = [pytest.mark.slow,
              pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed to be used")]

EXECUTORS = ["local", "ray"]


def _database(url: str) -> str:
    return url.rsplit("/", 1)[1]


def refuse_connections(url: str) -> None:
    """The database at ``url`` refuses new connections and its open ones are terminated."""
    import psycopg

    name = _database(url)
    with psycopg.connect(POSTGRES_ADMIN, autocommit=True, connect_timeout=5) as admin:
        admin.execute(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS false')
        admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s "
                      "AND pid <> pg_backend_pid()", (name,))


def allow_connections(url: str) -> None:
    import psycopg

    with psycopg.connect(POSTGRES_ADMIN, autocommit=True, connect_timeout=5) as admin:
        admin.execute(f'ALTER DATABASE "{_database(url)}" WITH ALLOW_CONNECTIONS true')


class Outage:
    """``seconds`` without the database, starting in a thread when :meth:`start` is called."""

    def __init__(self, url: str, seconds: float):
        self.url, self.seconds = url, seconds
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.done = threading.Event()

    def _run(self) -> None:
        try:
            refuse_connections(self.url)
            time.sleep(self.seconds)
        finally:
            allow_connections(self.url)
            self.done.set()

    def start(self) -> "Outage":
        self.thread.start()
        return self

    def __enter__(self) -> "Outage":
        return self

    def __exit__(self, *exc) -> None:
        if self.thread.is_alive():
            self.thread.join(timeout=self.seconds + 30)
        allow_connections(self.url)


def _outage_lines(log: str) -> list[str]:
    return [line for line in log.splitlines() if line.startswith("storage:")]


def search_through_outage(study: Path, url: str, seconds: float, *args: str) -> tuple[int, str]:
    """Run ``autokd search`` and cut its database off for ``seconds`` once a trial has trained an epoch;
    returns its exit code and console output."""
    proc = start_search(study, *args)
    try:
        with Outage(url, seconds) as outage:
            wait_for(lambda: running_with_checkpoint(study), 180, "a running trial's first epoch", proc)
            outage.start()
            code = proc.wait(timeout=240)
    finally:
        kill_tree(proc)
    return code, study.with_suffix(".log").read_text()


@pytest.mark.postgres
@pytest.mark.parametrize("executor", EXECUTORS)
def test_a_database_outage_is_waited_out(tmp_path, tiny_teacher, postgres_url, executor):
    study = write_study(tmp_path, n_trials=3, epochs=6, batch_size=64, storage=postgres_url, teacher=tiny_teacher,
                        executor=executor, max_concurrent=1)
    # 3 s, which the driver (writing every epoch) meets at once: its retry 3.5 s in finds the database back
    code, log = search_through_outage(study, postgres_url, 3)
    assert code == 0, log[-4000:]
    assert "Traceback" not in log and "heartbeat failed" not in log, log[-4000:]
    lines = _outage_lines(log)
    assert len(lines) == 2, log[-4000:]
    assert "lost the connection" in lines[0] and "waiting up to 300 s" in lines[0], lines
    assert "back after" in lines[1], lines
    assert_exact(study, 3)


@pytest.mark.postgres
@pytest.mark.parametrize("executor", ["ray"])  # the local executor stops the same way, with less in between
def test_an_outage_longer_than_the_limit_stops_in_one_line_and_the_next_run_completes(
        tmp_path, tiny_teacher, postgres_url, executor):
    study = write_study(tmp_path, n_trials=2, epochs=6, batch_size=64, storage=postgres_url, teacher=tiny_teacher,
                        executor=executor, max_concurrent=1)
    # the driver meets the outage within an epoch and gives up 3 s later, well before the 8 s are over
    code, log = search_through_outage(study, postgres_url, 8, "--storage-retry-seconds", "3")
    assert code == 2, log[-4000:]
    for noise in ("Traceback", "heartbeat failed", "retried from", "restarts the trial"):  # no trial retries spent
        assert noise not in log, log[-4000:]
    lines = _outage_lines(log)
    errors = [line for line in log.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "waiting up to 3 s" in lines[0], log[-4000:]
    assert len(errors) == 1 and "lost the connection to storage" in errors[0], log[-4000:]

    done = run_search(study, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "re-enqueued" in done.stdout, done.stdout[-3000:]
    assert_exact(study, 2)


# --------------------------------------------------------------------------- a full disk


@pytest.fixture
def small_disk(tmp_path):
    """A 16 MiB tmpfs mounted at ``tmp_path/disk`` (root only), unmounted afterwards."""
    import subprocess

    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(disk)], capture_output=True,
                             text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs to fill (needs root): {mounted.stderr.strip()[:200]}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)


def fill(disk: Path) -> Path:
    """Write a file on ``disk`` until no byte more fits; returns it."""
    filler = disk / "filler"
    chunk = b"\0" * (1 << 16)
    with open(filler, "wb", buffering=0) as out:
        try:
            while True:
                out.write(chunk)
        except OSError:
            pass
        try:
            while True:
                out.write(b"\0" * 512)
        except OSError:
            pass
    return filler


# Both executors, both kinds of storage, in two runs (four would double the file's time): the local
# executor with its SQLite study on the full disk, Ray with the study on PostgreSQL and only its output there.
@pytest.mark.parametrize("executor, storage", [("local", "sqlite"),
                                               pytest.param("ray", "postgres", marks=pytest.mark.postgres)])
def test_a_full_disk_is_one_line_and_the_next_run_resumes(tmp_path, tiny_teacher, small_disk, executor, storage,
                                                          request):
    url = request.getfixturevalue("postgres_url") if storage == "postgres" else None
    study = write_study(small_disk, n_trials=1, epochs=8, batch_size=64, storage=url, teacher=tiny_teacher,
                        executor=executor, max_concurrent=1)
    log = tmp_path / "driver.log"  # not on the small disk: the driver's own words must survive it
    proc = start_search(study, log=log)
    try:
        wait_for(lambda: running_with_checkpoint(study), 180, "a running trial's first epoch", proc)
        filler = fill(small_disk)
        assert proc.wait(timeout=120) == 2, log.read_text()[-4000:]
    finally:
        kill_tree(proc)
    text = log.read_text()
    for noise in ("Traceback", "Logging error", "heartbeat failed", "retried from", "restarts the trial"):
        assert noise not in text, text[-4000:]
    errors = [line for line in text.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and ("No space left on device" in errors[0] or "disk is full" in errors[0]), text[-4000:]
    interrupted = [t.number for t in load(study).get_trials(deepcopy=False, states=(TrialState.RUNNING,
                                                                                        TrialState.FAIL))]
    assert interrupted, text[-4000:]

    filler.unlink()
    done = run_search(study, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    complete = assert_exact(study, 1)
    assert any(t.user_attrs.get("retry_of") in interrupted for t in complete), \
        [(t.number, t.user_attrs.get("retry_of")) for t in complete]


# --------------------------------------------------------------------------- what the lines say


def test_a_worker_killed_before_its_first_checkpoint_restarts_the_trial(tmp_path, tiny_teacher):
    study = write_study(tmp_path, n_trials=1, epochs=3, batch_size=64, teacher=tiny_teacher, executor="ray",
                        max_concurrent=1)
    checkpoint = tmp_path / "out" / "trials" / "00000" / "epoch" / "epoch.pt"
    proc = start_search(study)
    try:
        workers: list[int] = []

        def worker_started() -> bool:
            workers[:] = [pid for pid in descendants(proc.pid) if "ImplicitFunc" in cmdline(pid)]
            return bool(workers)

        wait_for(worker_started, 180, "the trial's worker", proc)
        if checkpoint.is_file():
            pytest.skip("the worker wrote its first epoch checkpoint before it could be killed")
        for pid in workers:
            os.kill(pid, signal.SIGKILL)
        assert proc.wait(timeout=240) == 0, study.with_suffix(".log").read_text()[-4000:]
    finally:
        kill_tree(proc)
    text = " ".join(study.with_suffix(".log").read_text().split())  # rich wraps lines at the console's width
    assert "its worker died; restarts the trial (it had no epoch checkpoint yet) (1 of 2 retries)" in text, text[-3000:]
    assert "retried from its last epoch checkpoint" not in text, text[-3000:]
    assert_exact(study, 1)


# --------------------------------------------------------------------------- faults at random moments


def _left_behind(pids: list[int]) -> list[int]:
    """The processes of ``pids`` still alive (zombies reaped by their parent do not count)."""
    alive = []
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if state != "Z":
            alive.append(pid)
    return alive


@pytest.mark.postgres
def test_faults_at_random_moments_over_a_whole_study(tmp_path, tiny_teacher, postgres_url):
    """Three faults drawn (seeded) from a driver SIGKILL and a database blip, each at a random moment of a
    running trial; after each, and at the end: exactly the budget, all distinct, none RUNNING, no process left."""
    rng = random.Random(28 + TEST_SEED)
    n_trials = 4
    study = write_study(tmp_path, n_trials=n_trials, epochs=5, batch_size=64, storage=postgres_url,
                        teacher=tiny_teacher, executor="local")
    faults = ["driver kill", "database blip", "driver kill"]
    rng.shuffle(faults)
    proc, drawn = None, []
    for fault in faults:
        if proc is None:
            proc = start_search(study, log=tmp_path / f"driver-{len(drawn)}.log")
        wait_for(lambda: proc.poll() is not None or _training_under(study, proc.pid), 180, "a trial of this driver")
        if proc.poll() is not None:  # the study finished before this fault's moment
            break
        time.sleep(rng.uniform(0.0, 1.5))
        drawn.append(fault)
        if fault == "driver kill":
            tree = [proc.pid, *descendants(proc.pid)]
            kill_tree(proc)
            assert not _left_behind(tree)
            proc = None
        else:
            with Outage(postgres_url, rng.uniform(3.0, 8.0)) as outage:
                outage.start()
        _assert_partial(study, n_trials, drawn)
    if proc is not None:
        assert proc.wait(timeout=300) == 0, drawn
    done = run_search(study, timeout=300)
    assert done.returncode == 0, (drawn, done.stdout[-3000:] + done.stderr[-3000:])
    assert_exact(study, n_trials)


def _training_under(study: Path, pid: int) -> bool:
    """Driver ``pid`` holds a RUNNING trial that has written its own epoch checkpoint."""
    try:
        running = load(study).get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    except Exception:  # the study does not exist yet
        return False
    return any((trial_driver(t) or "").split(":")[1:2] == [str(pid)]
               and (study.parent / "out" / "trials" / f"{t.number:05d}" / "epoch" / "epoch.pt").is_file()
               for t in running)


def _assert_partial(study: Path, n_trials: int, drawn: list[str]) -> None:
    """Mid-study invariants: never more than the budget finished, never one configuration twice."""
    trials = load(study).get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(complete) <= n_trials, drawn
    assert len({json.dumps(t.params, sort_keys=True) for t in complete}) == len(complete), drawn
