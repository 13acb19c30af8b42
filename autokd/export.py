"""Export a trial's student as a deployable file (ONNX or TorchScript), checked against PyTorch.

Compressed students export as they run: pruned and factorized networks as ordinary graphs, static
int8 (torch.ao FX) as QDQ ONNX (int8 weights, QuantizeLinear/DequantizeLinear around Conv and Gemm,
which onnxruntime fuses into integer kernels) or TorchScript with the quantized kernels; dynamic int8
only as TorchScript.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from autokd.checkpoint import deployable, load_checkpoint, network_from_checkpoint
from autokd.errors import AutokdError
from autokd.train import predict

FORMATS = ("onnx", "torchscript")


def load_trial_model(weights_path: Path) -> tuple[nn.Module, dict]:
    """The deployable model of a trial (takes [0, 1] floats) and its checkpoint payload."""
    payload = load_checkpoint(weights_path)
    if payload.get("pair") is not None:  # a routed pair: two students + selector, one state dict
        from autokd.pairs import load_pair

        return load_pair(payload), payload
    if payload.get("compressed_module") is not None:
        from autokd.compress import load_compressed

        return load_compressed(payload), payload
    net = network_from_checkpoint(payload, source=f"student {weights_path}")
    return deployable(net, tuple(payload["mean"]), tuple(payload["std"])).eval(), payload


def export_model(model: nn.Module, fmt: str, path: Path, example: torch.Tensor) -> Path:
    """Write ``model`` as ``fmt``; the batch dimension stays dynamic."""
    if fmt not in FORMATS:
        raise AutokdError(f"unknown export format '{fmt}'", f"use one of {', '.join(FORMATS)}")
    if fmt == "onnx" and _dynamic_int8(model):
        raise AutokdError("a dynamic-int8 model has no ONNX form (no opset holds quantized::linear_dynamic)",
                          "export it with --format torchscript")
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    if fmt == "torchscript":
        with torch.no_grad():
            traced = torch.jit.trace(model, example, check_trace=False)
        traced.save(str(path))
    else:
        torch.onnx.export(model, (example,), str(path), input_names=["image"], output_names=["logits"],
                          dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}}, dynamo=False,
                          opset_version=17)
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
