"""Weights you have: a state dict from a ``.pt``/``.pth`` or ``.safetensors`` file, loaded into a built model.

Nothing in the file is executed: torch files are read with ``weights_only=True``, safetensors files
hold tensors only. Common wrappers are opened (``{'state_dict': ...}``, ``{'model': ...}``, an
autokd checkpoint) and ``module.`` / ``_orig_mod.`` prefixes (DataParallel, ``torch.compile``)
dropped. A classifier head of another number of classes is left new; a first convolution saved for
3 channels is summed over them for a 1-channel model (as timm does); any other tensor that does not
fit refuses the file, naming how many are missing, unexpected or of another shape, and the first.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import torch
from torch import nn

from autokd.errors import AutokdError

#: Keys that wrap a state dict in training checkpoints, tried in this order.
WRAPPERS = ("state_dict", "model", "model_state_dict", "state_dict_ema", "module", "net")
PREFIXES = ("module.", "_orig_mod.")


def read_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """The file's tensors by name, wrappers opened and prefixes dropped (on the CPU)."""
    path = Path(path)
    fix = "point 'weights' at a state dict saved with torch.save(model.state_dict()) or safetensors"
    if not path.is_file():
        raise AutokdError(f"weights file {path} does not exist", "check the path of 'weights'")
    try:
        if path.suffix.lower() == ".safetensors":
            from safetensors.torch import load_file

            state: Any = load_file(str(path), device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated, random bytes, pickled code refused by weights_only
        raise AutokdError(f"weights file {path} is corrupt or not a weights-only state dict ({type(err).__name__})",
                          fix) from None
    while isinstance(state, dict) and not any(isinstance(v, torch.Tensor) for v in state.values()):
        inner = next((state[k] for k in WRAPPERS if isinstance(state.get(k), dict)), None)
        if inner is None:
            break
        state = inner
    tensors = {_unprefixed(str(k)): v for k, v in state.items() if isinstance(v, torch.Tensor)} \
        if isinstance(state, dict) else {}
    if not tensors:
        raise AutokdError(f"weights file {path} holds no tensors", fix)
    return tensors


def _unprefixed(key: str) -> str:
    for prefix in PREFIXES:
        while key.startswith(prefix):
            key = key[len(prefix):]
    return key


def sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def head_keys(model: nn.Module, num_classes: int) -> set[str]:
    """State-dict keys of the classifier: the last Linear or convolution with ``num_classes`` outputs."""
    head = None
    for name, module in model.named_modules():
        weight = getattr(module, "weight", None)
        if isinstance(weight, torch.Tensor) and weight.dim() >= 2 and weight.shape[0] == num_classes:
            head = (name, module)
    if head is None:
        return set()
    return {f"{head[0]}.{key}" if head[0] else key for key in head[1].state_dict()}


def load_weights(model: nn.Module, path: str | Path, *, num_classes: int, family: str) -> dict[str, Any]:
    """Load ``path`` into ``model`` (a model on the ``meta`` device is only checked); returns the record.

    The record (it goes into the trial's metrics): ``weights_file`` (the file's name),
    ``weights_sha256``, ``weights_loaded`` and ``weights_new`` (tensor counts) and
    ``weights_new_names`` (the tensors left as initialised: a head of other classes).

    Raises:
        AutokdError: the file is missing, corrupt, or its tensors do not fit ``model``.

    Example:
        >>> record = load_weights(model, "r18.safetensors", num_classes=10, family="timm/resnet18")
        >>> record["weights_new_names"]
        ['fc.bias', 'fc.weight']
    """
    tensors = read_weights(path)
    own = model.state_dict(keep_vars=True)
    aliases: dict[int, list[str]] = {}  # a tensor under two names (the hint_layer submodule) is loaded once
    for key, value in own.items():
        aliases.setdefault(id(value), []).append(key)
    head = head_keys(model, num_classes)
    loaded: dict[str, torch.Tensor] = {}
    new, missing, misfit, used = [], [], [], set()
    for names in aliases.values():
        key, target = names[0], own[names[0]]
        given = next((n for n in names if n in tensors), None)
        used.update(n for n in names if n in tensors)
        value = tensors.get(given) if given else None
        if value is not None and value.shape == target.shape:
            loaded[key] = value
        elif value is not None and _summable(value, target):
            loaded[key] = value.sum(1, keepdim=True)  # RGB filters summed for one channel
        elif key in head or key.endswith("num_batches_tracked"):
            new.append(key)
        elif value is None:
            missing.append(key)
        else:
            misfit.append(f"{key} {tuple(value.shape)} (the model's is {tuple(target.shape)})")
    unexpected = [k for k in tensors if k not in used]
    if missing or unexpected or misfit:
        first = (misfit + [f"{k} (missing)" for k in missing] + [f"{k} (unexpected)" for k in unexpected])[0]
        raise AutokdError(f"weights file {path} does not fit {family}: {len(missing)} missing, {len(unexpected)} "
                          f"unexpected, {len(misfit)} of another shape; first: {first}",
                          f"use weights saved from a {family} with the same knobs, or start it from scratch "
                          "(no 'weights')")
    if not any(t.is_meta for t in loaded.values()) and not next(iter(own.values())).is_meta:
        with torch.no_grad():
            for key, value in loaded.items():
                own[key].copy_(value)
    return {"weights_file": Path(path).name, "weights_sha256": sha256(path), "weights_loaded": len(loaded),
            "weights_new": len(new), "weights_new_names": sorted(k for k in new if not k.endswith("num_batches_tracked"))}


def _summable(value: torch.Tensor, target: torch.Tensor) -> bool:
    """A convolution saved for 3 input channels, loaded into one for 1."""
    return (value.dim() == 4 and target.dim() == 4 and value.shape[1] == 3 and target.shape[1] == 1
            and value.shape[0] == target.shape[0] and value.shape[2:] == target.shape[2:])
