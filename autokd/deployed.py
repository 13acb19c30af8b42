"""Every objective of a model as deployed: accuracy on the splits, then its costs (params, bytes,
MACs) and its latency as the study's backend measures it.

It sits above :mod:`autokd.measure` (pure figures and the eager timing loop) and
:mod:`autokd.latency` (the deployed runtimes), so neither imports the other's caller.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from autokd.config import LatencySettings
from autokd.hostlock import paced
from autokd.latency import deployed_latency
from autokd.measure import Split, count_macs, count_params, latency_stats, serialized_size_bytes, split_accuracies
from autokd.train import predict


def measure_model(model: nn.Module, validation: Split, test: Split, num_classes: int, *,
                  latency: LatencySettings, device: torch.device) -> dict[str, Any]:
    """Every objective, measured on the model as deployed (CPU copy for size, MACs, latency).

    Args:
        model: takes [0, 1] images; it runs on ``device``, where the splits' tensors are.
        validation, test: the splits evaluated; ``accuracy`` is validation accuracy (what the search
            optimises), ``test_accuracy`` is for the report only.
        num_classes: for the per-class accuracies.
        latency: how batch-1 latency is timed (:func:`autokd.measure.latency_stats`); on a CUDA ``device`` the GPU
            latency is timed as well.

    Example:
        >>> figures = measure_model(student, context.validation, context.test, context.data.num_classes,
        ...                         latency=context.latency, device=context.device)
        >>> figures["accuracy"], figures["macs"], figures["latency_ms"]
    """
    with paced() as pace:
        metrics = split_accuracies(lambda images: predict(model, images, pace=pace), validation, test, num_classes)
    example = test.images[:1].cpu().float() / 255.0  # (1, C, H, W)
    if device.type == "cuda":  # the GPU latency as well (autokd.measure.latency_stats)
        gpu = latency_stats(model, example.to(device), latency)
        metrics.update(gpu_latency_ms=gpu.median_ms, gpu_latency_spread_ms=gpu.spread_ms)
    metrics.update(model_costs(_cpu_copy(model), example, latency))
    return metrics


def model_costs(model: nn.Module, example: torch.Tensor, latency: LatencySettings | None) -> dict[str, Any]:
    """What running ``model`` (on CPU) costs: params, bytes, MACs and, unless ``latency`` is None, its
    latency as the study's backend measures it (:func:`autokd.latency.deployed_latency`: the median
    ``latency_ms``, its spread, and the backend, threads and batch that produced it).

    None of these depend on the weights' values: an untrained network costs what the trained one
    does, so a search can check its constraints before training (:func:`autokd.trial.cost_check`).
    """
    costs: dict[str, Any] = {"params": count_params(model), "size_bytes": serialized_size_bytes(model),
                             "macs": count_macs(model, example)}
    if latency is not None:
        costs.update(deployed_latency(model.eval(), example, latency))
    return costs


def _cpu_copy(model: nn.Module) -> nn.Module:
    return copy.deepcopy(model).cpu().eval() if next(model.parameters(), torch.empty(0)).device.type != "cpu" \
        else model.eval()
