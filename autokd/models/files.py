"""A model from a file or from the user's code: an autokd checkpoint, a TorchScript archive, an ONNX file,
or a ``package.module:function`` factory, each as an ``nn.Module`` mapping a batch of images to logits.

A file is recognised by its content, never by its name: a zip archive holding ``code/`` and
``constants.pkl`` is TorchScript, another zip is a ``torch.save`` file (read weights-only, as an
autokd checkpoint), and a protobuf with a graph, inputs and outputs is ONNX (run by onnxruntime,
CUDA where onnxruntime has it, else the CPU). What a file says about its input and output (class
names, channels, side, the normalisation it expects) is read from autokd's export metadata (ONNX
``metadata_props``; ``model.ts.json`` beside a TorchScript file or ``extra/autokd.json`` inside it),
from an autokd checkpoint's fields, and from an ONNX graph's declared shapes.

A factory runs the user's own Python code: it is named in the study file (``teacher.factory``),
never implied by a data file, and imported with the study file's folder first on ``sys.path``.

Example:
    >>> loaded = load_model_file(Path("model.onnx"))
    >>> loaded.kind, loaded.classes, loaded.image_size
    ('onnx', ['0', '1', ...], 8)
"""

from __future__ import annotations

import importlib
import inspect
import json
import math
import sys
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from autokd.errors import AutokdError

KINDS = ("autokd", "torchscript", "onnx")
#: Autokd exports take [0, 1] floats and normalise inside (autokd.export.export_metadata).
INSIDE = "applied inside the model"


@dataclass
class LoadedModel:
    """A model and what its file says about it; ``None``: the file does not say.

    ``mean``/``std`` are the normalisation the network expects to be done outside it (an autokd
    export normalises inside: zeros and ones); ``image_size`` is the side it takes (``None``: any).
    """

    module: nn.Module
    kind: str  # one of KINDS, or "factory"
    source: str  # the path or factory as given, for messages
    classes: list[str] | None = None
    channels: int | None = None
    image_size: int | None = None
    num_classes: int | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    description: str = ""
    accuracy: float | None = None  # the test accuracy an autokd checkpoint records
    identity: list[Path] = field(default_factory=list)  # files whose change makes it another model



def sidecar_path(path: Path) -> Path:
    """The JSON file beside a TorchScript export: ``model.ts`` -> ``model.ts.json``."""
    path = Path(path)
    return path.with_name(path.name + ".json")

def model_file_kind(path: Path) -> str:
    """``autokd``, ``torchscript`` or ``onnx``, from the file's bytes; one line when it is none of them."""
    path = Path(path)
    if not path.is_file():
        raise AutokdError(f"teacher file {path} does not exist",
                          "fix the path of teacher.checkpoint (an autokd checkpoint, TorchScript or ONNX file)")
    if zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
        except (zipfile.BadZipFile, OSError):
            names = []
        if any(n.endswith("constants.pkl") or "/code/" in n for n in names):
            return "torchscript"
        if any(n.endswith("data.pkl") for n in names):
            return "autokd"
    elif _onnx_proto(path) is not None:
        return "onnx"
    raise AutokdError(f"teacher file {path} is neither an autokd checkpoint, a TorchScript archive nor an ONNX model",
                      "pass a file written by 'autokd teacher train', torch.jit.save or torch.onnx.export, "
                      "or build the model in code with teacher.factory")


def _onnx_proto(path: Path) -> Any:
    """The parsed ONNX model, or None when the bytes are not one (protobuf parses much, so ask for a graph)."""
    import onnx

    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception:
        return None
    graph = proto.graph
    return proto if proto.ir_version > 0 and graph.node and graph.input and graph.output else None


def load_model_file(path: Path) -> LoadedModel:
    """The model in ``path`` (recognised by content) in eval mode, with what the file says about it."""
    path = Path(path)
    kind = model_file_kind(path)
    loaded = {"autokd": _load_autokd, "torchscript": _load_torchscript, "onnx": _load_onnx}[kind](path)
    loaded.module.eval()
    loaded.identity = [path]
    return loaded


def _load_autokd(path: Path) -> LoadedModel:
    from autokd.checkpoint import load_checkpoint, network_from_checkpoint

    payload = load_checkpoint(path)
    net = network_from_checkpoint(payload, source=f"teacher {path}")
    knobs = ",".join(f"{k}={v}" for k, v in payload["knobs"].items())
    return LoadedModel(net, "autokd", str(path), classes=_names(payload.get("classes")),
                       channels=int(payload["in_channels"]), image_size=int(payload["image_size"]),
                       num_classes=int(payload["num_classes"]), mean=tuple(payload["mean"]), std=tuple(payload["std"]),
                       description=f"{payload['family']}({knobs})", accuracy=payload.get("accuracy"))


def _load_torchscript(path: Path) -> LoadedModel:

    extra = {"autokd.json": ""}
    try:
        module = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    except Exception as err:
        raise AutokdError(f"TorchScript teacher {path} cannot be loaded ({type(err).__name__})",
                          "save it again with torch.jit.save from the torch version autokd runs") from None
    side = sidecar_path(path)
    text = side.read_text() if side.is_file() else extra["autokd.json"]
    loaded = LoadedModel(module, "torchscript", str(path), description=f"TorchScript {path.name}")
    _apply_export_metadata(loaded, _json(text))
    return loaded


def _load_onnx(path: Path) -> LoadedModel:
    proto = _onnx_proto(path)
    inputs = [i for i in proto.graph.input if i.name not in {t.name for t in proto.graph.initializer}]
    if len(inputs) != 1 or len(proto.graph.output) < 1:
        raise AutokdError(f"ONNX teacher {path} has {len(inputs)} inputs and {len(proto.graph.output)} outputs",
                          "export a model with one image input and logits as its first output")
    in_dims, out_dims = _dims(inputs[0]), _dims(proto.graph.output[0])
    if len(in_dims) != 4 or len(out_dims) != 2:
        raise AutokdError(f"ONNX teacher {path} takes shape {_shape(in_dims)} and gives {_shape(out_dims)}",
                          "export a model taking images (batch, channels, height, width) and giving logits "
                          "(batch, classes)")
    if isinstance(in_dims[2], int) and isinstance(in_dims[3], int) and in_dims[2] != in_dims[3]:
        raise AutokdError(f"ONNX teacher {path} takes {in_dims[2]}x{in_dims[3]} images; autokd feeds square ones",
                          "export it for square images, or with dynamic height and width")
    weights = sum(int(np.prod(t.dims)) for t in proto.graph.initializer)
    module = OnnxModule(path.read_bytes(), inputs[0].name, proto.graph.output[0].name, weights, batch=_int(in_dims[0]))
    loaded = LoadedModel(module, "onnx", str(path), channels=_int(in_dims[1]), image_size=_int(in_dims[2]),
                         num_classes=_int(out_dims[1]), description=f"ONNX {path.name}")
    props = {p.key: p.value for p in proto.metadata_props}
    meta = {k: _json(v) if k in ("classes", "input_shape", "mean", "std") else v for k, v in props.items()}
    _apply_export_metadata(loaded, meta)
    return loaded


def _apply_export_metadata(loaded: LoadedModel, meta: dict | None) -> None:
    """Class names, input shape and normalisation from autokd's export metadata (or a file written like it)."""
    if not isinstance(meta, dict):
        return
    loaded.classes = _names(meta.get("classes")) or loaded.classes
    shape = meta.get("input_shape")
    if isinstance(shape, list) and len(shape) == 4:
        loaded.channels, loaded.image_size = _int(shape[1]) or loaded.channels, _int(shape[2]) or loaded.image_size
    if loaded.classes:
        loaded.num_classes = len(loaded.classes)
    if str(meta.get("normalization", "")).startswith(INSIDE):
        channels = loaded.channels or len(meta.get("mean") or [0])
        loaded.mean, loaded.std = (0.0,) * channels, (1.0,) * channels
    elif meta.get("mean") and meta.get("std"):
        loaded.mean, loaded.std = tuple(map(float, meta["mean"])), tuple(map(float, meta["std"]))


def _json(text: Any) -> Any:
    try:
        return json.loads(text) if text else None
    except (TypeError, ValueError):
        return None


def _names(value: Any) -> list[str] | None:
    return [str(v) for v in value] if isinstance(value, (list, tuple)) and value else None


def _dims(value_info: Any) -> list[int | str]:
    dims = value_info.type.tensor_type.shape.dim
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in dims]


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and value > 0 else None


def _shape(dims: list) -> str:
    return "(" + ", ".join(map(str, dims)) + ")"


class OnnxModule(nn.Module):
    """An ONNX model run by onnxruntime, as a module: ``(B, C, H, W)`` floats -> its first output.

    Runs on the CUDA provider where onnxruntime has one, else the CPU; the output comes back on the
    input's device. Nothing in it trains. The file's weight count is kept as ``weight_count``.
    """

    def __init__(self, model_bytes: bytes, input_name: str, output_name: str, weight_count: int = 0,
                 batch: int | None = None):
        super().__init__()
        self.model_bytes, self.input_name, self.output_name = model_bytes, input_name, output_name
        self.weight_count = weight_count
        self.batch = batch  # a file exported for a fixed batch size is fed that many images at a time
        self._session = None

    def session(self) -> Any:
        if self._session is None:
            import onnxruntime as ort

            wanted = ("CUDAExecutionProvider", "CPUExecutionProvider")
            providers = [p for p in wanted if p in ort.get_available_providers()]
            self._session = ort.InferenceSession(self.model_bytes, providers=providers)
        return self._session

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        array = x.detach().float().cpu().contiguous().numpy()  # (B, C, H, W)
        step = self.batch or len(array)
        outs = []
        for start in range(0, len(array), step):
            chunk = array[start:start + step]
            if len(chunk) < step:  # the last images, padded to the file's batch size
                chunk = np.concatenate([chunk, np.zeros((step - len(chunk), *chunk.shape[1:]), chunk.dtype)])
            outs.append(np.asarray(self.session().run([self.output_name], {self.input_name: chunk})[0],
                                   dtype=np.float32)[:len(array) - start])
        return torch.from_numpy(np.concatenate(outs)).to(x.device)  # (B, K)

    def graph_macs(self, image_shape: tuple[int, ...]) -> int:
        """Multiply-accumulates per image of the graph's Conv, Gemm and MatMul nodes (what torch's flop
        counter counts for a torch model), shapes inferred for images of ``image_shape`` (C, H, W)."""
        return onnx_macs(self.model_bytes, self.input_name, (self.batch or 1, *image_shape)) // (self.batch or 1)

    def __getstate__(self) -> dict:  # copies and pickles carry the bytes; each opens its own session
        state = super().__getstate__() if hasattr(super(), "__getstate__") else self.__dict__.copy()
        return {**state, "_session": None}


def onnx_macs(model_bytes: bytes, input_name: str, input_shape: tuple[int, ...]) -> int:
    """Multiply-accumulates of an ONNX graph's Conv, Gemm and MatMul nodes for an input of ``input_shape``.

    One per weight per output position for Conv, M*N*K for Gemm and MatMul (bias additions and
    element-wise nodes are not counted, as torch's flop counter does not count them); a node whose
    shapes ONNX's inference cannot resolve counts 0.
    """
    import onnx

    model = onnx.load_from_string(model_bytes)
    for graph_input in model.graph.input:
        if graph_input.name == input_name:
            for dim, size in zip(graph_input.type.tensor_type.shape.dim, input_shape):
                dim.dim_value = int(size)  # a named (dynamic) dimension becomes this size
    graph = onnx.shape_inference.infer_shapes(model).graph
    shapes = {info.name: [d.dim_value for d in info.type.tensor_type.shape.dim]
              for info in (*graph.value_info, *graph.input, *graph.output)}
    shapes.update({tensor.name: list(tensor.dims) for tensor in graph.initializer})
    total = 0
    for node in graph.node:
        out, first = shapes.get(node.output[0]), shapes.get(node.input[0])
        if not out or not first:
            continue
        if node.op_type == "Conv" and len(node.input) > 1 and shapes.get(node.input[1]):
            total += math.prod(out) * math.prod(shapes[node.input[1]][1:])  # (O, I/groups, kh, kw)
        elif node.op_type == "Gemm":
            trans_a = any(a.name == "transA" and a.i for a in node.attribute)
            total += math.prod(out) * first[0 if trans_a else -1]
        elif node.op_type == "MatMul":
            total += math.prod(out) * first[-1]
    return total


# --------------------------------------------------------------------------- factories


def load_factory(spec: str, base_dir: Path, kwargs: dict[str, Any] | None = None) -> LoadedModel:
    """Import ``package.module:function`` (the study file's folder first on ``sys.path``) and call it.

    This runs the user's code. The function is called with ``kwargs`` (the teacher's ``knobs``) and
    must return an ``nn.Module`` mapping a batch of images to logits.
    """
    fix = "give teacher.factory as 'package.module:function', importable from the study file's folder"
    module_name, _, function_name = spec.partition(":")
    if not module_name or not function_name:
        raise AutokdError(f"teacher.factory '{spec}' is not 'package.module:function'", fix)
    base = str(Path(base_dir).resolve())
    if base not in sys.path:
        sys.path.insert(0, base)
    try:
        module = importlib.import_module(module_name)
    except Exception as err:
        raise AutokdError(f"teacher.factory '{spec}': cannot import {module_name} "
                          f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})", fix) from None
    function = getattr(module, function_name, None)
    if not callable(function):
        raise AutokdError(f"teacher.factory '{spec}': {module_name} has no function {function_name}", fix)
    try:
        model = function(**(kwargs or {}))
    except Exception as err:
        raise AutokdError(f"teacher.factory '{spec}' failed: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}",
                          "fix the factory so that it returns the model, or the teacher's knobs it is called with") from None
    if not isinstance(model, nn.Module):
        raise AutokdError(f"teacher.factory '{spec}' returned {type(model).__name__}, not a torch.nn.Module",
                          "return the model (an nn.Module mapping a batch of images to logits) from the factory")
    where = inspect.getsourcefile(module)
    return LoadedModel(model.eval(), "factory", spec, classes=_names(getattr(model, "classes", None)),
                       description=f"factory {spec}", identity=[Path(where)] if where else [])


# --------------------------------------------------------------------------- heads


def classifier(net: nn.Module) -> tuple[nn.Module, nn.Module, str] | None:
    """The network's last linear layer: (its parent, the layer, its attribute name), or None.

    Ordinary modules and TorchScript modules (whose layers keep their ``original_name``) alike.
    """
    found = None
    for name, module in net.named_modules():
        if name and (isinstance(module, nn.Linear) or getattr(module, "original_name", None) == "Linear"):
            found = name
    if found is None:
        return None
    parent_name, _, attr = found.rpartition(".")
    parent = net
    for part in filter(None, parent_name.split(".")):  # get_submodule is not supported on TorchScript modules
        parent = getattr(parent, part)
    return parent, getattr(parent, attr), attr


def replace_head(net: nn.Module, num_classes: int, seed: int = 0) -> bool:
    """Give ``net``'s classifier ``num_classes`` new outputs (initialised as ``nn.Linear`` does, seeded).

    An ordinary module gets a new ``nn.Linear``; a TorchScript module keeps its compiled layer and
    gets new weight and bias tensors. False when no linear classifier is found.
    """
    found = classifier(net)
    if found is None:
        return False
    parent, layer, attr = found
    torch.manual_seed(seed)
    fresh = nn.Linear(layer.weight.shape[1], num_classes, bias=getattr(layer, "bias", None) is not None)
    if isinstance(layer, nn.Linear):
        setattr(parent, attr, fresh.to(layer.weight.device))
    else:
        layer.weight = nn.Parameter(fresh.weight.detach().clone())
        if fresh.bias is not None:
            layer.bias = nn.Parameter(fresh.bias.detach().clone())
    return True
