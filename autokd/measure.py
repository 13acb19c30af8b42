"""Measurement: accuracy, per-class accuracy, parameters, serialized size, MACs and latency.

Metrics are pure functions of tensors; the timing functions follow benchmark discipline: warm-up,
synchronise, inference mode, fixed thread count, median of n runs with its spread, and the device
and versions recorded next to every number (:func:`environment`).
"""

from __future__ import annotations

import io
import platform
import statistics
import time
from collections import OrderedDict
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Callable, NamedTuple

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from autokd.config import LatencySettings
from autokd.hostlock import timed_alone


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Top-1 accuracy in [0, 1]."""
    return float((logits.argmax(1) == labels).float().mean())


def per_class_accuracy(logits: torch.Tensor, labels: torch.Tensor, num_classes: int) -> list[float]:
    """Accuracy within each true class (NaN-free: a class absent from ``labels`` gets 0.0)."""
    correct = (logits.argmax(1) == labels).float()
    hits = torch.zeros(num_classes).index_add_(0, labels.cpu(), correct.cpu())
    counts = torch.bincount(labels.cpu(), minlength=num_classes).float()
    return [float(h / c) if c > 0 else 0.0 for h, c in zip(hits, counts)]


def count_params(model: nn.Module) -> int:
    """Parameters that ship with the model (packed int8 weights count once each).

    Quantized conv and linear layers keep their weights in packed params, not ``nn.Parameter``s:
    they are counted through their ``weight()`` / ``bias()`` accessors; a module running its
    weights outside torch (:class:`autokd.models.files.OnnxModule`) declares ``weight_count``.
    """
    total, seen = 0, set()
    for module in model.modules():
        total += getattr(module, "weight_count", 0)  # weights run outside torch (an ONNX teacher's)
        if _is_quantized(module):
            weight, bias = module.weight(), module.bias()
            total += weight.numel() + (bias.numel() if bias is not None else 0)
            continue
        for p in module.parameters(recurse=False):
            if id(p) not in seen:
                seen.add(id(p))
                total += p.numel()
    return int(total)


def _is_quantized(module: nn.Module) -> bool:
    from torch.ao.nn.quantized import Conv1d, Conv2d, Conv3d, Linear

    return isinstance(module, (Conv1d, Conv2d, Conv3d, Linear))


def compact_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The state dict as autokd stores it: a float weight that is mostly zeros becomes CSR.

    A weight of 2+ dimensions is stored as a CSR matrix of its ``(out, -1)`` view with int32
    indices whenever that takes fewer bytes than dense (density below about one half), so a
    magnitude-pruned model is counted at the size of its sparse file, and a dense one unchanged.
    """
    out, converted = OrderedDict(), {}
    out._metadata = getattr(state_dict, "_metadata", None)  # module versions: quantized layers need them
    for key, tensor in state_dict.items():
        if (isinstance(tensor, torch.Tensor) and tensor.layout == torch.strided and tensor.is_floating_point()
                and tensor.dim() >= 2):
            ident = (tensor.data_ptr(), tuple(tensor.shape))
            if ident not in converted:  # a module registered twice shares its tensor; store it once
                matrix = tensor.detach().reshape(tensor.shape[0], -1)  # (O, I*k*k)
                nnz = int(torch.count_nonzero(matrix))
                sparse_bytes = nnz * (matrix.element_size() + 4) + (matrix.shape[0] + 1) * 4
                if sparse_bytes < matrix.numel() * matrix.element_size():
                    csr = matrix.to_sparse_csr()
                    converted[ident] = torch.sparse_csr_tensor(csr.crow_indices().int(), csr.col_indices().int(),
                                                               csr.values(), tuple(matrix.shape))
                else:
                    converted[ident] = tensor
            out[key] = converted[ident]
        else:
            out[key] = tensor
    return out


def dense_state_dict(state_dict: dict[str, torch.Tensor], reference: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Undo :func:`compact_state_dict`; ``reference`` (the target model's state dict) gives the shapes."""
    out = OrderedDict()
    out._metadata = getattr(state_dict, "_metadata", None)
    for key, tensor in state_dict.items():
        if isinstance(tensor, torch.Tensor) and tensor.layout == torch.sparse_csr:
            dense = tensor.to_dense()
            target = reference.get(key)
            out[key] = dense.reshape(target.shape) if target is not None and target.numel() == dense.numel() else dense
        else:
            out[key] = tensor
    return out


def serialized_size_bytes(model: nn.Module) -> int:
    """Bytes of the weights file a user deploys: ``torch.save`` of the (compact) state dict.

    Dense models: ``torch.save(model.state_dict())``. Magnitude-pruned weights count as the CSR
    they are stored as (:func:`compact_state_dict`); int8 models as their packed int8 weights.
    """
    buffer = io.BytesIO()
    torch.save(compact_state_dict(model.state_dict()), buffer)
    return buffer.getbuffer().nbytes


def count_macs(model: nn.Module, example: torch.Tensor) -> int:
    """Multiply-accumulates of one forward pass at batch 1 (FLOPs / 2, torch's flop counter).

    Quantized conv and linear layers run int8 kernels the flop counter does not see: their MACs
    are counted from weight and output shapes (one MAC per weight per output position). A module
    that runs outside torch (an ONNX teacher in onnxruntime) counts its graph's (``graph_macs``).
    """
    was_training = model.training
    model.eval()
    unseen = [0]

    def quantized(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        weight = module.weight()  # (O, I/groups, k, k) or (O, I)
        positions = output.numel() // output.shape[1] if output.dim() > 2 else output.numel() // output.shape[-1]
        unseen[0] += positions * weight.numel()

    def outside_torch(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        unseen[0] += module.graph_macs(tuple(inputs[0].shape[1:]))

    hooks = [m.register_forward_hook(quantized) for m in model.modules() if _is_quantized(m)]
    hooks += [m.register_forward_hook(outside_torch) for m in model.modules() if hasattr(m, "graph_macs")]
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(example[:1])
    finally:
        for h in hooks:
            h.remove()
    model.train(was_training)
    return int(counter.get_total_flops() // 2) + unseen[0]


@dataclass(frozen=True)
class LatencyStats:
    """Batch-1 forward times of one model: the median and the spread of ``runs`` timed runs.

    ``spread_ms`` is ``p90_ms - p10_ms`` (10th to 90th percentile of the runs, inclusive
    method; 0.0 with fewer than 2 runs). ``waited_s``: how long the measurement waited for the
    other trials of its study (:func:`autokd.hostlock.timed_alone`; 0 with the lock off, the
    default); ``alone``: whether they all paused (False with the lock off).
    """

    median_ms: float
    p10_ms: float
    p90_ms: float
    runs: int
    waited_s: float = 0.0
    alone: bool = True

    @property
    def spread_ms(self) -> float:
        return self.p90_ms - self.p10_ms


@torch.inference_mode()
def latency_stats(model: nn.Module, example: torch.Tensor, settings: LatencySettings = LatencySettings()
                  ) -> LatencyStats:
    """Forward wall times on ``example.device`` at batch ``settings.batch`` (1 by default).

    The whole measurement (warm-up included) runs inside :func:`autokd.hostlock.timed_alone`:
    with the opt-in lock on, the other trials of the study on this host wait at their next safe
    point until it ends; other studies and processes always go on. Runs go on until there are ``settings.runs`` of them and they
    took ``settings.min_seconds``; the median of all of them is the latency. On CPU the thread
    count is fixed (``settings.threads``) and restored after; on CUDA each run is bracketed by
    synchronisation.
    """
    model.eval()
    x = example[:settings.batch]  # (B, C, H, W): the first settings.batch inputs of the example
    cuda = x.device.type == "cuda"
    old_threads = torch.get_num_threads()

    def run() -> None:
        if cuda:
            torch.cuda.synchronize()
        model(x)
        if cuda:
            torch.cuda.synchronize()

    if not cuda:
        torch.set_num_threads(settings.threads)
    try:
        return timed_runs(run, settings)
    finally:
        torch.set_num_threads(old_threads)


def timed_runs(run: Callable[[], Any], settings: LatencySettings) -> LatencyStats:
    """``settings.warmup`` untimed calls of ``run``, then calls until there are ``settings.runs`` of them
    and they took ``settings.min_seconds``; the median and spread of their wall times, inside
    :func:`autokd.hostlock.timed_alone` (warm-up included; it pauses the study's other trials only
    with the opt-in lock on)."""
    with timed_alone() as host:
        for _ in range(settings.warmup):
            run()
        times: list[float] = []
        started = time.perf_counter()
        while len(times) < max(1, settings.runs) or time.perf_counter() - started < settings.min_seconds:
            start = time.perf_counter()
            run()
            times.append((time.perf_counter() - start) * 1000.0)
    deciles = statistics.quantiles(times, n=10, method="inclusive") if len(times) > 1 else times * 9
    return LatencyStats(median_ms=statistics.median(times), p10_ms=deciles[0], p90_ms=deciles[-1], runs=len(times),
                        waited_s=host.waited_s, alone=host.alone)


def latency_ms(model: nn.Module, example: torch.Tensor, *, runs: int = 30, warmup: int = 10,
               threads: int = 1) -> float:
    """Median wall time in ms of a batch-1 forward on ``example.device`` (see :func:`latency_stats`)."""
    return latency_stats(model, example, LatencySettings(runs=runs, threads=threads, warmup=warmup)).median_ms


@lru_cache(maxsize=1)
def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(device: torch.device | None = None) -> dict[str, Any]:
    """Where a number was measured: CPU model and logical core count, GPU name, torch version."""
    import os

    env: dict[str, Any] = {"cpu_model": cpu_model(), "cpu_cores": os.cpu_count(), "torch_version": torch.__version__,
                           "python": platform.python_version()}
    if device is not None and device.type == "cuda":
        env["gpu_name"] = torch.cuda.get_device_name(device)
    return env


# --------------------------------------------------------------------------- a model, as deployed


class Split(NamedTuple):
    """One labelled split on the device its models run on: uint8 images ``(N, C, H, W)``, int64 labels ``(N,)``."""

    images: torch.Tensor
    labels: torch.Tensor


def split_accuracies(logits_of: Callable[[torch.Tensor], torch.Tensor], validation: Split, test: Split,
                     num_classes: int) -> dict[str, Any]:
    """Accuracy and per-class accuracy on validation and test; ``accuracy`` (the objective) is validation's.

    ``logits_of(images)`` gives a model's logits for the split's uint8 images.
    """
    figures: dict[str, Any] = {}
    for split, (images, labels) in (("validation", validation), ("test", test)):
        logits = logits_of(images)
        figures[f"{split}_accuracy"] = accuracy(logits, labels)
        figures[f"per_class_{split}_accuracy"] = per_class_accuracy(logits, labels, num_classes)
    return {"accuracy": figures["validation_accuracy"], **figures}
