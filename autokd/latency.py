"""Latency where the model will run: the student's ONNX export timed in onnxruntime, or by a command.

Three backends (the study's ``latency_backend``, docs/latency.md):

* ``onnxruntime``: the student exported as ``autokd export`` writes it (:func:`autokd.export.export_model`;
  static int8 students as QDQ ONNX), timed in an ``InferenceSession`` with ``latency_threads``
  intra-op threads and sequential execution: warm-up, then the median of at least ``latency_runs``
  runs over at least ``latency_min_seconds``, at batch ``latency_batch``.
* ``torch``: eager PyTorch (:func:`autokd.measure.latency_stats`).
* ``command``: ``latency_command`` with ``{model}`` replaced by the exported file prints one number,
  the latency in ms (a script that copies the file to a board and runs its benchmark there). One
  command runs at a time across the study: a ``flock`` on a file in the study's output folder, so
  it holds across processes (Ray workers) too.

Example:
    >>> settings = LatencySettings(backend="onnxruntime", threads=1, runs=30)
    >>> deployed_latency(student, example, settings)["latency_ms"]
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import random
import shlex
import shutil
import subprocess
import tempfile
import warnings
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
from torch import nn

from autokd.config import LatencySettings
from autokd.errors import AutokdError
from autokd.measure import LatencyStats, latency_stats, timed_runs

#: Characters of a failing command's last output line kept in the trial's one-line reason.
_LAST_LINE_CHARS = 200


def deployed_latency(model: nn.Module, example: torch.Tensor, settings: LatencySettings) -> dict[str, Any]:
    """The model's latency figures as ``settings.backend`` measures them (``model`` on CPU, eval mode).

    Returns ``latency_ms`` (the median), ``latency_spread_ms`` (p90 - p10; 0 for a command), and what
    produced them: ``latency_backend``, ``latency_threads``, ``latency_batch``, ``latency_runs``.
    A model with no ONNX form (dynamic int8: its quantized Linear has no opset) is timed in eager
    PyTorch under ``onnxruntime``, and says so (``latency_backend: torch``, ``latency_fallback``);
    under ``command`` it raises ``RuntimeError``, as a failing command does (the trial fails with
    one line).
    """
    x = example[:1].expand(settings.batch, *example.shape[1:]).contiguous()  # (B, C, H, W)
    what = {"latency_backend": settings.backend, "latency_threads": settings.threads, "latency_batch": settings.batch}
    if settings.backend == "torch":
        stats = latency_stats(model, x, settings)
        return {**_figures(stats), **what}
    with tempfile.TemporaryDirectory(prefix="autokd-latency-") as folder:
        try:
            path = export_onnx(model, Path(folder) / "student.onnx", x)
        except RuntimeError as err:
            if settings.backend == "command":
                raise
            return {**_figures(latency_stats(model, x, settings)), **what, "latency_backend": "torch",
                    "latency_fallback": str(err)}
        if settings.backend == "onnxruntime":
            return {**_figures(onnx_latency_stats(path, x, settings)), **what}
        ms = command_latency(path, settings)
    return {"latency_ms": ms, "latency_spread_ms": 0.0, "latency_runs": 1, "latency_command": settings.command,
            **what}


def _figures(stats: LatencyStats) -> dict[str, Any]:
    return {"latency_ms": stats.median_ms, "latency_spread_ms": stats.spread_ms, "latency_wait_s": stats.waited_s,
            "latency_alone": stats.alone, "latency_runs": stats.runs}


def export_onnx(model: nn.Module, path: Path, example: torch.Tensor) -> Path:
    """``model`` as ``autokd export --format onnx`` writes it (without the metadata, which does not run)."""
    from autokd.export import export_model

    try:
        path = export_model(model.eval(), "onnx", path, example)
    except AutokdError as err:  # a dynamic-int8 model has no ONNX form: this trial cannot be timed
        raise RuntimeError(f"no ONNX file to time: {err.problem}") from None
    if not _graph_inputs(path):  # the forward left torch (an ONNX teacher run by onnxruntime): traced as a constant
        raise RuntimeError("no ONNX file to time: the exported graph takes no input (the model does not run in torch)")
    return path


def _graph_inputs(path: Path) -> list[str]:
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    initializers = {t.name for t in graph.initializer}
    return [i.name for i in graph.input if i.name not in initializers]


def onnx_session(path: Path, threads: int) -> Any:
    """An onnxruntime CPU session: ``threads`` intra-op threads, one inter-op, sequential, all graph optimisations."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def onnx_latency_stats(path: Path, example: torch.Tensor, settings: LatencySettings) -> LatencyStats:
    """Forward times of the ONNX file at ``path`` in onnxruntime on ``example`` (its batch is the timed batch)."""
    session = onnx_session(path, settings.threads)
    feed = {session.get_inputs()[0].name: np.ascontiguousarray(example.cpu().numpy(), dtype=np.float32)}
    return timed_runs(lambda: session.run(None, feed), settings)


# --------------------------------------------------------------------------- a command on a device


def command_argv(template: str, model: Path | str) -> list[str]:
    """The command's arguments: ``template`` split as a shell would, ``{model}`` replaced in each (no shell runs)."""
    return [arg.replace("{model}", str(model)) for arg in shlex.split(template)]


def check_latency_command(template: str | None) -> None:
    """Refuse a ``latency_command`` whose program cannot be found (one line, before anything trains)."""
    if not template:
        return
    try:
        program = command_argv(template, "model.onnx")[0]
    except (ValueError, IndexError):
        raise AutokdError(f"latency_command {template!r} is not a command line",
                          "give a program and its arguments, with {model} where the ONNX file goes") from None
    if shutil.which(program) is None:
        raise AutokdError(f"latency_command program {program!r} was not found",
                          "give a program on PATH or its full path (a script must be executable)")


@contextlib.contextmanager
def one_at_a_time(lock_path: str | None) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``lock_path`` (kernel-released even if the holder is killed)."""
    if lock_path is None:
        yield
        return
    Path(lock_path).parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def command_latency(path: Path, settings: LatencySettings) -> float:
    """Run ``settings.command`` on the ONNX file at ``path``; the one number it prints (ms).

    Not a number, a non-zero exit or a timeout raise ``RuntimeError`` naming the command and its
    last output line.
    """
    argv = command_argv(settings.command or "", path)
    shown = settings.command
    with one_at_a_time(settings.lock_path):
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=settings.command_timeout)
        except subprocess.TimeoutExpired as err:
            raise RuntimeError(f"latency command {shown!r} timed out after {settings.command_timeout:g} s; "
                               f"last output: {_last_line(_text(err.stdout) + _text(err.stderr))!r}") from None
        except OSError as err:
            raise RuntimeError(f"latency command {shown!r} could not start: {err.strerror or err}") from None
    if done.returncode != 0:
        raise RuntimeError(f"latency command {shown!r} exited with {done.returncode}; "
                           f"last output: {_last_line(done.stdout + done.stderr)!r}")
    last = _last_line(done.stdout)
    try:
        ms = float(last)
    except ValueError:
        ms = float("nan")
    if not np.isfinite(ms) or ms < 0:
        raise RuntimeError(f"latency command {shown!r} printed no latency in ms; last output: "
                           f"{_last_line(done.stdout + done.stderr)!r}")
    return ms


def _text(out: bytes | str | None) -> str:
    return out.decode(errors="replace") if isinstance(out, bytes) else (out or "")


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1][:_LAST_LINE_CHARS] if lines else ""


# --------------------------------------------------------------------------- interleaved re-timing


def interleaved_rounds(timers: Sequence[Callable[[], float]], rounds: int, seed: int = 0) -> list[list[float]]:
    """Call every timer once per round, in a new shuffled order each round; each timer's figure per round.

    A host's speed drifts over seconds (a CPU's clock, a neighbour's load): timed one after another,
    minutes apart as trials are, two models compare the host's moments as much as themselves.
    Interleaved, every round visits every member within a short while, so drift hits them alike; the
    shuffle keeps any one member from always running first (or right after the heaviest). The
    median of a member's figures over the rounds is its re-timed latency.

    Example:
        >>> interleaved_rounds([lambda: 1.0, lambda: 2.0], rounds=3)
        [[1.0, 1.0, 1.0], [2.0, 2.0, 2.0]]
    """
    order = list(range(len(timers)))
    shuffle = random.Random(seed).shuffle
    figures: list[list[float]] = [[] for _ in timers]
    for _ in range(max(1, rounds)):
        shuffle(order)
        for i in order:
            figures[i].append(float(timers[i]()))
    return figures


@dataclasses.dataclass(frozen=True)
class MemberTimer:
    """One member of an interleaved re-timing: ``time()`` returns one round's figure in ms;
    ``backend`` says what times it (``torch`` where a model has no ONNX form under ``onnxruntime``)."""

    time: Callable[[], float]
    backend: str


@contextlib.contextmanager
def member_timers(models: Sequence[nn.Module], examples: Sequence[torch.Tensor], settings: LatencySettings,
                  rounds: int) -> Iterator[list[MemberTimer]]:
    """A timer per model (CPU, eval mode) as ``settings.backend`` times it, each export written once.

    One round of a member is a block as a trial's timing is (warm-up, then the median of at least
    ``settings.runs`` runs), over ``settings.min_seconds / rounds``, so all the rounds together time
    each member about as long as its trial did. Under ``command`` one round is one run of the command
    (it times the model where it runs, as often as it likes). A model with no ONNX form is timed in
    eager PyTorch under ``onnxruntime``; under ``command`` it raises ``RuntimeError``.
    """
    block = dataclasses.replace(settings, min_seconds=settings.min_seconds / max(1, rounds))
    with tempfile.TemporaryDirectory(prefix="autokd-retime-") as folder:
        timers = []
        for i, (model, example) in enumerate(zip(models, examples)):
            x = example[:1].expand(settings.batch, *example.shape[1:]).contiguous()  # (B, C, H, W)
            timers.append(_member_timer(model.eval(), x, block, Path(folder) / f"member{i}.onnx"))
        yield timers


def _member_timer(model: nn.Module, x: torch.Tensor, block: LatencySettings, path: Path) -> MemberTimer:
    if block.backend != "torch":
        try:
            with warnings.catch_warnings():  # tracing a trained student: shape checks are constants, as meant
                warnings.simplefilter("ignore", torch.jit.TracerWarning)
                path = export_onnx(model, path, x)
        except RuntimeError:
            if block.backend == "command":
                raise
        else:
            if block.backend == "command":
                return MemberTimer(lambda: command_latency(path, block), "command")
            session = onnx_session(path, block.threads)
            feed = {session.get_inputs()[0].name: np.ascontiguousarray(x.numpy(), dtype=np.float32)}
            return MemberTimer(lambda: timed_runs(lambda: session.run(None, feed), block).median_ms, "onnxruntime")
    return MemberTimer(lambda: latency_stats(model, x, block).median_ms, "torch")
