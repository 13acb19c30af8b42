"""What a setting may be: one :class:`Rule` per value, shared by the study file, the search space
and the model registry, so a range is declared once and every error and doc says it the same way."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Rule:
    """What one setting may be: a number within bounds, or one of a set of values.

    ``str(rule)`` is the phrase errors and docs use; ``problem(value)`` says why a value breaks
    the rule, or None when it is allowed. Bools are never numbers, strings never numbers.

    Example:
        >>> str(Rule.number(at_least=0, below=1)), Rule.number(above=0).problem(-0.1)
        ('a number in [0, 1)', 'is out of range')
        >>> str(Rule.integer(at_least=1, at_most=256)), Rule.integer(at_least=1).problem("8")
        ('an integer in 1..256', 'is not an integer')
    """

    kind: type = float  # int, float, bool or str
    low: float | None = None
    high: float | None = None
    low_open: bool = False  # True: low itself is not allowed
    high_open: bool = False
    values: tuple[Any, ...] = ()  # non-empty: the value must be one of these
    noun: str = ""  # what the values are, for "is not a valid <noun>"
    note: str = ""  # appended to the description, e.g. "6n+2"

    @staticmethod
    def integer(*, at_least: int | None = None, at_most: int | None = None) -> "Rule":
        return Rule(int, at_least, at_most)

    @staticmethod
    def number(*, at_least: float | None = None, above: float | None = None, at_most: float | None = None,
               below: float | None = None) -> "Rule":
        return Rule(float, above if above is not None else at_least, below if below is not None else at_most,
                    low_open=above is not None, high_open=below is not None)

    @staticmethod
    def one_of(*values: Any, noun: str = "", note: str = "") -> "Rule":
        return Rule(type(values[0]), values=values, noun=noun, note=note)

    def problem(self, value: Any) -> str | None:
        """Why ``value`` breaks the rule ("is out of range", "is not an integer", ...), or None."""
        if not _is_kind(value, self.kind):
            return f"is not {_KIND_NAMES[self.kind]}"
        if self.kind is float and not math.isfinite(value):
            return "is not a finite number"
        if self.values:
            return None if value in self.values else f"is not a valid {self.noun}" if self.noun else "is not allowed"
        too_low = self.low is not None and (value <= self.low if self.low_open else value < self.low)
        too_high = self.high is not None and (value >= self.high if self.high_open else value > self.high)
        return "is out of range" if too_low or too_high else None

    def __str__(self) -> str:
        name, low, high = _KIND_NAMES[self.kind], _show_number(self.low), _show_number(self.high)
        if self.values:
            text = "one of " + ", ".join(show_yaml(v) for v in self.values)
        elif self.low is not None and self.high is not None and self.kind is int:
            text = f"{name} in {low}..{high}"
        elif self.low is not None and self.high is not None:
            text = f"{name} in {'(' if self.low_open else '['}{low}, {high}{')' if self.high_open else ']'}"
        elif self.low is not None:
            text = f"{name} {'>' if self.low_open else '>='} {low}"
        elif self.high is not None:
            text = f"{name} {'<' if self.high_open else '<='} {high}"
        else:
            text = name
        return f"{text} ({self.note})" if self.note else text


_KIND_NAMES = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}


def _is_kind(value: Any, kind: type) -> bool:
    if kind is bool or isinstance(value, bool):
        return kind is bool and isinstance(value, bool)
    return isinstance(value, (int, float) if kind is float else kind)


def _show_number(x: float | None) -> str:
    return f"{x:g}" if isinstance(x, float) else str(x)


def show_yaml(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)
