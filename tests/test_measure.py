"""The per-study measuring lock (autokd.hostlock) with real processes, and latency_stats.

Trainers are spawned processes that loop inside ``host_busy()`` calling ``safe_point()`` and
count their steps in a shared counter; the test process measures with ``timed_alone()``. Every
test uses its own lock folder (``AUTOKD_LOCK_DIR``), inherited by the spawned processes, and runs
in study ``SCOPE`` (``study_scope``), as do the trainers unless a test gives them another study.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import threading
import time

import pytest

from autokd import hostlock
from autokd.hostlock import host_busy, host_idle, paused_seconds, safe_point, study_scope, timed_alone

SPAWN = mp.get_context("spawn")
SCOPE = "study-a"  # the study of the test process and, unless told otherwise, of its trainers


@pytest.fixture(autouse=True)
def lock_dir(tmp_path, monkeypatch):
    folder = tmp_path / "locks"
    monkeypatch.setenv("AUTOKD_LOCK_DIR", str(folder))
    monkeypatch.delenv("AUTOKD_LOCK_TIMEOUT", raising=False)
    with study_scope(SCOPE):
        yield folder / f"study-{SCOPE}"


def trainer(counter, stop, step_s: float, scope: str = SCOPE, paused=None) -> None:
    """A stand-in trial of study ``scope``: computes (sleeps) inside host_busy and reaches a safe
    point each step; ``paused`` (a shared double) gets its paused_seconds() when it stops."""
    with study_scope(scope), host_busy():
        while not stop.is_set():
            with counter.get_lock():
                counter.value += 1
            time.sleep(step_s)
            safe_point()
    if paused is not None:
        paused.value = paused_seconds()


def hold_measurement(scope: str, entered, hold_s: float) -> None:
    """A measurement of study ``scope`` (another process) that lasts ``hold_s`` seconds."""
    with study_scope(scope), timed_alone():
        entered.set()
        time.sleep(hold_s)


def late_trainer(counter, stop, ready) -> None:
    """A trainer that says when it is about to enter host_busy()."""
    ready.set()
    trainer(counter, stop, 0.002)


def stubborn(counter, stop, scope: str = SCOPE) -> None:
    """A busy process of study ``scope`` that never reaches a safe point (hung, or a very long step)."""
    with study_scope(scope), host_busy():
        counter.value = 1
        stop.wait(30)


def start(target, *args) -> tuple[mp.Process, mp.Value, mp.Event]:
    counter, stop = SPAWN.Value("l", 0), SPAWN.Event()
    proc = SPAWN.Process(target=target, args=(counter, stop, *args), daemon=True)
    proc.start()
    deadline = time.monotonic() + 60  # spawning a Python on a loaded host can take seconds
    need = 3 if target is trainer else 1
    while counter.value < need:
        assert time.monotonic() < deadline and proc.is_alive(), "trainer did not start"
        time.sleep(0.01)
    return proc, counter, stop


def finish(proc: mp.Process, stop) -> None:
    stop.set()
    proc.join(10)
    assert proc.exitcode == 0


def in_thread(fn, timeout: float = 10.0):
    """Run ``fn`` in a daemon thread; fail (instead of hanging) if it does not return in time."""
    box: dict = {}
    thread = threading.Thread(target=lambda: box.setdefault("value", fn()), daemon=True)
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), f"{fn.__name__} deadlocked"
    return box.get("value")


def test_timed_alone_with_no_other_process_is_immediate(lock_dir):
    started = time.perf_counter()
    for _ in range(100):
        with timed_alone() as host:
            pass
    assert time.perf_counter() - started < 0.5
    assert host.alone and host.waited_s < 0.05
    assert (lock_dir / "busy").exists() and (lock_dir / "gate").exists()


def test_trainer_pauses_while_timed_alone_and_resumes_after():
    paused = SPAWN.Value("d", -1.0)
    proc, counter, stop = start(trainer, 0.002, SCOPE, paused)
    try:
        for _ in range(2):  # twice: the trainer takes busy back and gives way again
            with timed_alone() as host:
                assert host.alone
                frozen = counter.value
                time.sleep(0.3)  # ~150 steps if it were running
                assert counter.value == frozen
            deadline = time.monotonic() + 5
            while counter.value < frozen + 5:
                assert time.monotonic() < deadline, "trainer did not resume"
                time.sleep(0.01)
    finally:
        finish(proc, stop)
    assert 0.6 <= paused.value < 30  # the trainer counted both pauses (2 x 0.3 s at least)


def test_trainer_that_starts_during_a_measurement_waits_for_it():
    counter, stop, ready = SPAWN.Value("l", 0), SPAWN.Event(), SPAWN.Event()
    with timed_alone():
        proc = SPAWN.Process(target=late_trainer, args=(counter, stop, ready), daemon=True)
        proc.start()
        assert ready.wait(60), "trainer did not start"
        time.sleep(0.3)  # ~150 steps if host_busy() did not wait for the measurement
        assert counter.value == 0
    deadline = time.monotonic() + 60
    while counter.value < 3:
        assert time.monotonic() < deadline and proc.is_alive()
        time.sleep(0.01)
    finish(proc, stop)


def test_nested_scopes_in_one_process_do_not_deadlock():
    def nested() -> bool:
        with host_busy():
            safe_point()
            with host_busy():
                with timed_alone() as outer:
                    with host_busy():  # takes nothing: this process holds the host exclusively
                        safe_point()
                        with timed_alone() as inner:
                            safe_point()
                    with host_idle():
                        pass
                safe_point()
            with host_idle():
                with timed_alone():
                    pass
            safe_point()
        return outer.alone and inner.alone

    assert in_thread(nested)
    assert not hostlock._state.held and hostlock._state.depth == 0 and hostlock._state.measuring == 0


def test_busy_process_measuring_while_a_trainer_runs():
    """A process inside host_busy measures: it drops its own busy lock, the trainer waits."""
    proc, counter, stop = start(trainer, 0.002)
    try:
        def measure() -> bool:
            with host_busy():
                safe_point()
                with timed_alone() as host:
                    frozen = counter.value
                    time.sleep(0.2)
                    paused = counter.value == frozen
                safe_point()
            return host.alone and paused

        assert in_thread(measure)
    finally:
        finish(proc, stop)


def test_threads_of_one_process_share_the_busy_lock():
    """Two threads busy in this process; a third measures: they stop at their next safe point."""
    stop = threading.Event()
    steps = [0, 0]

    def work(i: int) -> None:
        with host_busy():
            while not stop.is_set():
                steps[i] += 1
                time.sleep(0.001)
                safe_point()

    threads = [threading.Thread(target=work, args=(i,), daemon=True) for i in range(2)]
    for t in threads:
        t.start()
    time.sleep(0.05)

    def measure() -> list[int]:
        with timed_alone():
            frozen = list(steps)
            time.sleep(0.1)
            return [now - before for now, before in zip(steps, frozen)]

    assert max(in_thread(measure)) <= 1  # at most the step each thread was in
    time.sleep(0.05)
    stop.set()
    for t in threads:
        t.join(5)
        assert not t.is_alive()
    assert min(steps) > 5


def test_measurement_gives_up_waiting_for_a_stuck_process(monkeypatch):
    monkeypatch.setenv("AUTOKD_LOCK_TIMEOUT", "0.5")
    proc, counter, stop = start(stubborn)
    try:
        started = time.monotonic()
        with timed_alone() as host:
            pass
        assert not host.alone and 0.4 < host.waited_s < 5
        assert time.monotonic() - started < 5
    finally:
        finish(proc, stop)


def test_trainer_of_another_study_never_pauses():
    """The old host-wide lock froze every autokd process; a measurement now pauses its own study only."""
    paused = SPAWN.Value("d", -1.0)
    proc, counter, stop = start(trainer, 0.002, "study-b", paused)
    try:
        with timed_alone() as host:
            frozen = counter.value
            time.sleep(0.3)  # ~150 steps of study b's trainer
            steps = counter.value - frozen
        assert host.alone and host.waited_s < 1.0
        assert steps >= 10  # it kept computing (at least 10 of ~150 on a loaded host)
    finally:
        finish(proc, stop)
    assert 0.0 <= paused.value < 0.2


def test_stuck_process_of_another_study_does_not_delay_a_measurement(monkeypatch):
    """Under the old lock this measurement waited the whole timeout for the other study's process."""
    monkeypatch.setenv("AUTOKD_LOCK_TIMEOUT", "20")
    proc, counter, stop = start(stubborn, "study-b")
    try:
        started = time.monotonic()
        with timed_alone() as host:
            pass
        assert host.alone and host.waited_s < 1.0 and time.monotonic() - started < 2.0
        with study_scope("study-b"), timed_alone(timeout=0.5) as theirs:  # its own study still waits for it
            pass
        assert not theirs.alone and theirs.waited_s >= 0.4
    finally:
        finish(proc, stop)


def test_outside_a_study_nothing_is_locked(lock_dir):
    proc, counter, stop = start(stubborn)
    try:
        with study_scope(None):
            assert hostlock.lock_dir() is None
            started = time.monotonic()
            with host_busy(), timed_alone(timeout=20) as host:
                safe_point()
        assert not host.alone and host.waited_s == 0.0 and time.monotonic() - started < 1.0
    finally:
        finish(proc, stop)
    assert hostlock.lock_dir() == lock_dir  # the fixture's study again


def forked_child(ready, stop) -> None:
    """Computes without a safe point, inside a host_busy scope it entered after the fork."""
    with host_busy():
        safe_point()
        ready.set()
        stop.wait(30)


def probe_alone(result) -> None:
    with study_scope(SCOPE), timed_alone() as host:
        result.value = int(host.alone)


def probe() -> int:
    result = SPAWN.Value("i", -1)
    proc = SPAWN.Process(target=probe_alone, args=(result,))
    proc.start()
    proc.join(60)
    return result.value


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_forked_child_holds_its_own_busy_lock(monkeypatch):
    """Forked inside host_busy, the child's scopes must not share the parent's lock file.

    Had the child kept the inherited open file (one lock for both), the parent leaving its scope
    would release the busy lock of a child that is still computing.
    """
    monkeypatch.setenv("AUTOKD_LOCK_TIMEOUT", "0.5")
    fork = mp.get_context("fork")
    ready, stop = fork.Event(), fork.Event()
    with host_busy():
        child = fork.Process(target=forked_child, args=(ready, stop), daemon=True)
        child.start()
        assert ready.wait(10)
    try:
        assert probe() == 0  # the child still computes, away from a safe point: nobody is alone
    finally:
        stop.set()
        child.join(10)
    assert child.exitcode == 0
    assert probe() == 1


@pytest.mark.parametrize("value", ["off", "", None], ids=["off", "empty", "unset"])
def test_disabled_lock_is_a_no_op(monkeypatch, value):
    """Off by default (issue 25): with the lock off a stuck trainer of the same study delays nothing."""
    monkeypatch.setenv("AUTOKD_LOCK_TIMEOUT", "20")
    proc, counter, stop = start(stubborn)  # holds the study's busy lock in the fixture's folder
    try:
        if value is None:
            monkeypatch.delenv("AUTOKD_LOCK_DIR")
        else:
            monkeypatch.setenv("AUTOKD_LOCK_DIR", value)
        assert hostlock.base_dir() is None and hostlock.lock_dir() is None
        with host_busy():
            safe_point()
            with timed_alone() as host:
                pass
        assert not host.alone and host.waited_s == 0.0
    finally:
        finish(proc, stop)


def test_on_means_the_default_folder(monkeypatch):
    monkeypatch.setenv("AUTOKD_LOCK_DIR", "on")
    assert hostlock.lock_dir() == hostlock.base_dir() / f"study-{SCOPE}"
    assert hostlock.base_dir().name == f"autokd-locks-{os.getuid()}"


def test_latency_stats_median_and_spread():
    import torch

    from autokd.measure import LatencySettings, latency_ms, latency_stats

    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    example = torch.rand(4, 1, 8, 8)
    stats = latency_stats(model, example, LatencySettings(runs=9, warmup=2))
    assert stats.runs == 9 and stats.alone
    assert 0 < stats.p10_ms <= stats.median_ms <= stats.p90_ms
    assert stats.spread_ms == pytest.approx(stats.p90_ms - stats.p10_ms) and stats.spread_ms >= 0
    assert latency_ms(model, example, runs=3, warmup=1) > 0
    assert latency_stats(model, example, LatencySettings(runs=1, warmup=0)).spread_ms == 0.0
    # a time floor: runs go on until they took min_seconds, however few were asked for
    started = time.perf_counter()
    windowed = latency_stats(model, example, LatencySettings(runs=5, warmup=0, min_seconds=0.2))
    assert time.perf_counter() - started >= 0.2 and windowed.runs > 5
