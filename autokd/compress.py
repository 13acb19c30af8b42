"""Compression after distillation: structured and unstructured pruning, low-rank factorization, int8.

``compress_model(model, spec, ...) -> (compressed_model, metrics)`` takes a distilled student
(``nn.Sequential(Normalize, net)``, [0, 1] input), the training images it prunes, calibrates and
fine-tunes with and a ``finetune`` callable (KD from the teacher, :func:`autokd.trial.finetune_student`),
and returns the compressed deployable model and what was done. It measures nothing: the trial
measures the student before (the ``uncompressed_*`` figures it hands in, so the report can show what
the step bought) and the compressed model after (:func:`autokd.deployed.measure_model`).

Methods (``CompressSpec.method``; ``ratio`` means something per method):

* ``structured``: torch-pruning removes ``ratio`` of the channels of every prunable layer (L1-norm
  or group-norm importance, coupled channels of residual and concatenated layers pruned together),
  then ``finetune_epochs`` of KD fine-tuning from the teacher; with ``STRUCTURED_STEPS`` > 1 it
  prunes in steps with the fine-tuning epochs split between them.
* ``fisher``: the same channel pruning with Fisher pruning's importance (Theis et al. 2018): the
  loss increase a channel's removal costs, estimated from activations and gradients on
  ``FISHER_IMAGES`` training images (:class:`autokd.fisher.FisherImportance`), then KD fine-tuning.
* ``unstructured``: per-layer L1 magnitude pruning of conv and linear weights to sparsity ``ratio``
  (``torch.nn.utils.prune``, made permanent). The model still runs dense, so latency is measured as
  is; size counts the weights as stored: int32-index CSR wherever that is smaller than dense.
* ``lowrank``: truncated SVD keeping ``ratio`` of each layer's full rank: a ``k x k`` conv becomes a
  ``k x k`` conv with ``r`` filters followed by a 1x1 conv, a Linear two Linears; a layer is only
  split where it pays: its factorized MACs must be at most ``LOWRANK_MAX_COST`` (0.8) of its dense
  MACs, else it stays dense (an extra layer and activation for a small saving). Then KD fine-tuning.
* ``int8``: torch.ao FX graph-mode quantization on the CPU engine (x86/fbgemm, else qnnpack):
  ``quant_mode`` ``static`` (post-training, calibrated on training images), ``dynamic`` (Linear
  layers only) or ``qat`` (quantization-aware KD fine-tuning for ``finetune_epochs``, then
  convert). Only int8 that shrinks the model is kept: ``dynamic`` is skipped unless Linear layers
  hold more than ``DYNAMIC_MIN_LINEAR_SHARE`` of the parameters (on a convolutional student it
  stores about 4 bytes per parameter, and has no ONNX form), and any int8 model storing more than
  ``INT8_MAX_SIZE_SHARE`` of the float model's bytes is skipped with the figures as the reason.

Every compressed model reports ``bytes_per_param`` (stored bytes / parameters; 4 for fp32 weights,
about 1 for int8) beside ``uncompressed_bytes_per_param``.

Checkpoints stay ``weights_only``: :func:`checkpoint_entry` stores the recipe (method, settings,
channel counts or factorized layers) and the compressed state dict; :func:`load_compressed` rebuilds
the registry model, re-applies the structural change and loads the weights. No code or pickled
module ever goes into a file.
"""

from __future__ import annotations

import copy
import dataclasses
import time
import warnings
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn

from autokd.checkpoint import deployable
from autokd.compress_rules import CHANNEL_METHODS, check_spec, quant_engine
from autokd.config import CompressSpec
from autokd.errors import AutokdError
from autokd.measure import Split, compact_state_dict, count_params, dense_state_dict, serialized_size_bytes
from autokd.models import build_model

FORMAT = "autokd-compressed/1"
CALIBRATION_IMAGES = 1024
#: fisher: training images (seeded sample, all classes) whose activations and gradients rank channels.
FISHER_IMAGES = 512
FISHER_BATCH = 128
#: dynamic int8 quantizes only Linear layers: offered where they hold more than this share of params.
DYNAMIC_MIN_LINEAR_SHARE = 0.5
#: an int8 model storing more than this share of the float model's bytes saves nothing worth a
#: quantized model's accuracy risk: the trial keeps its float student and says why.
INT8_MAX_SIZE_SHARE = 0.9
#: structured: prune in this many steps (torch-pruning ``iterative_steps``) with the fine-tuning
#: epochs split between them; 1 = one-shot, then fine-tune. Capped at ``finetune_epochs``. Not a
#: search knob yet (``CompressSpec`` has no field for it); the bench compares both.
STRUCTURED_STEPS = 1
#: low-rank: a layer is factorized only if the pair costs at most this share of its dense MACs (and
#: params); below a 20% saving the extra layer and activation are not worth the lost accuracy.
LOWRANK_MAX_COST = 0.8
#: The ``uncompressed_*`` figures a compressed trial records, read from the student's measurement.
UNCOMPRESSED_FIGURES = ("accuracy", "test_accuracy", "params", "size_bytes", "macs", "latency_ms")

#: ``finetune(model, epochs) -> seconds``: fine-tunes ``model`` in place (KD from the teacher).
Finetune = Callable[[nn.Module, int], float]

_SHAPE_ATTRS = ("in_channels", "out_channels", "groups", "num_features", "in_features", "out_features")


# --------------------------------------------------------------------------- the stage


@dataclass(frozen=True)
class _Job:
    """What every method reads besides the model and the spec."""

    train: Split  # pruning importance, calibration and fine-tuning images, on the training device
    example: torch.Tensor  # (1, C, H, W) in [0, 1], on the CPU: traces the network
    num_classes: int  # the logits layer is never pruned
    finetune: Finetune | None
    seed: int  # the Fisher sample
    name: str  # the student's family, for messages


def compress_model(model: nn.Module, spec: CompressSpec, *, train: Split, validation: Split, num_classes: int,
                   uncompressed: dict[str, Any], finetune: Finetune | None = None, seed: int = 0,
                   name: str = "student") -> tuple[nn.Module, dict]:
    """Compress a distilled student; returns the deployable compressed model and its metrics.

    Args:
        model: ``nn.Sequential(Normalize, net)`` taking [0, 1] input, trained.
        spec: what to do (``method``, ``ratio``, ``finetune_epochs``, ...).
        train: the training split, on the device the model trains on (pruning importance, int8
            calibration, fine-tuning).
        validation: its first image traces the network.
        num_classes: the logits layer keeps its outputs.
        uncompressed: the student's own measurement (:func:`autokd.deployed.measure_model`), recorded
            as the ``uncompressed_*`` figures.
        finetune: ``finetune(model, epochs) -> seconds``; needed where ``spec.finetune_epochs`` > 0.
        seed: seeds the Fisher importance sample.
        name: the student's family, named when a method cannot handle it.

    Returns:
        ``(model, metrics)``: metrics hold ``compression``, ``compression_detail``, the
        ``uncompressed_*`` figures and timings; or, when the method cannot handle this network,
        the student unchanged with ``compression='none'`` and ``compression_skipped`` saying why.

    Example:
        >>> before = measure_model(student, validation, test, 10, latency=latency, device=device)
        >>> model, metrics = compress_model(student, CompressSpec("int8"), train=train, validation=validation,
        ...                                 num_classes=10, uncompressed=before)
        >>> metrics["uncompressed_size_bytes"]  # the compressed model is measured by the trial, after
    """
    check_spec(spec)
    metrics: dict[str, Any] = {f"uncompressed_{k}": uncompressed[k] for k in UNCOMPRESSED_FIGURES}
    job = _Job(train=train, example=validation.images[:1].cpu().float() / 255.0, num_classes=num_classes,
               finetune=finetune, seed=seed, name=name)
    started = time.perf_counter()
    original = copy.deepcopy(model)
    try:
        compressed, detail, extra = _METHODS[spec.method](model, spec, job)
    except _Skip as skip:
        metrics.update(compression="none", compression_skipped=f"{spec.method}: {skip}",
                       compression_detail="skipped")
        return original, metrics
    metrics.update(extra)
    metrics.update(compression=spec.method, compression_detail=detail,
                   compression_seconds=time.perf_counter() - started,
                   bytes_per_param=bytes_per_param(compressed),
                   uncompressed_bytes_per_param=uncompressed["size_bytes"] / max(uncompressed["params"], 1))
    return compressed, metrics


def bytes_per_param(model: nn.Module) -> float:
    """Stored bytes per shipped parameter: about 4 for fp32 weights, about 1 for int8, less for CSR."""
    return serialized_size_bytes(model) / max(count_params(model), 1)


class _Skip(Exception):
    """This network cannot take this method (reason in the message); the trial keeps its student."""


def _finetune(model: nn.Module, epochs: int, job: _Job) -> float:
    """``job.finetune`` for ``epochs`` (none: 0 seconds), the model left in eval mode; returns seconds spent."""
    if epochs <= 0:
        return 0.0
    if job.finetune is None:
        raise ValueError(f"{epochs} fine-tuning epochs asked, and compress_model was given no finetune callable")
    seconds = job.finetune(model, epochs)
    model.eval()
    return seconds


def _classifier_layers(net: nn.Module, num_classes: int) -> list[nn.Module]:
    """Layers whose output is the logits: their output channels must never be pruned."""
    return [m for m in net.modules() if (isinstance(m, nn.Linear) and m.out_features == num_classes)
            or (isinstance(m, nn.Conv2d) and m.out_channels == num_classes)]


# --------------------------------------------------------------------------- structured


def _structured(model: nn.Sequential, spec: CompressSpec, job: _Job):
    """Channel pruning for ``structured`` (weight-magnitude importance) and ``fisher``."""
    # Imported here, not at the top: torch-pruning imports timm, torchvision and torch._dynamo, seconds
    # in every process that imports autokd.trial (each Ray worker, the report) for a stage most trials skip.
    import torch_pruning as tp

    from autokd.fisher import FisherImportance

    net = model[1]
    device = next(net.parameters()).device
    normalized = model[0](job.example.to(device))  # (1, C, H, W): the net's own input
    if spec.method == "fisher":
        importance, criterion = FisherImportance(), f"fisher ({FISHER_IMAGES} train images)"
    else:
        importance = (tp.importance.MagnitudeImportance(p=1) if spec.importance == "l1"
                      else tp.importance.GroupMagnitudeImportance(p=2))
        criterion = spec.importance
    # Pruning in steps only makes sense with fine-tuning between them: at most one step per epoch.
    steps = max(1, min(int(STRUCTURED_STEPS), spec.finetune_epochs))
    epochs = [spec.finetune_epochs // steps + (1 if i >= steps - spec.finetune_epochs % steps else 0)
              for i in range(steps)]  # the fine-tuning budget split over the steps, remainder last
    convs_before = _channel_count(net)
    seconds = 0.0
    for step, step_epochs in enumerate(epochs):
        try:
            if step == 0:
                pruner = tp.pruner.MetaPruner(net, normalized, importance=importance, pruning_ratio=spec.ratio,
                                              iterative_steps=steps,
                                              ignored_layers=_classifier_layers(net, job.num_classes))
            if isinstance(importance, FisherImportance):  # scores of the network as it is now
                importance.accumulate(model, _fisher_batches(job.train, job.seed))
            pruner.step()  # step k of n prunes to k/n of the ratio (torch-pruning's linear schedule)
            with torch.no_grad():
                model.eval()(normalized)
        except Exception as err:  # a graph torch-pruning cannot trace: keep the student, say why
            raise _Skip(f"torch-pruning failed on {job.name} ({type(err).__name__}: {err})"[:300])
        if step == 0 and _channel_count(net) >= convs_before:
            raise _Skip(f"torch-pruning removed no channel of {job.name}")
        seconds += _finetune(model, step_epochs, job)
    kept = _channel_count(net)
    detail = (f"{criterion} filters, {kept}/{convs_before} conv channels kept, "
              + (f"{steps} steps, ft {'+'.join(map(str, epochs))} ep" if steps > 1 else f"ft {spec.finetune_epochs} ep"))
    return model, detail, {"channels_kept": kept, "channels_before": convs_before, "finetune_seconds": seconds,
                           "prune_steps": steps}


def _fisher_batches(train: Split, seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``FISHER_IMAGES`` training images, a seeded sample (image folders list them class by class)."""
    generator = torch.Generator().manual_seed(seed)
    pick = torch.randperm(len(train.labels), generator=generator)[:FISHER_IMAGES].to(train.labels.device)
    images, labels = train.images[pick], train.labels[pick]
    return [(images[i:i + FISHER_BATCH].float() / 255.0, labels[i:i + FISHER_BATCH])
            for i in range(0, len(labels), FISHER_BATCH)]


def _channel_count(net: nn.Module) -> int:
    return sum(m.out_channels for m in net.modules() if isinstance(m, nn.Conv2d))


def _shape_attrs(model: nn.Module) -> dict[str, dict[str, int]]:
    """Channel counts of every conv, norm and linear layer: enough to rebuild a pruned network."""
    attrs = {}
    for name, module in model.named_modules():
        values = {a: int(getattr(module, a)) for a in _SHAPE_ATTRS if isinstance(getattr(module, a, None), int)}
        if values:
            attrs[name] = values
    return attrs


def _resize_like(model: nn.Module, attrs: dict[str, dict[str, int]], state_dict: dict[str, torch.Tensor]) -> None:
    """Give a fresh registry model the pruned channel counts and tensor shapes, in place."""
    modules = dict(model.named_modules(remove_duplicate=False))
    for name, values in attrs.items():
        for attr, value in values.items():
            setattr(modules[name], attr, value)
    for key, tensor in state_dict.items():
        owner, _, leaf = key.rpartition(".")
        module = modules[owner]
        current = getattr(module, leaf, None)
        if not isinstance(current, torch.Tensor) or current.shape == tensor.shape:
            continue
        if isinstance(current, nn.Parameter):
            setattr(module, leaf, nn.Parameter(torch.empty(tensor.shape, dtype=current.dtype)))
        else:
            module.register_buffer(leaf, torch.empty(tensor.shape, dtype=current.dtype))


# --------------------------------------------------------------------------- unstructured


def _prunable(net: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(n, m) for n, m in net.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def _unstructured(model: nn.Sequential, spec: CompressSpec, job: _Job):
    from torch.nn.utils import prune

    layers = _prunable(model[1])
    # The stem conv (a few weights per filter on the raw image) and the logits layer stay dense,
    # as in the usual magnitude-pruning recipe: they hold a tiny share of the weights.
    keep = {id(layers[0][1])} | {id(m) for m in _classifier_layers(model[1], job.num_classes)}
    pruned = [(n, m) for n, m in layers if id(m) not in keep] or layers
    for _, module in pruned:
        prune.l1_unstructured(module, "weight", amount=spec.ratio)
    # Masks stay attached while fine-tuning, so pruned weights remain zero.
    seconds = _finetune(model, spec.finetune_epochs, job)
    for _, module in pruned:
        prune.remove(module, "weight")
    zeros = sum(int((m.weight == 0).sum()) for _, m in layers)
    total = sum(m.weight.numel() for _, m in layers)
    sparsity = zeros / max(total, 1)
    detail = (f"{100 * sparsity:.0f}% of conv/linear weights zero ({len(pruned)}/{len(layers)} layers pruned), "
              f"stored CSR, runs dense")
    return model, detail, {"sparsity": sparsity, "finetune_seconds": seconds}


# --------------------------------------------------------------------------- low-rank


def lowrank_cost(module: nn.Module, ratio: float) -> tuple[int, float] | None:
    """``(rank, factorized MACs / dense MACs)`` of a conv or linear layer at rank ``ratio``, or None.

    None for layers that cannot be factorized (not conv/linear, grouped or depthwise convs). The MAC
    share equals the param share: both layers of the pair run at the same spatial size as the original.

    Example:
        >>> lowrank_cost(nn.Conv2d(64, 64, 3), 0.5)  # rank 32: 32 * (576 + 64) / (64 * 576)
        (32, 0.5555555555555556)
    """
    if isinstance(module, nn.Conv2d):
        if module.groups != 1:
            return None
        out_c, in_c, kh, kw = module.weight.shape
        fan_in = in_c * kh * kw
    elif isinstance(module, nn.Linear):
        out_c, fan_in = module.weight.shape
    else:
        return None
    rank = max(1, int(round(ratio * min(out_c, fan_in))))
    return rank, rank * (fan_in + out_c) / (out_c * fan_in)


def _factorized(module: nn.Module, ratio: float, max_cost: float | None = LOWRANK_MAX_COST) -> nn.Sequential | None:
    """The rank-``ratio`` SVD factorization of a conv or linear layer, or None if it does not pay.

    ``max_cost``: the most the pair may cost as a share of the dense layer's MACs; ``None`` accepts
    any saving (used on rebuild, where the checkpoint names the layers that were split).
    """
    cost = lowrank_cost(module, ratio)
    if cost is None:
        return None
    rank, share = cost
    if share >= 1.0 or (max_cost is not None and share > max_cost):
        return None
    with torch.no_grad():
        if isinstance(module, nn.Conv2d):
            out_c, in_c, kh, kw = module.weight.shape
            fan_in = in_c * kh * kw
        else:
            out_c, fan_in = module.weight.shape
        w = module.weight.detach().float().reshape(out_c, fan_in)  # (O, I*k*k)
        u, s, vh = torch.linalg.svd(w, full_matrices=False)  # (O, R), (R,), (R, I*k*k)
        root = s[:rank].sqrt()
        first_w = root[:, None] * vh[:rank]  # (r, I*k*k)
        second_w = u[:, :rank] * root[None, :]  # (O, r)
        bias = module.bias is not None
        if isinstance(module, nn.Conv2d):
            first = nn.Conv2d(in_c, rank, (kh, kw), stride=module.stride, padding=module.padding,
                              dilation=module.dilation, bias=False, padding_mode=module.padding_mode)
            second = nn.Conv2d(rank, out_c, 1, bias=bias)
            first.weight.copy_(first_w.reshape(rank, in_c, kh, kw))
            second.weight.copy_(second_w.reshape(out_c, rank, 1, 1))
        else:
            first = nn.Linear(fan_in, rank, bias=False)
            second = nn.Linear(rank, out_c, bias=bias)
            first.weight.copy_(first_w)
            second.weight.copy_(second_w)
        if bias:
            second.bias.copy_(module.bias.detach())
        pair = nn.Sequential(first, second).to(module.weight.device)
        pair.rank = rank
        return pair


def factorize(model: nn.Module, ratio: float, only: list[str] | None = None) -> dict[str, int]:
    """Replace conv/linear layers of ``model`` by their rank-``ratio`` factorizations, in place.

    Returns layer name -> rank of every layer replaced. Layers whose pair would cost more than
    ``LOWRANK_MAX_COST`` of their dense MACs stay dense. ``only`` (rebuild from a checkpoint)
    splits exactly those names, whatever the threshold.
    """
    replaced: dict[str, int] = {}
    for name, module in list(model.named_modules()):
        if only is not None and name not in only:
            continue
        pair = _factorized(module, ratio, max_cost=None if only is not None else LOWRANK_MAX_COST)
        if pair is None:
            continue
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, pair)
        replaced[name] = pair.rank
    return replaced


def _lowrank(model: nn.Sequential, spec: CompressSpec, job: _Job):
    candidates = len(_prunable(model[1]))
    replaced = factorize(model, spec.ratio)
    if not replaced:
        raise _Skip(f"no conv/linear layer of {job.name} gets at least "
                    f"{100 * (1 - LOWRANK_MAX_COST):.0f}% cheaper at rank {spec.ratio}")
    model._autokd_factorized = replaced
    seconds = _finetune(model, spec.finetune_epochs, job)
    dense = candidates - len(replaced)
    detail = (f"rank {spec.ratio:g}: {len(replaced)}/{candidates} layers factorized"
              + (f" ({dense} left dense: pair > {LOWRANK_MAX_COST:g}x of their MACs)" if dense else "")
              + f", ft {spec.finetune_epochs} ep")
    return model, detail, {"layers_factorized": len(replaced), "finetune_seconds": seconds}


# --------------------------------------------------------------------------- int8


def _quantized_copy(model: nn.Module, mode: str, engine: str, example: torch.Tensor) -> nn.Module:
    """The float model prepared for quantization (observers / fake-quant), or dynamic-quantized."""
    from torch.ao.quantization import (get_default_qat_qconfig_mapping, get_default_qconfig_mapping,
                                       quantize_dynamic, quantize_fx)

    torch.backends.quantized.engine = engine
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao's deprecation notice; it is what runs on this torch
        if mode == "dynamic":
            return quantize_dynamic(model.cpu().eval(), {nn.Linear}, dtype=torch.qint8)
        if mode == "qat":
            return quantize_fx.prepare_qat_fx(model.train(), get_default_qat_qconfig_mapping(engine), (example,))
        return quantize_fx.prepare_fx(model.cpu().eval(), get_default_qconfig_mapping(engine), (example,))


def _convert(prepared: nn.Module) -> nn.Module:
    from torch.ao.quantization import quantize_fx

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return quantize_fx.convert_fx(prepared.cpu().eval())


def _int8(model: nn.Sequential, spec: CompressSpec, job: _Job):
    device = job.train.images.device  # where the study trains
    if device.type != "cpu":
        raise _Skip(f"int8 models run on the CPU engine only; this study trains on {device.type}")
    engine = quant_engine()
    example = job.example
    linear = sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.Linear))
    total = sum(p.numel() for p in model.parameters())
    if spec.quant_mode == "dynamic" and linear <= DYNAMIC_MIN_LINEAR_SHARE * total:
        raise _Skip(f"dynamic int8 quantizes only Linear layers, {100 * linear / max(total, 1):.0f}% of "
                    f"{job.name}'s parameters: it would not shrink it "
                    f"(use quant_mode static or qat for convolutional students)")
    float_bytes = serialized_size_bytes(model)
    try:
        prepared = _quantized_copy(model, spec.quant_mode, engine, example)
    except Exception as err:  # FX cannot trace this network
        raise _Skip(f"FX quantization cannot trace {job.name} ({type(err).__name__}: {err})"[:300])
    extra: dict[str, Any] = {"quant_engine": engine}
    if spec.quant_mode == "dynamic":
        quantized = prepared
        detail = f"dynamic, Linear only ({100 * linear / max(total, 1):.0f}% of params int8), {engine}"
    else:
        if spec.quant_mode == "qat":
            extra["finetune_seconds"] = _finetune(prepared, spec.finetune_epochs, job)
        with torch.inference_mode():
            images = job.train.images[:CALIBRATION_IMAGES].cpu()
            prepared.eval()
            for start in range(0, len(images), 256):  # calibration: observers see training batches
                prepared(images[start:start + 256].float() / 255.0)
        quantized = _convert(prepared)
        detail = (f"{spec.quant_mode}, calibrated on {len(images)} train images, {engine}"
                  + (f", QAT {spec.finetune_epochs} ep" if spec.quant_mode == "qat" else ""))
    int8_bytes = serialized_size_bytes(quantized)
    per_param = int8_bytes / max(count_params(quantized), 1)
    if int8_bytes > INT8_MAX_SIZE_SHARE * float_bytes:
        raise _Skip(f"{spec.quant_mode} int8 of {job.name} stores {int8_bytes:,} of its "
                    f"{float_bytes:,} float bytes ({per_param:.2f} bytes per parameter): no saving")
    quantized._autokd_quant = {"mode": spec.quant_mode, "engine": engine}
    return quantized.eval(), f"{detail}, {per_param:.2f} B/param", extra


_METHODS = {"structured": _structured, "fisher": _structured, "unstructured": _unstructured, "lowrank": _lowrank, "int8": _int8}


# --------------------------------------------------------------------------- checkpoints


def checkpoint_entry(model: nn.Module, spec: CompressSpec) -> dict[str, Any]:
    """What a checkpoint stores for a compressed model: recipe + compressed weights, weights_only-safe.

    Example:
        >>> save_checkpoint(path, nn.Identity(), ..., compressed_module=checkpoint_entry(model, spec))
    """
    entry: dict[str, Any] = {"format": FORMAT, **dataclasses.asdict(spec),
                             "state_dict": compact_state_dict(model.state_dict())}
    if spec.method in CHANNEL_METHODS:
        entry["shape_attrs"] = _shape_attrs(model)
    if spec.method == "lowrank":
        entry["factorized"] = dict(getattr(model, "_autokd_factorized", {}))
    if spec.method == "int8":
        entry["engine"] = model._autokd_quant["engine"]
    return entry


def load_compressed(payload: dict[str, Any]) -> nn.Module:
    """Rebuild the deployable compressed model (takes [0, 1] input) from a checkpoint payload.

    The registry builds the uncompressed network, the recipe re-applies the structural change
    (channel counts, factorized layers, quantization graph) and the stored weights are loaded.
    """
    entry = payload["compressed_module"]
    if not isinstance(entry, dict) or entry.get("format") != FORMAT:
        raise AutokdError("checkpoint holds a compressed model in an unknown format",
                          "re-run the trial with this version of autokd")
    net = build_model(payload["family"], num_classes=int(payload["num_classes"]),
                      in_channels=int(payload["in_channels"]), image_size=int(payload["image_size"]),
                      **payload["knobs"])
    model = deployable(net, tuple(payload["mean"]), tuple(payload["std"]))
    method = entry["method"]
    state = entry["state_dict"]
    if method in CHANNEL_METHODS:
        _resize_like(model, entry["shape_attrs"], state)
    elif method == "lowrank":
        factorize(model, float(entry["ratio"]), only=list(entry["factorized"]))
    elif method == "int8":
        engine = entry["engine"]
        if engine not in torch.backends.quantized.supported_engines:
            raise AutokdError(f"this int8 model needs the '{engine}' quantized engine, missing on this machine",
                              f"load it where torch supports {engine}, or export it there")
        size = int(payload["image_size"])
        example = torch.zeros(1, int(payload["in_channels"]), size, size)
        prepared = _quantized_copy(model, entry["quant_mode"], engine, example)
        model = prepared if entry["quant_mode"] == "dynamic" else _convert(prepared)
    try:
        model.load_state_dict(dense_state_dict(state, model.state_dict()))
    except RuntimeError as err:
        first = str(err).strip().splitlines()[0][:160]
        raise AutokdError(f"compressed weights do not fit the rebuilt {payload['family']}: {first}",
                          "re-run the trial with this version of autokd") from None
    return model.eval()
