"""Warm starts: fixed configurations a study runs before it samples (``enqueue:``, ``--enqueue-from``).

A configuration is written the way a search space is (``students: {FAMILY: {KNOB: value}}``,
``distill``, ``train``, ``compress``), with fixed values only. :func:`fixed_params` answers the
space's own :meth:`~autokd.space.SearchSpace.suggest` from those values, so each value is checked
against the very dimension that would have sampled it (range, step, choices), and the result is
exactly the Optuna params a sampled trial of that configuration holds: what
``study.enqueue_trial(params, skip_if_exists=True)`` compares, and what
``TrialConfig.from_params`` rebuilds. No database here: :mod:`autokd.search.warmstart` enqueues.

Example:
    >>> from autokd.space import SearchSpace
    >>> space = SearchSpace({"students": {"cnn5": {"width": {"float": [0.125, 1.0]}, "hidden": 32}},
    ...                      "train": {"epochs": 2, "lr": {"float": [0.01, 0.1]}}})
    >>> params, config = fixed_params(space, flatten({"students": {"cnn5": {"width": 0.5}}, "train": {"lr": 0.05}}))
    >>> params
    {'family': 'cnn5', 'cnn5.width': 0.5, 'lr': 0.05}
    >>> config.student.knob_dict, config.train.epochs
    ({'hidden': 32, 'width': 0.5}, 2)
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from autokd.errors import AutokdError
from autokd.trial_config import CompressSpec, DistillSpec, TrainSpec, TrialConfig

#: Sections an enqueued configuration may have: a search space's, less ``pairs`` (committees are
#: not enqueued).
SECTIONS = ("students", "distill", "train", "compress")
_DISTILL = tuple(f.name for f in dataclasses.fields(DistillSpec))
_TRAIN = tuple(f.name for f in dataclasses.fields(TrainSpec))
_COMPRESS = tuple(f.name for f in dataclasses.fields(CompressSpec))


class Unfit(ValueError):
    """A configuration that does not fit the search space; ``str()`` says why, in a few words."""


@dataclass(frozen=True)
class Warm:
    """One configuration to enqueue: its Optuna params, the config they build, and where it came from."""

    params: dict[str, Any]
    config: TrialConfig
    source: str  # e.g. "enqueue[0] of studies/x.yaml", "trial 7 of study digits-a"


@dataclass(frozen=True)
class WarmStart:
    """What a search enqueues before it samples, in order, and what it could not (one phrase each)."""

    configs: tuple[Warm, ...] = ()
    skipped: tuple[str, ...] = ()

    def __add__(self, other: "WarmStart") -> "WarmStart":
        return WarmStart(self.configs + other.configs, self.skipped + other.skipped)


def key_of(name: str) -> str:
    """The search-space key of an Optuna param name: ``lr`` -> ``train.lr``, ``cnn5.width`` -> ``students.cnn5.width``."""
    if name == "family":
        return "students"
    if name == "kind":
        return "pairs.kind"
    if name.startswith("compress."):
        return name
    if name in _DISTILL:
        return f"distill.{name}"
    if name in _TRAIN:
        return f"train.{name}"
    return f"students.{name}"


class _Answers:
    """Stands in for an Optuna trial in ``SearchSpace.suggest``: each suggestion is answered from
    ``values`` (Optuna param names) after checking it against the distribution asked for."""

    def __init__(self, values: dict[str, Any]):
        self.values, self.params = values, {}

    def _take(self, name: str) -> Any:
        if name not in self.values:
            raise Unfit(f"no value for {key_of(name)}, which the space searches")
        return self.values[name]

    def suggest_categorical(self, name: str, choices: Any) -> Any:
        value = self._take(name)
        same = [c for c in choices if c == value and isinstance(c, bool) == isinstance(value, bool)]
        if not same:
            raise Unfit(f"{key_of(name)} = {value!r} is not one of the space's choices {list(choices)}")
        self.params[name] = same[0]
        return same[0]

    def suggest_int(self, name: str, low: int, high: int, step: int = 1, log: bool = False) -> int:
        value = self._take(name)
        if not isinstance(value, int) or isinstance(value, bool):
            raise Unfit(f"{key_of(name)} = {value!r} is not an integer")
        if not low <= value <= high or (value - low) % step:
            where = f"int: [{low}, {high}]" + (f", step {step}" if step != 1 else "")
            raise Unfit(f"{key_of(name)} = {value} is outside the space's {where}")
        self.params[name] = value
        return value

    def suggest_float(self, name: str, low: float, high: float, *, step: float | None = None,
                      log: bool = False) -> float:
        value = self._take(name)
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
            raise Unfit(f"{key_of(name)} = {value!r} is not a number")
        off_step = step is not None and not math.isclose((value - low) / step, round((value - low) / step), abs_tol=1e-8)
        if not low <= value <= high or off_step:
            where = f"float: [{low:g}, {high:g}]" + (f", step {step:g}" if step is not None else "")
            raise Unfit(f"{key_of(name)} = {value!r} is outside the space's {where}")
        self.params[name] = float(value)
        return float(value)


def flatten(entry: Any) -> dict[str, Any]:
    """An ``enqueue:`` entry (sections as in a search space, fixed values) as Optuna param names -> values.

    Raises :class:`Unfit` for a malformed entry: an unknown section or key, a range instead of a value,
    not exactly one student family.
    """
    if not isinstance(entry, dict):
        raise Unfit(f"is a {type(entry).__name__}, not a mapping of sections ({', '.join(SECTIONS)})")
    unknown = [k for k in entry if k not in SECTIONS]
    if unknown:
        raise Unfit(f"unknown section '{unknown[0]}' (an enqueued configuration has {', '.join(SECTIONS)})")
    students = entry.get("students")
    if not isinstance(students, dict) or len(students) != 1:
        raise Unfit("students must name exactly one family with its knobs, e.g. students: {cnn5: {width: 0.5}}")
    (family, knobs), = students.items()
    values: dict[str, Any] = {"family": family}
    sections = {f"students.{family}": (knobs or {}, None, f"{family}."),
                **{s: (entry.get(s) or {}, keys, p) for s, keys, p in
                   (("distill", _DISTILL, ""), ("train", _TRAIN, ""), ("compress", _COMPRESS, "compress."))}}
    for section, (mapping, allowed, prefix) in sections.items():
        if not isinstance(mapping, dict):
            raise Unfit(f"{section} must be a mapping of key: value")
        for key, value in mapping.items():
            if allowed is not None and key not in allowed:
                raise Unfit(f"unknown key '{section}.{key}' (use {', '.join(allowed)})")
            if isinstance(value, (dict, list)):
                raise Unfit(f"{section}.{key} is a range or list: an enqueued configuration has fixed values only")
            values[prefix + key] = value
    return values


def fixed_params(space: Any, values: dict[str, Any], *, strict: bool = True) -> tuple[dict[str, Any], TrialConfig]:
    """The Optuna params and the config of the fixed configuration ``values`` (param names -> values) in ``space``.

    Every dimension the configuration reaches needs a value inside the space's range or choices, its
    family and knobs must be the space's, and a student knob the space fixes must equal the fixed value.
    ``strict`` (a configuration written for this space): a value the space fixes must be equal, and a
    value that this configuration does not use is refused. Not strict (another study's trial): values
    the space does not search are dropped, distill and train settings the space fixes are the space's.
    Raises :class:`Unfit` saying why not.
    """
    family = values.get("family")
    if family not in space.families:
        raise Unfit(f"{family}: not in this space")
    knobs = {k.split(".", 1)[1] for k in values if k.startswith(f"{family}.")}
    alien = sorted(knobs - set(space.families[family]) - ({"weights"} if family in space.weights else set()))
    if alien:
        raise Unfit(f"{family}.{alien[0]}: not a knob of {family} in this space")
    for knob, spec in space.families[family].items():
        given = values.get(f"{family}.{knob}", spec)
        if not _is_dimension(spec) and not _equal(given, spec):
            raise Unfit(f"students.{family}.{knob} = {given!r}, which the space fixes at {spec!r}")
    answers = _Answers({**values, "kind": "single"} if space.pairs else values)
    config = space.suggest(answers)
    if config.kind != "single":
        raise Unfit("the space makes every trial a committee: only single students are enqueued")
    if strict:
        stored = config.to_params()
        for name in sorted(set(values) - set(answers.params) - {f"{family}.{k}" for k in knobs} - {"family"}):
            section, _, key = key_of(name).rpartition(".")
            fixed = getattr(space, section, {}).get(key) if section in ("distill", "train", "compress") else None
            if fixed is None or _is_dimension(fixed) or not _equal(stored.get(name), fixed):
                raise Unfit(f"{key_of(name)} is not a setting of this configuration (its family or loss does not use it)")
            if not _equal(values[name], fixed):
                raise Unfit(f"{key_of(name)} = {values[name]!r}, which the space fixes at {fixed!r}")
    return answers.params, config


def _is_dimension(spec: Any) -> bool:
    return hasattr(spec, "suggest")


def _equal(a: Any, b: Any) -> bool:
    return a == b and isinstance(a, bool) == isinstance(b, bool)


def study_entries(space: Any, entries: list[Any], source: str) -> WarmStart:
    """The study file's ``enqueue:`` entries checked against ``space``; the first that does not fit is refused.

    Raises :class:`AutokdError` (one line, naming ``source``, the entry and the key) before anything runs.
    """
    configs = []
    for i, entry in enumerate(entries):
        try:
            params, config = fixed_params(space, flatten(entry), strict=True)
        except Unfit as err:
            raise AutokdError(f"study {source}: enqueue[{i}]: {err}",
                              "give fixed values inside the search space's ranges and choices, as in "
                              "docs/study-file.md ('Warm starts'), or remove the entry") from None
        configs.append(Warm(params, config, f"enqueue[{i}] of {source}"))
    return WarmStart(tuple(configs))


def not_enqueued_line(skipped: tuple[str, ...]) -> str:
    """``not enqueued: trial 3 (mobilenetv2: not in this space), ...``: one line for all of them."""
    return "not enqueued: " + ", ".join(skipped)
