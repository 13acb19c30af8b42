"""Model files: one self-describing format for teachers and students, loaded with weights_only=True.

A checkpoint is a plain dict (family, knobs, shapes, normalisation, state_dict, metrics), so it
loads with ``torch.load(..., weights_only=True)`` and rebuilds its network from the registry
without executing any code from the file.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import torch
from torch import nn

from autokd.errors import AutokdError
from autokd.files import write_atomically
from autokd.models import build_model
from autokd.models.normalize import Normalize

FORMAT = "autokd-model/1"
REQUIRED = ("family", "knobs", "num_classes", "in_channels", "image_size", "mean", "std", "state_dict")


def save_checkpoint(path: Path, net: nn.Module, *, family: str, knobs: dict[str, Any], num_classes: int,
                    in_channels: int, image_size: int, mean: tuple[float, ...], std: tuple[float, ...],
                    **extra: Any) -> Path:
    """Write atomically (temp file + rename) so a crash never leaves a torn checkpoint."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"format": FORMAT, "family": family, "knobs": dict(knobs), "num_classes": num_classes,
               "in_channels": in_channels, "image_size": image_size, "mean": list(mean), "std": list(std),
               "state_dict": {k: v.detach().cpu() for k, v in net.state_dict().items()}, **extra}
    return _atomic_save(payload, path)


def save_state(path: Path, state: dict[str, Any]) -> Path:
    """Write a training state (epoch checkpoint) atomically: readers see the old file or the whole new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return _atomic_save(state, path)


class EpochCheckpointer:
    """The last finished epoch of one training run, in one file: model, optimizer and scheduler.

    ``train_model`` calls :meth:`save` after every epoch (atomically: a crash leaves the previous
    epoch's file); a trial re-run after a crash continues from :meth:`load`.
    """

    def __init__(self, path: Path):
        self.path = Path(path)

    def save(self, epoch: int, model: nn.Module, optimizer: Any, scheduler: Any) -> Path:
        """Record that ``epoch`` (0-based) finished; the run resumes at ``epoch + 1``."""
        return save_state(self.path, {
            "model": {k: v.detach().cpu() for k, v in model.state_dict().items()}, "epoch": epoch + 1,
            "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()})

    @staticmethod
    def load(path: Path, device: torch.device | str = "cpu") -> dict[str, Any]:
        """What :meth:`save` wrote: ``model`` (state dict), ``epoch`` (next to run), ``optimizer``, ``scheduler``."""
        return torch.load(path, map_location=device, weights_only=True)


def _atomic_save(obj: Any, path: Path) -> Path:
    """``torch.save`` to a temporary file beside ``path``, then rename: readers see the old file or the
    whole new one, and a failed write (a full disk) leaves no temporary file behind.

    The bytes are serialised in memory first: torch's own file writer reports a full disk as
    ``RuntimeError: unexpected pos``; Python's write raises ``OSError(ENOSPC)`` naming the file.
    """
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    write_atomically(path, buffer.getbuffer())
    return path


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint safely; missing, corrupt or foreign files give one clear line."""
    path = Path(path)
    if not path.is_file():
        raise AutokdError(f"checkpoint {path} does not exist",
                          "train one with 'autokd teacher train' or fix the path in the study")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated zip, random bytes, pickled code refused by weights_only
        raise AutokdError(f"checkpoint {path} is corrupt or not a weights-only torch file ({type(err).__name__})",
                          "re-create it with 'autokd teacher train' (only autokd checkpoints are accepted)") from None
    if not isinstance(payload, dict) or any(k not in payload for k in REQUIRED):
        missing = [k for k in REQUIRED if not isinstance(payload, dict) or k not in payload]
        raise AutokdError(f"checkpoint {path} is not an autokd model file (missing {', '.join(missing)})",
                          "re-create it with 'autokd teacher train'")
    return payload


def network_from_checkpoint(payload: dict[str, Any], source: str = "checkpoint") -> nn.Module:
    """The bare network (expects normalised input), weights loaded, in eval mode."""
    net = build_model(payload["family"], num_classes=int(payload["num_classes"]),
                      in_channels=int(payload["in_channels"]), image_size=int(payload["image_size"]),
                      **payload["knobs"])
    try:
        net.load_state_dict(payload["state_dict"])
    except RuntimeError as err:
        first = str(err).strip().splitlines()[0][:160]
        raise AutokdError(f"{source} weights do not fit {payload['family']}: {first}",
                          "re-create the checkpoint with this version of autokd") from None
    return net.eval()


def deployable(net: nn.Module, mean: tuple[float, ...], std: tuple[float, ...]) -> nn.Sequential:
    """The network with its input normalisation in front: takes [0, 1] floats, returns logits."""
    return nn.Sequential(Normalize(tuple(mean), tuple(std)), net)
