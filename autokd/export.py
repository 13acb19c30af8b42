"""Export a trial's student as a deployable file (ONNX or TorchScript), checked against PyTorch.

Compressed students export as they run: pruned and factorized networks as ordinary graphs, static
int8 (torch.ao FX) as QDQ ONNX (int8 weights, QuantizeLinear/DequantizeLinear around Conv and Gemm,
which onnxruntime fuses into integer kernels) or TorchScript with the quantized kernels; dynamic int8
only as TorchScript.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from autokd.checkpoint import deployable, load_checkpoint, network_from_checkpoint, write_atomically
from autokd.compress import load_compressed
from autokd.errors import AutokdError
from autokd.pairs import load_pair
from autokd.train import predict

FORMATS = ("onnx", "torchscript")


def _load_single(payload: dict, source: str) -> nn.Module:
    net = network_from_checkpoint(payload, source=source)
    return deployable(net, tuple(payload["mean"]), tuple(payload["std"])).eval()


#: Checkpoint kind -> loader of its deployable model (takes [0, 1] floats). Every trial checkpoint
#: declares its kind (``autokd.trial.run_trial``, ``autokd.pairs.run_pair_trial``).
LOADERS: dict[str, Callable[[dict, str], nn.Module]] = {
    "single": _load_single,
    "compressed": lambda payload, source: load_compressed(payload),
    "pair": lambda payload, source: load_pair(payload),
}


def checkpoint_kind(payload: dict) -> str:
    """The declared kind; checkpoints written before kinds were declared are recognised by their keys."""
    if payload.get("kind"):
        return payload["kind"]
    return "pair" if payload.get("pair") is not None else \
        "compressed" if payload.get("compressed_module") is not None else "single"


def load_trial_model(weights_path: Path) -> tuple[nn.Module, dict]:
    """The deployable model of a trial (takes [0, 1] floats) and its checkpoint payload."""
    payload = load_checkpoint(weights_path)
    kind = checkpoint_kind(payload)
    if kind not in LOADERS:
        raise AutokdError(f"checkpoint {weights_path} is of unknown kind '{kind}'",
                          f"re-export it with this autokd version (kinds: {', '.join(LOADERS)})")
    return LOADERS[kind](payload, f"student {weights_path}"), payload


def export_model(model: nn.Module, fmt: str, path: Path, example: torch.Tensor) -> Path:
    """Write ``model`` as ``fmt``; the batch dimension stays dynamic."""
    if fmt not in FORMATS:
        raise AutokdError(f"unknown export format '{fmt}'", f"use one of {', '.join(FORMATS)}")
    if fmt == "onnx" and _dynamic_int8(model):
        raise AutokdError("a dynamic-int8 model has no ONNX form (no opset holds quantized::linear_dynamic)",
                          "export it with --format torchscript")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    # Serialised in memory, then written beside the target and renamed over it: a failure (a full
    # disk) leaves the old file, or none. torch's own writer aborts the process on a full disk.
    buffer = io.BytesIO()
    if fmt == "torchscript":
        with torch.no_grad():
            traced = torch.jit.trace(model, example, check_trace=False)
        torch.jit.save(traced, buffer)
    else:
        torch.onnx.export(model, (example,), buffer, input_names=["image"], output_names=["logits"],
                          dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}}, dynamo=False,
                          opset_version=17)
    try:
        write_atomically(path, buffer.getbuffer())
    except OSError as err:
        raise AutokdError(f"cannot write {path}: {err.strerror or err}",
                          "free space or choose another file with --out") from None
    return path


def _dynamic_int8(model: nn.Module) -> bool:
    from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear

    return any(isinstance(m, DynamicLinear) for m in model.modules())


def exported_predictions(path: Path, fmt: str, images_u8: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Class predictions of the exported file itself (onnxruntime for ONNX)."""
    preds = []
    if fmt == "onnx":
        import onnxruntime as ort

        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        for start in range(0, len(images_u8), batch_size):
            x = (images_u8[start:start + batch_size].float() / 255.0).numpy()
            preds.append(torch.from_numpy(np.asarray(session.run(["logits"], {"image": x})[0])).argmax(1))
    else:
        module = torch.jit.load(str(path), map_location="cpu")
        with torch.inference_mode():
            for start in range(0, len(images_u8), batch_size):
                preds.append(module(images_u8[start:start + batch_size].float() / 255.0).argmax(1))
    return torch.cat(preds)


def agreement(model: nn.Module, path: Path, fmt: str, images_u8: torch.Tensor) -> float:
    """Share of images on which the exported file and the PyTorch model predict the same class."""
    reference = predict(model, images_u8).argmax(1)
    return float((exported_predictions(path, fmt, images_u8) == reference).float().mean())
