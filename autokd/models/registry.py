"""The student-family registry: a name, a builder and its knobs (with defaults).

Families are registered explicitly in ``autokd/models/__init__.py``, each with a :class:`Rule`
per knob (what the knob may be); importing a family module registers nothing. The rules are the
one source of truth: ``Registry.build`` checks the family name, the knob names, types and ranges,
so builders check nothing, and ``SearchSpace`` checks every value a search space can suggest
against the same rules before any training.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Iterable

from torch import nn

from autokd.rules import Rule
from autokd.errors import AutokdError


@dataclass(frozen=True)
class Family:
    """One buildable student family.

    Attributes:
        name: registry key, e.g. ``"vgg"``.
        builder: ``builder(*, num_classes, in_channels, image_size, **knobs) -> nn.Module``; it
            receives every knob (defaults filled in, types already coerced) and must set
            ``hint_layer`` on the model it returns.
        knobs: knob name -> default value; the default's type (int, float, str) is the knob's type.
        description: one line for ``autokd families`` style listings.
        rules: knob name -> what the knob may be, e.g. ``Rule.number(above=0, at_most=8)``; every
            knob has one and every default satisfies it (checked at registration).
    """

    name: str
    builder: Callable[..., nn.Module]
    knobs: dict[str, object]
    description: str
    rules: dict[str, Rule] = field(default_factory=dict)


class Registry:
    """Families by name.

    Example:
        >>> reg = Registry([Family("tiny", build_tiny, {"width": 1.0}, "a tiny CNN",
        ...                        {"width": Rule.number(above=0)})])
        >>> model = reg.build("tiny", num_classes=10, in_channels=3, image_size=32, width=0.5)
    """

    def __init__(self, families: Iterable[Family] = ()):
        self._families: dict[str, Family] = {}
        for family in families:
            self.register(family)

    def register(self, family: Family) -> None:
        if family.name in self._families:
            raise ValueError(f"family {family.name!r} is registered twice")
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
        try:
            return self._families[name]
        except (KeyError, TypeError):
            raise AutokdError(
                f"unknown model family {name!r}",
                f"use one of: {', '.join(self.names())}",
            ) from None

    def knobs(self, name: str) -> dict[str, object]:
        return dict(self.get(name).knobs)

    def rules(self, name: str) -> dict[str, Rule]:
        return dict(self.get(name).rules)

    def build(self, name: str, *, num_classes: int, in_channels: int, image_size: int, **knobs: object) -> nn.Module:
        family = self.get(name)
        unknown = sorted(set(knobs) - set(family.knobs))
        if unknown:
            raise AutokdError(
                f"model family {name!r} has no knob {', '.join(map(repr, unknown))}",
                f"use only: {_describe_knobs(family.knobs)}",
            )
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
        hint = getattr(model, "hint_layer", None)
        if not isinstance(hint, nn.Module):
            raise TypeError(f"builder of family {name!r} did not set model.hint_layer")
        model.family = name
        model.knobs = dict(resolved)
        return model


def _describe_knobs(knobs: dict[str, object]) -> str:
    return ", ".join(f"{key} (default {default!r})" for key, default in knobs.items()) or "(none)"


def _coerce(family: str, knob: str, value: object, default: object) -> object:
    """Coerce a knob to its default's type; Optuna hands back plain ints, floats and strings."""
    kind = type(default)
    if isinstance(value, bool):
        ok = False
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
