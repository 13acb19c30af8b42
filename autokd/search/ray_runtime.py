"""Ray itself for the Ray executor: checked before any work, started or joined, quiet, and stopped.

* :func:`preflight` runs before the teacher trains: a ``ray://`` address needs Ray Client (grpc)
  and a reachable server; a cluster is joined now and its nodes checked; a private Ray is checked
  against this machine's CPUs and GPUs. Asking a trial for more than any node has would
  otherwise leave Tune waiting forever with no message.
* :func:`init_ray` starts a private Ray (or keeps the cluster :func:`preflight` joined), sends
  Tune's and the raylets' tracebacks to ``OUTPUT/ray.log`` instead of the console, and starts
  :mod:`autokd.search.ray_reaper`, which kills that private Ray's processes when the driver ends,
  killed or not. :class:`RayStart` runs it in the background while the driver trains the teacher.
  :func:`shutdown_ray` is its normal end.
* :func:`trial_error_lines` is the Tune callback that turns a worker death into one line on the
  console and the whole error into the trial's ``trial.log``.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import autokd.search.ray_reaper as ray_reaper
from autokd.config import StudyConfig
from autokd.errors import AutokdError
from autokd.search.internals import intercept_ray_prints

#: Ray Client's port on a head node when a ``ray://`` address names none.
CLIENT_PORT = 10001
#: Seconds to wait for a TCP connection to a cluster before calling it unreachable.
CONNECT_TIMEOUT = 3.0
#: Ray's own log file of a search, in its output folder.
RAY_LOG = "ray.log"
#: Loggers whose records (trial tracebacks included) go to ``RAY_LOG`` only.
_FILE_LOGGERS = ("ray.tune", "ray.train", "ray.air")


@dataclass
class _Session:
    joined: bool = False  # ray.init was called by this module (preflight or init_ray)
    reaper: subprocess.Popen | None = None
    handler: logging.Handler | None = None
    errors: dict = field(default_factory=dict)  # Tune trial name -> its latest exception (from Tune's log)


_SESSION = _Session()


# --------------------------------------------------------------------------- checks before any work


def preflight(study_cfg: StudyConfig) -> None:
    """Refuse, in one line, a Ray search that could not run, before the teacher trains or the study opens.

    Example:
        >>> preflight(StudyConfig(executor={"kind": "ray", "gpus_per_trial": 2}))  # doctest: +SKIP
        AutokdError: error: a trial asks for 2 GPUs, this machine has 0; fix: ...
    """
    ex = study_cfg.executor
    if ex.kind != "ray":
        return
    if not ex.address:
        cpus, gpus = local_resources()
        _check_fits(ex.cpus_per_trial, ex.gpus_per_trial, [(cpus, gpus)], "this machine",
                    "or join a cluster that has them (--address)")
        return
    if ex.address.startswith("ray://"):
        _check_ray_client(ex.address)
    elif ex.address != "auto":
        _check_reachable(ex.address, ex.address, "the Ray cluster",
                         "start it with 'ray start --head' (or check the address), "
                         "or leave out --address to use this machine")
    _join(study_cfg)
    import ray

    nodes = [(float(n["Resources"].get("CPU", 0)), float(n["Resources"].get("GPU", 0)))
             for n in ray.nodes() if n.get("Alive")]
    try:
        _check_fits(ex.cpus_per_trial, ex.gpus_per_trial, nodes, f"no node of the Ray cluster at {ex.address}",
                    "or add nodes that have them to the cluster")
    except AutokdError:
        shutdown_ray()
        raise


def local_resources() -> tuple[int, int]:
    """CPUs this process may run on (its affinity, as a container or ``taskset`` limits it) and visible GPUs."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    import torch

    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return cpus, gpus


def _check_fits(cpus: float, gpus: float, nodes: list[tuple[float, float]], where: str, elsewhere: str) -> None:
    """One trial's CPUs and GPUs must fit on one node: Tune never splits a trial."""
    if any(cpus <= c and gpus <= g for c, g in nodes):
        return
    most_cpus = max((c for c, _ in nodes), default=0)
    most_gpus = max((g for _, g in nodes), default=0)
    has = f"{_count(most_cpus)} CPUs and {_count(most_gpus)} GPUs"
    if where == "this machine":
        problem = f"a trial asks for {_count(cpus)} CPUs and {_count(gpus)} GPUs; this machine has {has}"
    else:
        problem = f"a trial asks for {_count(cpus)} CPUs and {_count(gpus)} GPUs; {where} has that many (largest: {has})"
    fix = []
    if gpus > most_gpus:
        fix.append("--gpus-per-trial 0 (trials train on CPUs)" if most_gpus == 0
                   else f"--gpus-per-trial {_count(most_gpus)} or less")
    if cpus > most_cpus:
        fix.append(f"--cpus-per-trial {_count(most_cpus)} or less")
    raise AutokdError(problem, f"ask for {' and '.join(fix)}, {elsewhere}")


def _count(value: float) -> str:
    return f"{value:g}"


def _host_port(address: str, default_port: int) -> tuple[str, int]:
    rest = address.split("://", 1)[-1].rstrip("/")
    host, sep, port = rest.rpartition(":")
    if not sep or not port.isdigit():
        return rest, default_port
    return host.strip("[]"), int(port)


def _check_reachable(address: str, shown: str, what: str, fix: str, default_port: int = 6379) -> None:
    host, port = _host_port(address, default_port)
    try:
        socket.create_connection((host, port), timeout=CONNECT_TIMEOUT).close()
    except OSError as err:
        reason = "no answer within 3 s" if isinstance(err, TimeoutError) else (err.strerror or str(err))
        target = shown if shown.split("://", 1)[-1] == f"{host}:{port}" else f"{shown} ({host}:{port})"
        raise AutokdError(f"cannot reach {what} at {target}: {reason}", fix) from None


def _check_ray_client(address: str) -> None:
    """``ray://`` goes through Ray Client: its grpc modules must import and the server must answer."""
    try:
        import grpc  # noqa: F401  (Ray Client's transport; not part of ray[tune])
        import ray.util.client.worker  # noqa: F401
    except ImportError as err:
        raise AutokdError(f"--address {address} needs Ray Client, which is not installed ({err})",
                          "pip install 'ray[client]' (same version as ray) in this environment, or run the "
                          "search on a node of the cluster with --address auto") from None
    _check_reachable(address, address, "the Ray Client server", "start the head with 'ray start --head' "
                     f"(Ray Client listens on port {CLIENT_PORT}) or check the address", CLIENT_PORT)


# --------------------------------------------------------------------------- start, join, stop


def _join(study_cfg: StudyConfig) -> None:
    import ray

    if ray.is_initialized():
        return
    address = study_cfg.executor.address
    try:
        ray.init(address=address, log_to_driver=False, logging_level=logging.ERROR)
    except (ConnectionError, RuntimeError, ValueError, TimeoutError) as err:
        raise AutokdError(f"cannot join the Ray cluster at {address}: {str(err).splitlines()[0][:200]}",
                          "start it with 'ray start --head' (or check the address), "
                          "or leave out --address to use this machine") from None
    _SESSION.joined = True


def init_ray(study_cfg: StudyConfig) -> bool:
    """Join the cluster at ``executor.address`` or start a private local Ray; True if this module did.

    Tune's and the raylets' messages (trial tracebacks among them) go to ``OUTPUT/ray.log``; a
    private Ray is reaped when this process ends (:mod:`autokd.search.ray_reaper`).
    """
    import ray

    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")  # no CSV/JSON/TensorBoard per trial
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    # Epoch reports carry accuracy only; the other objectives arrive with the final report.
    os.environ.setdefault("TUNE_DISABLE_STRICT_METRIC_CHECKING", "1")
    # One small checkpoint per epoch is the design, not a bottleneck worth a warning per trial.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    if ray.is_initialized() and not _SESSION.joined:  # someone else's Ray (a script, a bench): theirs to stop
        logging.getLogger("ray.tune").setLevel(logging.ERROR)  # metrics live in the study, not in result.json
        return False
    if study_cfg.executor.address:
        _join(study_cfg)
    elif not ray.is_initialized():
        cpus, _ = local_resources()
        before = set(ray_reaper.children(os.getpid()))
        # "local" starts a private instance even when someone else's Ray runs on this machine.
        # No pre-started workers: Tune's trial actors never use them (each starts a worker of its
        # own), so on a small host they only took CPU from the first trials. Workers at the
        # driver's priority, not Ray's default nice 15: beside other work on the host, niced
        # trials got a few percent of a core (bench/results/ray_niceness.json).
        ray.init(address="local", num_cpus=cpus, include_dashboard=False, log_to_driver=False,
                 logging_level=logging.ERROR,
                 _system_config={"enable_worker_prestart": False, "prestart_worker_first_driver": False,
                                 "worker_niceness": 0})
        _SESSION.joined = True
        _start_reaper(set(ray_reaper.children(os.getpid())) - before)
    _route_logs(study_cfg.output_dir / RAY_LOG)
    return True


class RayStart:
    """:func:`init_ray` on a thread of its own, begun at once: the driver goes on (trains the teacher)
    while Ray's processes start. :meth:`wait` returns what ``init_ray`` returned or raises its error;
    :meth:`stop` ends the session (:func:`shutdown_ray` where this started or joined Ray).

    The thread lives until :meth:`stop`: Ray starts its processes with the parent-death signal
    (``PR_SET_PDEATHSIG``), which the kernel sends when the *thread* that started them ends, so a
    thread that returned after ``ray.init`` would take GCS and the raylet with it.
    """

    def __init__(self, study_cfg: StudyConfig):
        self._started: bool | None = None
        self._error: BaseException | None = None
        self._ready = threading.Event()
        self._release = threading.Event()
        self._thread = threading.Thread(target=self._hold, args=(study_cfg,), name="autokd-ray", daemon=True)
        self._thread.start()

    def _hold(self, study_cfg: StudyConfig) -> None:
        try:
            self._started = init_ray(study_cfg)
        except BaseException as err:  # handed to the driver's thread by wait()
            self._error = err
        finally:
            self._ready.set()
        self._release.wait()

    def wait(self) -> bool:
        self._ready.wait()
        if self._error is not None:
            raise self._error
        return bool(self._started)

    def stop(self) -> None:
        self._ready.wait()
        try:
            if self._error is None and self._started:
                shutdown_ray()
        finally:
            self._release.set()
            self._thread.join()


def shutdown_ray() -> None:
    """Stop (or leave) the Ray this module started or joined; its leftover processes are killed at once."""
    import ray

    try:
        ray.shutdown()
    finally:
        _SESSION.joined = False
        reaper, _SESSION.reaper = _SESSION.reaper, None
        if reaper is not None:
            reaper.stdin.close()  # EOF: the reaper kills what ray.shutdown left (agents, idle workers)
            try:
                reaper.wait(timeout=10)
            except subprocess.TimeoutExpired:
                reaper.kill()
        _unroute_logs()


def _start_reaper(roots: set[int]) -> None:
    """The watchdog that kills this private Ray when the pipe to it closes (our end, or our death)."""
    ticks = {pid: ray_reaper.start_ticks(pid) for pid in roots}
    args = [f"{pid}:{t}" for pid, t in ticks.items() if t is not None]
    if not args:
        return
    _SESSION.reaper = subprocess.Popen(
        [sys.executable, "-I", "-S", ray_reaper.__file__, *args], stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True)  # not in the terminal's process group: a Ctrl-C is the driver's alone


# --------------------------------------------------------------------------- Ray's messages


def _route_logs(path: Path) -> None:
    """Tune's log records (a trial's traceback is ~40 lines) to ``path``, none to the console."""
    _unroute_logs()
    if not path.parent.is_dir():  # a bench or script without an output folder: Ray logs as it would
        return
    handler = _QuietFileHandler(path, delay=True)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(_remember_trial_errors)
    for name in _FILE_LOGGERS:
        logger = logging.getLogger(name)
        logger.addHandler(handler)
        logger.setLevel(logging.WARNING)
        logger.propagate = False
    _SESSION.handler = handler
    _route_raylet_errors()


class _QuietFileHandler(logging.FileHandler):
    """A log file that drops what it cannot write (a full disk) instead of printing a "--- Logging error
    ---" block with a traceback per record: the run's own one-line error says what happened."""

    def handleError(self, record: logging.LogRecord) -> None:
        pass


def _remember_trial_errors(record: logging.LogRecord) -> bool:
    """Keep the exception of Tune's "Trial task failed for trial NAME" record for :func:`trial_error_lines`.

    Tune hands its callbacks the trial, not the exception; its log record has both.
    """
    prefix = "Trial task failed for trial "
    if record.exc_info and record.exc_info[1] is not None and str(record.msg).startswith(prefix):
        _SESSION.errors[str(record.msg)[len(prefix):].strip()] = record.exc_info[1]
    return True


def _unroute_logs() -> None:
    handler, _SESSION.handler = _SESSION.handler, None
    if handler is None:
        return
    for name in _FILE_LOGGERS:
        logging.getLogger(name).removeHandler(handler)
        logging.getLogger(name).propagate = True
    handler.close()


def _route_raylet_errors() -> None:
    """Errors the raylets push to the driver (a worker's death: a paragraph each) go to the log file.

    Ray prints them from a thread of its own straight to stdout, with no setting to silence them
    (:func:`~autokd.search.internals.intercept_ray_prints` wraps its printer). A worker's death is
    already one line from :func:`trial_error_lines`; any other raylet error keeps one line on the
    console. If a Ray release moves the printer, its messages print as before.
    """
    intercept_ray_prints(_raylet_to_log)


def _raylet_to_log(data: dict) -> bool:
    """A raylet's message, while logs are routed: to ``RAY_LOG``, and one console line unless a worker died."""
    if data.get("pid") != "raylet" or _SESSION.handler is None:
        return False
    lines = [str(line) for line in data.get("lines", [])]
    logging.getLogger("ray.tune.raylet").warning("%s", "\n".join(lines))
    text = " ".join(lines)
    if "worker died" not in text.lower() and "actor died" not in text.lower():
        first = text.split(". ")[0].strip()[:200]
        sys.stdout.write(f"ray: {first} (details in {_SESSION.handler.baseFilename})\n")
        sys.stdout.flush()
    return True


def trial_error_lines(study_cfg: StudyConfig, note: Callable[[str], None] | None, meta_key: str) -> Any:
    """A Tune callback: each failure of a trial's worker is one console line; its error goes to the trial's log.

    ``meta_key`` names the entry of the trial's config that holds its Optuna ``number``. A retried
    failure prints ``trial N its worker died; retried from its last epoch checkpoint (...)``, or
    ``...; restarts the trial (it had no epoch checkpoint yet) (...)`` before its first epoch; the
    final one (retries spent) only writes the log, since the trial's FAIL line follows.
    """
    return _callback_class()(study_cfg.model_copy(update={"storage": None}), note, meta_key)


def _rebuilt_callback(study_cfg: StudyConfig, meta_key: str) -> Any:
    """What an unpickled callback becomes (Tune pickles its callbacks into ``tuner.pkl``): silent."""
    return trial_error_lines(study_cfg, None, meta_key)


def _callback_class() -> type:
    from ray.tune import Callback

    from autokd.search.study import trial_dir
    from autokd.trial import TRIAL_LOG

    class TrialErrorLines(Callback):
        def __init__(self, study_cfg: StudyConfig, note: Callable[[str], None] | None, meta_key: str) -> None:
            self.study_cfg, self.note, self.meta_key = study_cfg, note, meta_key  # study_cfg has no storage URL

        def __reduce__(self) -> tuple:  # pickled by reference, without the console behind ``note``
            return _rebuilt_callback, (self.study_cfg, self.meta_key)

        def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            self._record(trial, retried=True)

        def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            self._record(trial, retried=False)

        def _record(self, trial: Any, *, retried: bool) -> None:
            number = (trial.config.get(self.meta_key) or {}).get("number")
            if number is None:
                return
            name, reason, details = _trial_error(trial)
            log = trial_dir(self.study_cfg, number) / TRIAL_LOG
            try:
                log.parent.mkdir(parents=True, exist_ok=True)
                with open(log, "a") as f:
                    f.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} worker failed: {name} "
                            f"(failure {trial.num_failures}, {'retried' if retried else 'retries spent'}; "
                            f"Tune's traceback: {self.study_cfg.output_dir / RAY_LOG})\n{details}\n")
            except OSError:
                pass
            if retried and self.note is not None:
                allowed = self.study_cfg.executor.max_failures
                resumes = trial.checkpoint is not None or (trial.config.get(self.meta_key) or {}).get("resume_from")
                how = ("retried from its last epoch checkpoint" if resumes
                       else "restarts the trial (it had no epoch checkpoint yet)")
                self.note(f"trial {number:>3} {reason}; {how} ({trial.num_failures} of {allowed} retries) (log: {log})")

    return TrialErrorLines


def _trial_error(trial: Any) -> tuple[str, str, str]:
    """(exception name, one-line reason, full text with traceback) of the trial's latest error."""
    import traceback

    error = _SESSION.errors.pop(str(trial), None)
    if error is None:
        try:
            error = trial.get_pickled_error()
        except Exception:  # an error that does not unpickle here
            error = None
    name = type(error).__name__ if error is not None else "unknown error"
    details = "".join(traceback.format_exception(error)) if error is not None else "(Tune kept no error)"
    first = next((line.strip() for line in str(error or "").splitlines() if line.strip()), "")
    if "ActorDied" in name or "WorkerCrashed" in name or "NodeDied" in name:
        reason = "its worker died"
    else:
        reason = f"its worker failed ({name}: {first[:120]})"
    return name, reason, details.strip()
