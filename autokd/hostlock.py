"""An opt-in, per-study lock so a timed measurement runs while the other trials of ITS study pause.

Off unless ``$AUTOKD_LOCK_DIR`` names a folder (or ``on``: ``{tempfile.gettempdir()}/autokd-locks-{uid}``);
unset, empty or ``off``, every scope below is a no-op. Measured on a 2-core host (issue 25,
``bench/latency_isolation.py``), pausing a study's other trials left the spread of one
architecture's figures where it was without the lock (max/min 1.03x onnxruntime, 1.02x eager,
both ways) and only cost the paused trials time, so figures are kept honest by how they are
taken (the deployed runtime on a fixed thread count, warm-up, a median over a time window, the
front re-timed together); the lock stays for cases not measured there (trials sharing one GPU).

When on, only trials of one study wait on each other: a process enters a study's scope
(:func:`study_scope`, keyed by the study's output folder and name; :func:`autokd.trial.run_trial`
does it for every trial), and every lock file lives in that study's folder. Two independent
studies on one host, or a study and the test suite, never wait on each other: they share the
cores as the kernel shares them (threads per trial: :meth:`autokd.config.ExecutorConfig.trial_threads`).
Outside any scope nothing is locked and a measurement times at once (``Alone.alone is False``).

Two ``flock`` files per study and host, in ``{base}/study-{key}`` (``base``: :func:`base_dir`):

* ``busy``: every process of the study that computes (training, prediction, teacher logits) holds
  it SHARED inside :func:`host_busy`, and calls :func:`safe_point` between steps;
* ``gate``: a measurement (:func:`timed_alone`) takes it EXCLUSIVE, then ``busy`` EXCLUSIVE, so
  it starts once every trainer of its study has reached a safe point.

A trainer at a safe point checks the gate with one non-blocking shared ``flock`` (released at
once): when a measurement is waiting it lets go of ``busy``, blocks on the gate until the
measurement ends (the seconds add to :func:`paused_seconds`), and takes ``busy`` back. A trainer
entering :func:`host_busy` passes the gate first, so a waiting measurement is never starved by
trainers that keep starting.

Rules that keep it deadlock-free:

* ``busy`` is held only inside :func:`host_busy` (never by an idle process); :func:`host_idle`
  lets go of it around waits on other processes (reporting an epoch, checkpoint I/O).
* A process acquires in the order gate -> busy, and holds ``busy`` EXCLUSIVE only while holding
  the gate EXCLUSIVE; a measurement releases busy, then the gate.
* :func:`timed_alone` inside :func:`host_busy` releases the caller's own shared ``busy`` first
  and takes it back afterwards; nested :func:`host_busy` / :func:`timed_alone` scopes are
  counted per process (re-entrant), and a :func:`host_busy` inside a measurement takes nothing.
  A scope entered while a lock is held takes effect when the process next holds nothing.
* A measurement waits at most ``timeout`` seconds (``$AUTOKD_LOCK_TIMEOUT``, default 600) for
  trainers to reach a safe point (a hung or stopped neighbour), then times anyway and says so
  (``Alone.alone is False``).

Locks belong to open file descriptions, so after ``fork`` the child drops the inherited ones and
opens its own (spawned processes, Ray workers included, start fresh anyway). ``flock`` locks
are released by the kernel when a process dies. With no other process around every call is a
few uncontended syscalls. No device synchronisation is added: on CUDA a paused trainer's
already-queued kernels may still finish during a measurement's warm-up. This module imports nothing from autokd, so any module may use it.

The compute functions (:mod:`autokd.train`, :func:`autokd.teacher.train_jointnet`) know nothing of
this lock: they take a ``pace`` step hook (default: no-op). Their callers at the edge of a trial,
a teacher build, a committee or a measurement compute inside :func:`paced`, which is the one
place that binds the two (a :func:`host_busy` scope yielding :func:`safe_point` as the hook), and
hand epoch callbacks that wait on other processes through :func:`idle_during`.
"""

from __future__ import annotations

import errno
import hashlib
import os
import tempfile
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, TypeVar

try:
    import fcntl
except ImportError:  # no flock (Windows): every scope is a no-op and nothing is timed alone
    fcntl = None

DEFAULT_TIMEOUT_S = 600.0
F = TypeVar("F", bound=Callable)
_scope: str | None = None  # the study this process computes for (study_scope); None: no lock


def base_dir() -> Path | None:
    """The folder holding every study's lock folder: ``$AUTOKD_LOCK_DIR``, or the default one for
    ``on``; ``None`` (no lock) when it is unset, empty or ``off``."""
    value = os.environ.get("AUTOKD_LOCK_DIR", "")
    if fcntl is None or value.lower() in ("", "off", "none", "0"):
        return None
    if value.lower() in ("on", "1"):
        return Path(tempfile.gettempdir()) / f"autokd-locks-{os.getuid()}"
    return Path(value)


def lock_dir() -> Path | None:
    """The current study's lock folder (``None`` outside :func:`study_scope`, or when disabled)."""
    base, scope = base_dir(), _scope
    return None if base is None or scope is None else base / f"study-{scope}"


def scope_key(*parts: str) -> str:
    """A short, file-name-safe key for a study (e.g. its resolved output folder and its name)."""
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


@contextmanager
def study_scope(key: str | None) -> Iterator[None]:
    """Lock with the processes of study ``key`` only (``None``: no lock) for the duration; re-entrant.

    Example:
        >>> with study_scope(scope_key(str(output_dir), name)), paced() as pace:
        ...     train_model(..., pace=pace)
    """
    global _scope
    with _current().mutex:
        previous, _scope = _scope, key
    try:
        yield
    finally:
        with _current().mutex:
            _scope = previous


def paused_seconds() -> float:
    """Seconds this process has waited at safe points (or entering :func:`host_busy`) for measurements."""
    return _current().paused_s


@dataclass(frozen=True)
class Alone:
    """How a :func:`timed_alone` section began: seconds waited for its study's trainers, and
    whether every other process of its study on this host had paused (``False`` outside a study
    scope, with the lock off, or after the timeout)."""

    waited_s: float = 0.0
    alone: bool = True


class _State:
    """Per-process lock state; replaced after fork."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.mutex = threading.RLock()
        self.folder: Path | None = None
        self.busy_fd = -1
        self.gate_fd = -1
        self.depth = 0  # open host_busy scopes (minus those suspended by host_idle)
        self.measuring = 0  # open timed_alone scopes
        self.held = False  # busy held SHARED
        self.disabled = False
        self.paused_s = 0.0  # seconds spent waiting behind the gate (measurements of this study)

    def close(self) -> None:
        for fd in (self.busy_fd, self.gate_fd):
            if fd >= 0:
                try:
                    os.close(fd)  # closing a copy inherited over fork keeps the parent's lock
                except OSError:
                    pass
        self.busy_fd = self.gate_fd = -1


_state = _State()


def _after_fork_in_child() -> None:
    global _state
    old, _state = _state, _State()
    old.close()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _current() -> _State:
    if _state.pid != os.getpid():  # forked without the at-fork hook (should not happen)
        _after_fork_in_child()
    return _state


def _open(st: _State) -> bool:
    """Open the lock files for the current folder when nothing is held; False when disabled."""
    if st.held or st.measuring:
        return st.busy_fd >= 0
    folder = lock_dir()
    if folder is None:
        st.close()
        st.folder, st.disabled = None, True
        return False
    if folder == st.folder and st.busy_fd >= 0:
        return True
    st.close()
    st.folder, st.disabled = folder, False
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0)
        st.busy_fd = os.open(folder / "busy", flags, 0o600)
        st.gate_fd = os.open(folder / "gate", flags, 0o600)
    except OSError:  # an unwritable temp folder never fails a trial: no isolation, no waiting
        st.close()
        st.disabled = True
        return False
    return True


def _try(fd: int, op: int) -> bool:
    try:
        fcntl.flock(fd, op | fcntl.LOCK_NB)
        return True
    except OSError as err:
        if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return False
        raise


def _take_shared(st: _State) -> None:
    """Take ``busy`` SHARED behind the gate (waits while a measurement is waiting or running)."""
    started = time.monotonic()
    fcntl.flock(st.gate_fd, fcntl.LOCK_SH)
    try:
        fcntl.flock(st.busy_fd, fcntl.LOCK_SH)
    finally:
        fcntl.flock(st.gate_fd, fcntl.LOCK_UN)
    st.held = True
    st.paused_s += time.monotonic() - started


def _release_shared(st: _State) -> None:
    if st.held:
        st.held = False
        fcntl.flock(st.busy_fd, fcntl.LOCK_UN)


def _sync(st: _State) -> None:
    """Hold ``busy`` SHARED exactly when some host_busy scope is open and no measurement is."""
    if st.measuring or st.busy_fd < 0:
        return
    if st.depth > 0 and not st.held:
        _take_shared(st)
    elif st.depth == 0 and st.held:
        _release_shared(st)


@contextmanager
def host_busy() -> Iterator[None]:
    """Mark this process as computing (re-entrant); call :func:`safe_point` inside, regularly."""
    st = _current()
    with st.mutex:
        if st.depth == 0:
            _open(st)
        st.depth += 1
        try:
            _sync(st)
        except BaseException:
            st.depth -= 1
            raise
    try:
        yield
    finally:
        with st.mutex:
            st.depth -= 1
            _sync(st)


def safe_point() -> None:
    """Give way to a waiting measurement; near-free otherwise (two non-blocking flock calls)."""
    st = _state
    if st.depth == 0:  # not computing: nothing to give way with
        return
    with st.mutex:  # another thread of this process measuring holds it: wait for it here
        if not st.held or st.measuring or st.pid != os.getpid():
            return
        if _try(st.gate_fd, fcntl.LOCK_SH):
            fcntl.flock(st.gate_fd, fcntl.LOCK_UN)
            return
        _release_shared(st)  # a measurement holds or waits for the gate: let it have the host
        _sync(st)  # blocks on the gate until the measurement ends, then busy again


@contextmanager
def host_idle() -> Iterator[None]:
    """Not computing for a while (waiting on another process, I/O) inside a host_busy scope."""
    st = _current()
    with st.mutex:
        saved, st.depth = st.depth, 0
        _sync(st)
    try:
        yield
    finally:
        with st.mutex:
            st.depth += saved
            _sync(st)


@contextmanager
def paced() -> Iterator[Callable[[], None]]:
    """Compute in this scope: ``with paced() as pace: train_model(..., pace=pace)``.

    A :func:`host_busy` scope that yields :func:`safe_point` as the step hook the compute
    functions call between steps, so they give way to a measurement without knowing of the lock.
    """
    with host_busy():
        yield safe_point


def idle_during(callback: F | None) -> F | None:
    """``callback`` run with this process not computing (:func:`host_idle`); ``None`` stays ``None``.

    For epoch callbacks called inside :func:`paced`: reporting an epoch may wait on a driver, and a
    measurement elsewhere need not wait for it.
    """
    if callback is None:
        return None

    def idle(*args, **kwargs):
        with host_idle():
            return callback(*args, **kwargs)

    return idle  # type: ignore[return-value]


def _acquire_alone(st: _State, deadline: float) -> bool:
    """Gate, then busy, EXCLUSIVE; polls so that a hung neighbour costs at most the timeout.

    Returns False when the deadline passed first (then the gate may be held without busy).
    """
    pause = 0.0005
    for fd in (st.gate_fd, st.busy_fd):
        while not _try(fd, fcntl.LOCK_EX):
            if time.monotonic() >= deadline:
                return False
            time.sleep(pause)
            pause = min(pause * 2, 0.02)
    return True


@contextmanager
def timed_alone(timeout: float | None = None) -> Iterator[Alone]:
    """Run the body while no other process of this study (:func:`study_scope`) on this host computes.

    Waits for a measurement of the study in progress elsewhere, then for every trainer of the
    study to reach a safe point
    (at most ``timeout`` s, default ``$AUTOKD_LOCK_TIMEOUT`` or 600); yields :class:`Alone`.
    Re-entrant; the caller's own :func:`host_busy` scopes are suspended for the duration.
    """
    st = _current()
    with st.mutex:
        if st.measuring:
            st.measuring += 1
            try:
                yield Alone()
            finally:
                st.measuring -= 1
            return
        if not _open(st):  # no study scope, disabled or unwritable: timed as is, and said so
            yield Alone(alone=False)
            return
        if timeout is None:
            timeout = float(os.environ.get("AUTOKD_LOCK_TIMEOUT", DEFAULT_TIMEOUT_S))
        started = time.monotonic()
        _release_shared(st)  # our own shared busy would block our exclusive one
        try:
            alone = _acquire_alone(st, started + timeout)
            st.measuring = 1
        except BaseException:
            fcntl.flock(st.busy_fd, fcntl.LOCK_UN)
            fcntl.flock(st.gate_fd, fcntl.LOCK_UN)
            _sync(st)
            raise
        try:
            yield Alone(waited_s=time.monotonic() - started, alone=alone)
        finally:
            st.measuring = 0
            fcntl.flock(st.busy_fd, fcntl.LOCK_UN)  # busy first: whoever holds busy EX holds the gate
            fcntl.flock(st.gate_fd, fcntl.LOCK_UN)
            _sync(st)  # back to the caller's host_busy scopes, behind any waiting measurement
