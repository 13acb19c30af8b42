"""Export a trial's student as a deployable file (ONNX or TorchScript), checked against PyTorch.

Compressed students export as they run: pruned and factorized networks as ordinary graphs, static
int8 (torch.ao FX) as QDQ ONNX (int8 weights, QuantizeLinear/DequantizeLinear around Conv and Gemm,
which onnxruntime fuses into integer kernels) or TorchScript with the quantized kernels; dynamic int8
only as TorchScript.

Every export describes itself (:func:`export_metadata`): class names in order, input shape, layout,
colour mode and value range, the normalisation the model applies inside, study, trial, accuracies
and autokd version. ONNX keeps it in ``metadata_props`` (strings; lists and numbers as JSON), a
TorchScript file in a JSON file beside it (``model.ts`` -> ``model.ts.json``) and inside the archive
(``extra/autokd.json``). :func:`read_metadata` reads either back; ``autokd predict`` uses it.
"""

from __future__ import annotations

import dataclasses
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from autokd.checkpoint import deployable, load_checkpoint, network_from_checkpoint
from autokd.files import write_atomically
from autokd.compress import load_compressed
from autokd.errors import AutokdError
from autokd.models.files import sidecar_path
from autokd.hostlock import paced
from autokd.committee import WithRoute, load_committee
from autokd.train import predict

FORMATS = ("onnx", "torchscript")
METADATA_FORMAT = "autokd-export/1"
#: Metadata values stored as plain text in ONNX ``metadata_props``; every other value is JSON.
TEXT_KEYS = ("format", "layout", "color_mode", "resize", "normalization", "study", "architecture", "compression",
             "dataset", "autokd_version", "input_name", "output_name", "kind", "route_output", "route_meaning",
             "output_values", "family", "weights_file", "weights_sha256")


def _load_single(payload: dict, source: str) -> nn.Module:
    net = network_from_checkpoint(payload, source=source)
    return deployable(net, tuple(payload["mean"]), tuple(payload["std"])).eval()


#: Checkpoint kind -> loader of its deployable model (takes [0, 1] floats). Every trial checkpoint
#: declares its kind (``autokd.trial.run_trial``, ``autokd.trial.committee_trial``).
LOADERS: dict[str, Callable[[dict, str], nn.Module]] = {
    "single": _load_single,
    "compressed": lambda payload, source: load_compressed(payload),
    "pair": lambda payload, source: load_committee(payload),
    "cascade": lambda payload, source: load_committee(payload),
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


def export_model(model: nn.Module, fmt: str, path: Path, example: torch.Tensor,
                 metadata: dict[str, Any] | None = None) -> Path:
    """Write ``model`` as ``fmt``; the batch dimension stays dynamic.

    ``metadata`` (see :func:`export_metadata`) goes into the ONNX file's ``metadata_props``, or
    beside a TorchScript file as ``PATH.json`` and inside it as ``extra/autokd.json``.
    """
    if fmt not in FORMATS:
        raise AutokdError(f"unknown export format '{fmt}'", f"use one of {', '.join(FORMATS)}")
    if fmt == "onnx" and _dynamic_int8(model):
        raise AutokdError("a dynamic-int8 model has no ONNX form (no opset holds quantized::linear_dynamic)",
                          "export it with --format torchscript")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    routed = hasattr(model, "forward_with_route")  # a committee also outputs whether each input was deferred
    if routed:
        model = WithRoute(model).eval()
    outputs = ["logits", "route"] if routed else ["logits"]
    # Serialised in memory, then written beside the target and renamed over it: a failure (a full
    # disk) leaves the old file, or none. torch's own writer aborts the process on a full disk.
    buffer = io.BytesIO()
    text = json.dumps(metadata, indent=2) + "\n" if metadata is not None else None
    if fmt == "torchscript":
        with torch.no_grad():
            traced = torch.jit.trace(model, example, check_trace=False)
        torch.jit.save(traced, buffer, _extra_files={"autokd.json": text} if text else None)
    else:
        torch.onnx.export(model, (example,), buffer, input_names=["image"], output_names=outputs,
                          dynamic_axes={"image": {0: "batch"}, **{o: {0: "batch"} for o in outputs}}, dynamo=False,
                          opset_version=17)
        if metadata is not None:
            buffer = io.BytesIO(_with_onnx_metadata(buffer.getvalue(), metadata))
    try:
        write_atomically(path, buffer.getbuffer())
        if fmt == "torchscript" and text:
            write_atomically(sidecar_path(path), text.encode())
    except OSError as err:
        raise AutokdError(f"cannot write {path}: {err.strerror or err}",
                          "free space or choose another file with --out") from None
    return path


def export_metadata(payload: dict, *, classes: list[str] | None, study: str | None, trial: int | None,
                    figures: dict[str, Any] | None = None) -> dict[str, Any]:
    """What an export says about itself: everything needed to feed it and read its output.

    Args:
        payload: the trial's checkpoint payload (``in_channels``, ``image_size``, ``mean``, ``std``,
            ``num_classes``).
        classes: class names in output order (the study's ``classes`` attribute); None: indices.
        study, trial: where the model came from.
        figures: the trial's figures (``autokd.record.trial_figures``).

    Example:
        >>> meta = export_metadata(payload, classes=["cat", "dog"], study="pets", trial=3, figures=figures)
        >>> meta["input_shape"], meta["color_mode"], meta["value_range"]
        (['batch', 3, 32, 32], 'RGB', [0.0, 1.0])
    """
    import autokd

    figures = figures or {}
    channels, size, num_classes = int(payload["in_channels"]), int(payload["image_size"]), int(payload["num_classes"])
    names = [str(c) for c in classes] if classes else [str(i) for i in range(num_classes)]
    if len(names) != num_classes:
        raise AutokdError(f"the study names {len(names)} classes but the model has {num_classes} outputs",
                          "export from the study that trained this trial")
    meta: dict[str, Any] = {
        "format": METADATA_FORMAT,
        "classes": names,
        "input_name": "image",
        "input_shape": ["batch", channels, size, size],
        "layout": "NCHW",
        "color_mode": "L" if channels == 1 else "RGB",
        "value_range": [0.0, 1.0],
        "resize": f"bilinear to {size}x{size} (PIL), no crop",
        "normalization": "applied inside the model: (x - mean) / std per channel",
        "mean": [float(m) for m in payload["mean"]],
        "std": [float(s) for s in payload["std"]],
        "output_name": "logits",
        "output_shape": ["batch", num_classes],
        "study": study,
        "trial": trial,
        "validation_accuracy": figures.get("validation_accuracy"),
        "test_accuracy": figures.get("test_accuracy"),
        "architecture": figures.get("architecture"),
        "family": (" | ".join(m["family"] for m in payload["committee"]["members"]) if payload.get("committee")
                   else payload.get("family")),  # a registry family, timm/NAME or torchvision/NAME
        "weights_file": payload.get("weights_file"),  # the weights file the student started from, if any
        "weights_sha256": payload.get("weights_sha256"),
        "compression": figures.get("compression") or "none",
        "params": figures.get("params"),
        "dataset": figures.get("dataset") or payload.get("dataset"),
        "autokd_version": autokd.__version__,
    }
    if payload.get("kind") in ("pair", "cascade"):  # a committee: log-probabilities, plus where each input went
        meta.update(kind=payload["kind"], output_values="log-probabilities", route_output="route",
                    route_meaning="1: the input went to the large member, 0: the cheap member answered",
                    test_routing_share=figures.get("test_routing_share"), members=figures.get("member_names"))
    return {k: v for k, v in meta.items() if v is not None}


def _with_onnx_metadata(model_bytes: bytes, metadata: dict[str, Any]) -> bytes:
    import onnx

    proto = onnx.load_from_string(model_bytes)
    del proto.metadata_props[:]
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value if isinstance(value, str) else json.dumps(value)
    return proto.SerializeToString()


def read_metadata(path: Path) -> dict[str, Any]:
    """The metadata of an export written by :func:`export_model` (ONNX or TorchScript)."""
    path = Path(path)
    fix = f"re-export it with 'autokd export STUDY --trial N --out {path}'"
    if not path.is_file():
        raise AutokdError(f"model file {path} does not exist", "pass an .onnx or .ts file written by 'autokd export'")
    if is_onnx(path):
        import onnx

        try:
            proto = onnx.load(str(path), load_external_data=False)
        except Exception as err:
            raise AutokdError(f"cannot read ONNX model {path} ({type(err).__name__})", fix) from None
        props = {p.key: p.value for p in proto.metadata_props}
        if props.get("format") != METADATA_FORMAT:
            raise AutokdError(f"ONNX model {path} carries no autokd metadata (classes, input size)", fix)
        try:
            return {k: v if k in TEXT_KEYS else json.loads(v) for k, v in props.items()}
        except ValueError:
            raise AutokdError(f"ONNX model {path} has unreadable autokd metadata", fix) from None
    text = None
    side = sidecar_path(path)
    if side.is_file():
        text = side.read_text()
    else:
        extra = {"autokd.json": ""}
        try:
            torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
        except Exception as err:
            raise AutokdError(f"cannot read {path} as ONNX or TorchScript ({type(err).__name__})",
                              "pass an .onnx or .ts file written by 'autokd export'") from None
        text = extra["autokd.json"] or None
    if not text:
        raise AutokdError(f"TorchScript model {path} has no metadata ({side.name} is missing)", fix)
    try:
        meta = json.loads(text)
    except ValueError:
        raise AutokdError(f"metadata of {path} is not valid JSON", fix) from None
    if not isinstance(meta, dict) or meta.get("format") != METADATA_FORMAT:
        raise AutokdError(f"metadata of {path} is not autokd export metadata", fix)
    return meta


def is_onnx(path: Path) -> bool:
    """ONNX by suffix; anything else is taken for TorchScript (a zip archive)."""
    return Path(path).suffix.lower() == ".onnx"


def _dynamic_int8(model: nn.Module) -> bool:
    from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear

    return any(isinstance(m, DynamicLinear) for m in model.modules())


def exported_outputs(path: Path, fmt: str, images_u8: torch.Tensor, batch_size: int = 256
                     ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Class predictions of the exported file itself (onnxruntime for ONNX), and a committee's deferrals.

    The second tensor is the export's ``route`` output (1: the input went to the large member),
    or None for a single model.
    """
    preds, routes = [], []
    if fmt == "onnx":
        import onnxruntime as ort

        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        names = [o.name for o in session.get_outputs()]
        for start in range(0, len(images_u8), batch_size):
            x = (images_u8[start:start + batch_size].float() / 255.0).numpy()
            outs = [torch.from_numpy(np.asarray(o)) for o in session.run(names, {"image": x})]
            preds.append(outs[0].argmax(1))
            routes.extend(outs[1:2])
    else:
        module = torch.jit.load(str(path), map_location="cpu")
        with torch.inference_mode():
            for start in range(0, len(images_u8), batch_size):
                out = module(images_u8[start:start + batch_size].float() / 255.0)
                outs = list(out) if isinstance(out, (tuple, list)) else [out]
                preds.append(outs[0].argmax(1))
                routes.extend(outs[1:2])
    return torch.cat(preds), (torch.cat(routes).bool() if routes else None)


def exported_predictions(path: Path, fmt: str, images_u8: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Class predictions of the exported file itself (onnxruntime for ONNX)."""
    return exported_outputs(path, fmt, images_u8, batch_size)[0]


def agreement(model: nn.Module, path: Path, fmt: str, images_u8: torch.Tensor) -> float:
    """Share of images on which the exported file and the PyTorch model predict the same class."""
    with paced() as pace:
        reference = predict(model, images_u8, pace=pace).argmax(1)
    return float((exported_predictions(path, fmt, images_u8) == reference).float().mean())


@dataclass(frozen=True)
class ExportCheck:
    """An exported trial checked on the test split: against PyTorch, and against what its trial recorded."""

    path: Path
    metadata: dict[str, Any]
    agreement: float  # share of test images on which the export and PyTorch predict the same class
    test_images: int
    test_accuracy: float  # the export's own
    recorded_test_accuracy: float
    large_share: float | None = None  # a committee's: share of test inputs the export sends to its large member
    recorded_large_share: float | None = None


def export_trial(model: nn.Module, payload: dict, fmt: str, out: Path, data: Any, *, classes: list[str] | None,
                 study: str, trial: int, figures: dict[str, Any]) -> ExportCheck:
    """Export a trial's model (from :func:`load_trial_model`) to ``out`` and check it on ``data``'s test split.

    ``figures``: the trial's recorded figures (``autokd.record.trial_figures``); ``classes``: the study's
    class names (``data``'s when None).
    """
    example = data.test_images[:1].float() / 255.0
    metadata = export_metadata(payload, classes=classes or list(data.classes), study=study, trial=trial,
                               figures={"dataset": data.name, **figures})
    export_model(model, fmt, out, example, metadata=metadata)
    agree = agreement(model, out, fmt, data.test_images)
    predicted, deferred = exported_outputs(out, fmt, data.test_images)
    check = ExportCheck(out, metadata, agree, len(data.test_labels),
                        test_accuracy=float((predicted == data.test_labels).float().mean()),
                        recorded_test_accuracy=figures.get("test_accuracy", float("nan")))
    if deferred is None:
        return check
    recorded = (figures.get("test_routing_share") or [float("nan")] * 2)[1]
    return dataclasses.replace(check, large_share=float(deferred.float().mean()), recorded_large_share=recorded)
