"""How an architecture is named in one line, the same in the study, the search's lines and the
report. Pure Python: importing it imports neither torch nor the model registry."""

from __future__ import annotations

import re
import sys
from pathlib import Path


def describe(arch: object) -> str:
    """An architecture in one line, knobs in name order, e.g. ``cnn5(hidden=16,width=0.125)``
    (``timm/resnet18() from r18.safetensors`` for a spec started from weights).

    ``arch``: a built model (bare or deployable, :func:`autokd.checkpoint.deployable`), anything
    with ``family`` and ``knobs`` (a :class:`autokd.config.StudentSpec`), or a stored description,
    whose every ``family(knobs)`` part is put in knob-name order (records that listed knobs in
    registry order; ``cnn5(...) | vgg(...) + selector`` stays whole). Needs no torch, so the
    report and the progress lines do not import it.
    """
    nn = sys.modules.get("torch.nn")  # a model can only exist where torch.nn is imported
    if nn is not None and isinstance(arch, nn.Sequential):
        arch = arch[-1]
    if not isinstance(arch, str) and hasattr(arch, "family") and hasattr(arch, "knobs"):
        knobs = sorted(dict(arch.knobs).items())
        weights = getattr(arch, "weights", None)  # a spec started from a weights file
        start = f" from {Path(weights).name}" if isinstance(weights, str) else ""
        return f"{arch.family}({','.join(f'{k}={v:.3g}' if isinstance(v, float) else f'{k}={v}' for k, v in knobs)}){start}"
    return re.sub(r"([\w.-]+)\(([^()]+)\)", lambda m: f"{m.group(1)}({','.join(sorted(m.group(2).split(',')))})",
                  str(arch))
