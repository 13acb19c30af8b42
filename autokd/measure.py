"""Measurement: accuracy, per-class accuracy, parameters, serialized size, MACs and latency.

Metrics are pure functions of tensors; the timing functions follow benchmark discipline: warm-up,
synchronise, inference mode, fixed thread count, median of n runs, and the device and versions
recorded next to every number (:func:`environment`).
"""

from __future__ import annotations

import io
import platform
import statistics
import time
from functools import lru_cache

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


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
    """Parameters that ship with the model (packed int8 weights count once each)."""
    total = sum(p.numel() for p in model.parameters())
    if total == 0:  # quantized modules keep weights in packed params, not nn.Parameters
        total = sum(t.numel() for k, t in model.state_dict().items()
                    if isinstance(t, torch.Tensor) and ("weight" in k or "bias" in k))
    return int(total)


def serialized_size_bytes(model: nn.Module) -> int:
    """Bytes of ``torch.save(model.state_dict())``: the weights file a user deploys."""
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.getbuffer().nbytes


def count_macs(model: nn.Module, example: torch.Tensor) -> int:
    """Multiply-accumulates of one forward pass at batch 1 (FLOPs / 2, torch's flop counter)."""
    was_training = model.training
    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(example[:1])
    model.train(was_training)
    return int(counter.get_total_flops() // 2)


@torch.inference_mode()
def latency_ms(model: nn.Module, example: torch.Tensor, *, runs: int = 30, warmup: int = 10,
               threads: int = 1) -> float:
    """Median wall time in ms of a batch-1 forward on ``example.device``.

    On CPU the thread count is fixed (``threads``) for the measurement and restored after; on
    CUDA each run is bracketed by synchronisation.
    """
    model.eval()
    x = example[:1]
    cuda = x.device.type == "cuda"
    old_threads = torch.get_num_threads()
    if not cuda:
        torch.set_num_threads(threads)
    try:
        for _ in range(warmup):
            model(x)
        times = []
        for _ in range(runs):
            if cuda:
                torch.cuda.synchronize()
            start = time.perf_counter()
            model(x)
            if cuda:
                torch.cuda.synchronize()
            times.append((time.perf_counter() - start) * 1000.0)
    finally:
        torch.set_num_threads(old_threads)
    return statistics.median(times)


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


def environment(device: torch.device | None = None) -> dict[str, str]:
    """Where a number was measured: CPU model, GPU name, torch version."""
    env = {"cpu_model": cpu_model(), "torch_version": torch.__version__, "python": platform.python_version()}
    if device is not None and device.type == "cuda":
        env["gpu_name"] = torch.cuda.get_device_name(device)
    return env
