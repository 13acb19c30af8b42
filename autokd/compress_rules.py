"""What a compression setting may be, checked before any training: no pruning library imported.

The search space (:mod:`autokd.space`) and the trial (:mod:`autokd.trial`) check a
:class:`autokd.config.CompressSpec` here when a study or space is parsed; :mod:`autokd.compress`
does the compressing (and imports torch-pruning).
"""

from __future__ import annotations

from typing import Any

import torch

from autokd.config import COMPRESSION_METHODS, CompressSpec
from autokd.errors import AutokdError

QUANT_MODES = ("static", "dynamic", "qat")
IMPORTANCES = ("l1", "group_norm")
#: ratio bounds per method (inclusive low, inclusive high); 0 would claim compression and do nothing.
RATIO_BOUNDS: dict[str, tuple[float, float]] = {
    "structured": (0.05, 0.95),
    "fisher": (0.05, 0.95),
    "unstructured": (0.05, 0.99),
    "lowrank": (0.05, 0.95),
}
#: channel-pruning methods: torch-pruning removes channels, the checkpoint stores their counts.
CHANNEL_METHODS = ("structured", "fisher")


def quant_engine() -> str | None:
    """The CPU int8 engine of this machine (x86 / fbgemm on Intel-AMD, qnnpack on ARM), or None."""
    engines = torch.backends.quantized.supported_engines
    return next((e for e in ("x86", "fbgemm", "qnnpack") if e in engines), None)


def check_spec(spec: CompressSpec, where: str = "compress") -> None:
    """Raise AutokdError for a setting that cannot compress; called before any training."""
    if spec.method not in COMPRESSION_METHODS:
        raise AutokdError(f"{where}: unknown compression method '{spec.method}'",
                          f"use {', '.join(COMPRESSION_METHODS)}")
    if spec.method == "none":
        return
    if spec.method in RATIO_BOUNDS:
        check_ratio(spec.method, spec.ratio, where)
    if not isinstance(spec.finetune_epochs, int) or spec.finetune_epochs < 0:
        raise AutokdError(f"{where}: finetune_epochs={spec.finetune_epochs!r} is invalid",
                          "give an integer >= 0")
    if spec.method == "structured" and spec.importance not in IMPORTANCES:
        raise AutokdError(f"{where}: unknown importance '{spec.importance}'", f"use {', '.join(IMPORTANCES)}")
    if spec.method == "int8":
        if spec.quant_mode not in QUANT_MODES:
            raise AutokdError(f"{where}: unknown quant_mode '{spec.quant_mode}'", f"use {', '.join(QUANT_MODES)}")
        if quant_engine() is None:
            raise AutokdError(f"{where}: int8 needs a quantized CPU engine and this torch build has none "
                              f"(supported: {torch.backends.quantized.supported_engines})",
                              "install a torch build with fbgemm/x86 or qnnpack, or drop int8 from compress.method")


def check_ratio(method: str, ratio: Any, where: str = "compress") -> None:
    low, high = RATIO_BOUNDS[method]
    meaning = "share of channels removed" if method in CHANNEL_METHODS else (
        "sparsity" if method == "unstructured" else "share of each layer's rank kept")
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not low <= ratio <= high:
        raise AutokdError(f"{where}: {method} ratio={ratio!r} is out of range ({meaning})",
                          f"give compress.ratio in [{low}, {high}]")
