"""The student-family registry: a name, a builder, its knobs (with defaults) and its structure.

Families are registered explicitly in ``autokd/models/__init__.py``, each with a :class:`Rule`
per knob (what the knob may be) and where its FitNets hint layer and its last block are;
importing a family module registers nothing. The rules are the one source of truth:
``Registry.build`` checks the family name, the knob names, types and ranges, so builders check
nothing, and ``SearchSpace`` checks every value a search space can suggest against the same
rules before any training. :func:`describe` (defined in :mod:`autokd.naming`, which needs no
torch) names a model, a spec or a stored description in one form.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass, field
from typing import Callable, Iterable

from torch import nn

from autokd.rules import Rule
from autokd.errors import AutokdError
from autokd.models.weights import load_weights
from autokd.naming import describe  # noqa: F401  (re-exported by autokd.models)


@dataclass(frozen=True)
class Family:
    """One buildable student family.

    Attributes:
        name: registry key, e.g. ``"vgg"``.
        builder: ``builder(*, num_classes, in_channels, image_size, **knobs) -> nn.Module``; it
            receives every knob (defaults filled in, types already coerced).
        knobs: knob name -> default value; the default's type (int, float, str) is the knob's type.
        description: one line for ``autokd families`` style listings.
        rules: knob name -> what the knob may be, e.g. ``Rule.number(above=0, at_most=8)``; every
            knob has one and every default satisfies it (checked at registration).
        hint_layer: ``hint_layer(model) -> module``, a mid-network module of a built model whose
            output is (N, C, H, W): the FitNets hint (``Registry.build`` sets ``model.hint_layer``);
            every family declares one.
        last_blocks: ``last_blocks(model) -> modules``, the model's last block and the classifier
            after it: what JointNet unfreezes in a member (``None``: the family cannot be a member).
    """

    name: str
    builder: Callable[..., nn.Module]
    knobs: dict[str, object]
    description: str
    rules: dict[str, Rule] = field(default_factory=dict)
    hint_layer: Callable[[nn.Module], nn.Module] | None = None
    last_blocks: Callable[[nn.Module], list[nn.Module]] | None = None
    zoo: bool = False  # resolved by name from a model library: a model records only the knobs set




class Registry:
    """Families by name.

    Example:
        >>> reg = Registry([Family("tiny", build_tiny, {"width": 1.0}, "a tiny CNN",
        ...                        {"width": Rule.number(above=0)}, hint_layer=lambda net: net.features[1])])
        >>> model = reg.build("tiny", num_classes=10, in_channels=3, image_size=32, width=0.5)
    """

    def __init__(self, families: Iterable[Family] = (), resolve: Callable[[str], Family | None] | None = None):
        self._families: dict[str, Family] = {}
        self._resolve = resolve  # a family by a name not registered (``timm/NAME``), or None
        for family in families:
            self.register(family)

    def register(self, family: Family) -> None:
        if family.name in self._families:
            raise ValueError(f"family {family.name!r} is registered twice")
        if family.hint_layer is None:
            raise ValueError(f"family {family.name!r} declares no hint_layer")
        if set(family.rules) != set(family.knobs):
            raise ValueError(f"family {family.name!r} needs exactly one rule per knob, has {sorted(family.rules)}")
        for knob, default in family.knobs.items():
            if family.rules[knob].problem(default):
                raise ValueError(f"family {family.name!r}: default {knob}={default!r} breaks its rule")
        self._families[family.name] = family

    def names(self) -> list[str]:
        return sorted(self._families)

    def __contains__(self, name: object) -> bool:
        return name in self._families

    def __iter__(self):
        return iter(self._families[name] for name in self.names())

    def __len__(self) -> int:
        return len(self._families)

    def get(self, name: str) -> Family:
        family = self._families.get(name) if isinstance(name, str) else None
        family = family or (self._resolve(name) if self._resolve and isinstance(name, str) else None)
        if family is None:
            near = difflib.get_close_matches(str(name), self.names(), n=3, cutoff=0.5)
            raise AutokdError(f"unknown model family {name!r}" + (f" (closest: {', '.join(near)})" if near else ""),
                              f"use one of: {', '.join(self.names())}, or timm/NAME, torchvision/NAME")
        return family

    def knobs(self, name: str) -> dict[str, object]:
        return dict(self.get(name).knobs)

    def rules(self, name: str) -> dict[str, Rule]:
        return dict(self.get(name).rules)

    def build(self, name: str, *, num_classes: int, in_channels: int, image_size: int, weights: str | None = None,
              **knobs: object) -> nn.Module:
        family = self.get(name)
        self.check_knob_names(name, knobs)
        shape = {"num_classes": num_classes, "in_channels": in_channels, "image_size": image_size}
        for key, value in shape.items():
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise AutokdError(f"{key}={value!r} is not a positive integer", f"pass {key} as an integer >= 1")
        resolved = {
            key: _coerce(name, key, knobs.get(key, default), default) for key, default in family.knobs.items()
        }
        for key, value in resolved.items():
            if family.rules[key].problem(value):
                raise AutokdError(f"{name} knob {key}={value!r} is invalid", f"{key} must be {family.rules[key]}")
        model = family.builder(**shape, **resolved)
        # a submodule of its own name, after the model's others: its weights are in every checkpoint
        model.hint_layer = family.hint_layer(model)
        model.family = name
        model.knobs = {k: v for k, v in resolved.items() if not family.zoo or k in knobs}
        if weights is not None:  # on the meta device only checked: the file fits, nothing is copied
            model.weights_info = load_weights(model, weights, num_classes=num_classes, family=name)
        return model

    def check_knob_names(self, name: str, knobs: Iterable[str], where: str = "") -> None:
        """Refuse a knob ``name`` does not have, with the closest knob names."""
        known = self.get(name).knobs
        unknown = [k for k in knobs if k not in known]
        if unknown:
            near = difflib.get_close_matches(unknown[0], list(known), n=3, cutoff=0.5)
            raise AutokdError(f"{where}model family {name!r} has no knob {unknown[0]!r}"
                              + (f" (closest: {', '.join(near)})" if near else ""),
                              f"use only: {_describe_knobs(known)}")

    def last_blocks(self, model: nn.Module) -> list[nn.Module]:
        """What JointNet unfreezes in a member built by this registry: its last block and the classifier."""
        name = getattr(model, "family", None)
        family = self._families.get(name) or (self._resolve(name) if self._resolve and isinstance(name, str) else None)
        if family is None or family.last_blocks is None:
            raise AutokdError(f"JointNet does not know the last block of a {type(model).__name__}",
                              f"use members of the {', '.join(f.name for f in self if f.last_blocks)} families")
        return family.last_blocks(model)


def _describe_knobs(knobs: dict[str, object]) -> str:
    return ", ".join(f"{key} (default {default!r})" for key, default in knobs.items()) or "(none)"


def _coerce(family: str, knob: str, value: object, default: object) -> object:
    """Coerce a knob to its default's type; Optuna hands back plain ints, floats and strings."""
    kind = type(default)
    if isinstance(value, bool) or kind is bool:
        ok = isinstance(value, bool) and kind is bool
    elif kind is int:
        ok = isinstance(value, int) or (isinstance(value, float) and value.is_integer())
    elif kind is float:
        ok = isinstance(value, (int, float)) and math.isfinite(value)
    else:
        ok = isinstance(value, kind)
    if not ok:
        raise AutokdError(
            f"{family} knob {knob}={value!r} is not a {kind.__name__}",
            f"pass {knob} as a {kind.__name__} like the default {default!r}",
        )
    return kind(value)


def scaled(channels: int, width: float, *, minimum: int = 8) -> int:
    """Channels times a width multiplier, rounded, never below ``minimum``."""
    return max(minimum, int(round(channels * width)))


def pooled(size: int, *, kernel: int, stride: int, padding: int = 0) -> int:
    """Spatial size after a conv or pool; builders skip a reduction that would give < 1."""
    return (size + 2 * padding - kernel) // stride + 1
