"""A committee's settings, defaults filled in and checked: how it routes, and the routed pair's selector.

A :class:`~autokd.config.TrialConfig` records only the knobs a trial set (``config.router``,
``config.selector``); the specs here add the defaults and the trial's seed and batch size.
"""

from __future__ import annotations

from dataclasses import dataclass

from autokd.trial_config import TrialConfig, given
from autokd.errors import AutokdError
from autokd.routing import COMBINE_RULES, CONFIDENCE_RULES, THRESHOLD_TARGETS

#: Selector block types: a full 3x3 convolution, or MobileNet's depthwise 3x3 + pointwise 1x1 (far fewer MACs).
SELECTOR_FAMILIES = ("conv", "separable")


@dataclass(frozen=True)
class RouterSpec:
    """How a committee routes: the cascade's confidence rule and answer, and the threshold's target."""

    rule: str = "max_softmax"
    combine: str = "larger"
    target: str = "match"
    tolerance: float = 0.0
    budget: float = 0.5
    folds: int = 3
    seed: int = 0

    @staticmethod
    def from_config(config: TrialConfig) -> "RouterSpec":
        return RouterSpec(seed=config.train.seed, **given(config.router))

    def __post_init__(self) -> None:
        for key, allowed in (("rule", CONFIDENCE_RULES), ("combine", COMBINE_RULES), ("target", THRESHOLD_TARGETS)):
            if getattr(self, key) not in allowed:
                raise AutokdError(f"router {key}={getattr(self, key)!r} is invalid", f"use one of {', '.join(allowed)}")


@dataclass(frozen=True)
class SelectorSpec:
    """The routed pair's selector: size and training budget (``epochs=None``: the trial's ``train.epochs``)."""

    layers: int = 3
    width: int = 16
    family: str = "conv"
    epochs: int | None = None
    lr: float = 3e-3
    batch_size: int = 128
    weight_decay: float = 5e-4
    seed: int = 0

    @staticmethod
    def from_config(config: TrialConfig) -> "SelectorSpec":
        knobs = given(config.selector)
        knobs.setdefault("epochs", config.train.epochs)
        return SelectorSpec(batch_size=config.train.batch_size, seed=config.train.seed, **knobs)

    def __post_init__(self) -> None:
        if not 2 <= int(self.layers) <= 4:
            raise AutokdError(f"selector layers={self.layers} is invalid", "use 2, 3 or 4 conv layers")
        if not 1 <= int(self.width) <= 512:
            raise AutokdError(f"selector width={self.width} is invalid", "use an integer channel count in 1..512")
        if self.family not in SELECTOR_FAMILIES:
            raise AutokdError(f"selector family={self.family!r} is invalid", f"use one of {', '.join(SELECTOR_FAMILIES)}")
