"""The frozen per-trial config: what one trial trains, and how it round-trips with Optuna's params.

:class:`TrialConfig` is a frozen dataclass that round-trips with Optuna's flat ``trial.params``
(``TrialConfig.from_params(cfg.to_params()) == cfg``), so any trial can be rebuilt from the
database alone. The study's own settings (YAML, precedence, validation) are in :mod:`autokd.config`.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from autokd.errors import AutokdError

LOSSES = ("kd", "fm", "hint", "fitnets", "none")
#: How kd, hint and fitnets weight CE and KL: Hinton (alpha, T^2) or Distiller (student/distill weights).
KD_WEIGHTINGS = ("hinton", "distiller")
COMPRESSION_METHODS = ("none", "structured", "fisher", "unstructured", "lowrank", "int8")
#: Trial kinds of two students answering together (docs/pairs.md); every other trial is ``single``.
COMMITTEE_KINDS = ("pair", "cascade")


# --------------------------------------------------------------------------- trial config


@dataclass(frozen=True)
class StudentSpec:
    """One student architecture: a family, its size knobs and, when it does not start from scratch,
    the weights file it starts from (Optuna param ``FAMILY.weights``: from weights or from scratch is
    a choice the search makes like a knob)."""

    family: str
    knobs: tuple[tuple[str, Any], ...] = ()
    weights: str | None = None

    @property
    def knob_dict(self) -> dict[str, Any]:
        return dict(self.knobs)

    @staticmethod
    def of(family: str, weights: str | None = None, **knobs: Any) -> "StudentSpec":
        return StudentSpec(family, tuple(sorted(knobs.items())), weights)

    def params(self, prefix: str = "") -> dict[str, Any]:
        """Optuna params of its knobs and weights: ``{prefix}{family}.{knob}``."""
        knobs = self.knobs + ((("weights", self.weights),) if self.weights is not None else ())
        return {f"{prefix}{self.family}.{k}": v for k, v in knobs}

    @staticmethod
    def from_params(family: str, params: dict[str, Any], prefix: str = "") -> "StudentSpec":
        start = f"{prefix}{family}."
        return StudentSpec.of(family, **{k[len(start):]: v for k, v in params.items() if k.startswith(start)})


@dataclass(frozen=True)
class DistillSpec:
    """How the student learns from the teacher (see :mod:`autokd.distill`)."""

    loss: str = "kd"
    alpha: float = 0.9
    temperature: float = 4.0
    hint_weight: float = 1.0
    weighting: str = "hinton"  # hinton: alpha; distiller: student_weight and distill_weight
    student_weight: float = 0.5
    distill_weight: float = 0.5
    hint_epochs: int = 5  # fitnets: stage-1 epochs of hint regression before train.epochs of KD


@dataclass(frozen=True)
class TrainSpec:
    """Optimiser, schedule and budget of one training run."""

    epochs: int = 10
    batch_size: int = 128
    lr: float = 0.05
    weight_decay: float = 5e-4
    optimizer: str = "sgd"
    schedule: str = "onecycle"
    label_smoothing: float = 0.0
    seed: int = 0


@dataclass(frozen=True)
class CompressSpec:
    """Compression applied after distillation (``method='none'`` keeps the student as trained)."""

    method: str = "none"
    ratio: float = 0.0
    finetune_epochs: int = 0
    quant_mode: str = "static"
    importance: str = "l1"  # structured pruning: l1 (filter L1 norm) or group_norm


@dataclass(frozen=True)
class RouterKnobs:
    """The routing knobs a committee trial set (Optuna params ``router.*``); ``None``: not set, the
    default of :class:`autokd.committee.RouterSpec` applies."""

    rule: str | None = None
    combine: str | None = None
    target: str | None = None
    tolerance: float | None = None
    budget: float | None = None


@dataclass(frozen=True)
class SelectorKnobs:
    """The routed pair's selector knobs a trial set (Optuna params ``selector.*``); ``None``: not set,
    the default of :class:`autokd.committee.SelectorSpec` applies."""

    layers: int | None = None
    width: int | None = None
    family: str | None = None
    epochs: int | None = None
    lr: float | None = None


@dataclass(frozen=True)
class ReusedMembers:
    """A reuse committee's members: the finished single trials and their weight files, in the order
    the search drew them (Optuna params ``selector.from_trial1``, ``selector.from_weights1``, ...)."""

    trials: tuple[int, int]
    weights: tuple[str, str]

    def params(self) -> dict[str, Any]:
        return {**{f"from_trial{i}": n for i, n in enumerate(self.trials, 1)},
                **{f"from_weights{i}": w for i, w in enumerate(self.weights, 1)}}


def given(knobs: RouterKnobs | SelectorKnobs) -> dict[str, Any]:
    """The knobs that were set (not ``None``), in field order."""
    return {k: v for k, v in dataclasses.asdict(knobs).items() if v is not None}


#: Keys of a search space's ``pairs`` section (docs/pairs.md): the routed pair's selector knobs
#: (Optuna params ``selector.*``) and the routing knobs of both committee kinds (``router.*``).
SELECTOR_KEYS = tuple(f.name for f in dataclasses.fields(SelectorKnobs))
ROUTER_KEYS = tuple(f.name for f in dataclasses.fields(RouterKnobs))
REUSE_KEYS = ("from_trial1", "from_trial2", "from_weights1", "from_weights2")
PAIR_KEYS = ("kind", "reuse", "pool", "members") + SELECTOR_KEYS + ROUTER_KEYS


def _committee_params(router: RouterKnobs, selector: SelectorKnobs, reuse: ReusedMembers | None) -> dict[str, Any]:
    """Optuna params of a committee's knobs, in key order: ``router.*`` for routing, ``selector.*`` for the rest."""
    knobs = {**{k: ("router", v) for k, v in given(router).items()},
             **{k: ("selector", v) for k, v in given(selector).items()},
             **{k: ("selector", v) for k, v in (reuse.params() if reuse else {}).items()}}
    return {f"{prefix}.{k}": v for k, (prefix, v) in sorted(knobs.items())}


def _committee_knobs(params: dict[str, Any]) -> tuple[RouterKnobs, SelectorKnobs, ReusedMembers | None]:
    """A committee's knobs from Optuna params (``selector.*``, ``router.*``; each known by its own key)."""
    knobs = {k.split(".", 1)[1]: v for k, v in params.items() if k.startswith(("selector.", "router."))}
    unknown = sorted(set(knobs) - set(ROUTER_KEYS + SELECTOR_KEYS + REUSE_KEYS))
    if unknown:
        raise AutokdError(f"trial param {unknown[0]!r} is not a committee knob",
                          f"use {', '.join(ROUTER_KEYS + SELECTOR_KEYS)}")
    reuse = None
    if "from_weights1" in knobs:
        reuse = ReusedMembers(trials=(knobs["from_trial1"], knobs["from_trial2"]),
                              weights=(knobs["from_weights1"], knobs["from_weights2"]))
    return (RouterKnobs(**{k: v for k, v in knobs.items() if k in ROUTER_KEYS}),
            SelectorKnobs(**{k: v for k, v in knobs.items() if k in SELECTOR_KEYS}), reuse)


@dataclass(frozen=True)
class TrialConfig:
    """Everything one trial needs, frozen; round-trips with Optuna's flat params.

    Example:
        >>> cfg = TrialConfig(student=StudentSpec.of("cnn5", width=0.5))
        >>> TrialConfig.from_params(cfg.to_params()) == cfg
        True
    """

    student: StudentSpec
    distill: DistillSpec = field(default_factory=DistillSpec)
    train: TrainSpec = field(default_factory=TrainSpec)
    compress: CompressSpec = field(default_factory=CompressSpec)
    kind: str = "single"  # "single" or one of COMMITTEE_KINDS
    second: StudentSpec | None = None  # a committee's second student
    router: RouterKnobs = field(default_factory=RouterKnobs)  # a committee's routing
    selector: SelectorKnobs = field(default_factory=SelectorKnobs)  # a routed pair's selector
    reuse: ReusedMembers | None = None  # a reuse committee's finished members

    def to_params(self) -> dict[str, Any]:
        params: dict[str, Any] = {"kind": self.kind, "family": self.student.family, **self.student.params()}
        if self.second is not None:
            params["family2"] = self.second.family
            params.update(self.second.params("second."))
        params.update(_committee_params(self.router, self.selector, self.reuse))
        for prefix, spec in (("", self.distill), ("", self.train), ("compress.", self.compress)):
            params.update({prefix + k: v for k, v in dataclasses.asdict(spec).items()})
        return params

    @staticmethod
    def from_params(params: dict[str, Any]) -> "TrialConfig":
        second = StudentSpec.from_params(params["family2"], params, "second.") if params.get("family2") else None
        router, selector, reuse = _committee_knobs(params)

        def pick(cls: type, prefix: str = "") -> Any:
            names = {f.name for f in dataclasses.fields(cls)}
            return cls(**{n: params[prefix + n] for n in names if prefix + n in params})

        return TrialConfig(
            student=StudentSpec.from_params(params["family"], params),
            distill=pick(DistillSpec),
            train=pick(TrainSpec),
            compress=pick(CompressSpec, "compress."),
            kind=params.get("kind", "single"),
            second=second,
            router=router,
            selector=selector,
            reuse=reuse,
        )

    def to_json(self) -> str:
        return json.dumps(self.to_params(), sort_keys=True)

    @staticmethod
    def from_json(text: str) -> "TrialConfig":
        return TrialConfig.from_params(json.loads(text))

    def describe(self) -> str:
        """The trial's architecture in one line, e.g. ``cnn5(hidden=16,width=0.125) | vgg(variant=7) + selector``."""
        from autokd.models import describe  # the models layer, and torch, only when asked (the CLI imports config)

        arch = describe(self.student)
        if self.second is not None:
            how = "cascade" if self.kind == "cascade" else "selector"
            arch = f"{arch} | {describe(self.second)} + {how}"
        return arch


# --------------------------------------------------------------------------- YAML helpers
