"""The search space: which students, losses, training and compression settings a study may try.

``SearchSpace`` reads a search-space YAML (``search_spaces/*.yaml``), checks every value it can
suggest against its :class:`~autokd.rules.Rule` (a family's knob rules come from the model
registry) before any training, and turns an Optuna trial into a frozen
:class:`~autokd.config.TrialConfig`. Suggesting never touches the database: the finished
students a reuse pair may draw from are handed in by the search layer.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated, Any, Sequence

import torch
from pydantic import ConfigDict, Field, Strict, ValidationError, model_validator

from autokd.compress_rules import RATIO_BOUNDS, check_ratio, check_spec
from autokd.config import (COMMITTEE_KINDS, COMPRESSION_METHODS, KD_WEIGHTINGS, LOSSES, PAIR_KEYS, ROUTER_KEYS,
                           SELECTOR_KEYS, CompressSpec, DistillSpec, ReusedMembers, RouterKnobs, SelectorKnobs,
                           StudentSpec, TrainSpec, TrialConfig, _Strict, _validation_error, read_yaml)
from autokd.errors import AutokdError
from autokd.record import trial_config, weights_path
from autokd.routing import COMBINE_RULES, CONFIDENCE_RULES, THRESHOLD_TARGETS
from autokd.models import build_model, check_knob_names, family_rules
from autokd.models.weights import read_weights
from autokd.rules import Rule

#: What each search-space setting may be, by ``section.key`` (docs/study-file.md lists the same).
#: A student knob's rule is declared with its family (``autokd/models/__init__.py``); the
#: method-specific ratio bounds, ``quant_mode`` and ``importance`` are checked by
#: ``autokd.compress_rules.check_spec``.
VALUE_RULES: dict[str, Rule] = {
    "distill.loss": Rule.one_of(*LOSSES, noun="loss"),
    "distill.alpha": Rule.number(at_least=0, at_most=1),
    "distill.temperature": Rule.number(above=0),
    "distill.hint_weight": Rule.number(at_least=0),
    "distill.weighting": Rule.one_of(*KD_WEIGHTINGS, noun="weighting"),
    "distill.student_weight": Rule.number(at_least=0),
    "distill.distill_weight": Rule.number(at_least=0),
    "distill.hint_epochs": Rule.integer(at_least=0),
    "train.epochs": Rule.integer(at_least=1),
    "train.batch_size": Rule.integer(at_least=1),
    "train.lr": Rule.number(above=0),
    "train.weight_decay": Rule.number(at_least=0),
    "train.optimizer": Rule.one_of("sgd", "adamw", noun="optimizer"),
    "train.schedule": Rule.one_of("onecycle", "cosine", noun="schedule"),
    "train.label_smoothing": Rule.number(at_least=0, below=1),
    "train.seed": Rule.integer(at_least=0),
    "compress.method": Rule.one_of(*COMPRESSION_METHODS, noun="compression method"),
    "compress.ratio": Rule.number(at_least=0, below=1),
    "compress.finetune_epochs": Rule.integer(at_least=0),
    "pairs.kind": Rule.one_of("single", *COMMITTEE_KINDS, noun="trial kind"),
    "pairs.reuse": Rule.one_of(False, True),
    "pairs.pool": Rule.integer(at_least=2),
    "pairs.layers": Rule.integer(at_least=2, at_most=4),  # autokd.committee.SelectorSpec builds 2..4 blocks
    "pairs.width": Rule.integer(at_least=1, at_most=512),
    "pairs.epochs": Rule.integer(at_least=1),
    "pairs.lr": Rule.number(above=0),
    "pairs.family": Rule.one_of("conv", "separable", noun="selector family"),  # autokd.committee.SELECTOR_FAMILIES
    "pairs.rule": Rule.one_of(*CONFIDENCE_RULES, noun="cascade confidence rule"),
    "pairs.combine": Rule.one_of(*COMBINE_RULES, noun="cascade answer"),
    "pairs.target": Rule.one_of(*THRESHOLD_TARGETS, noun="threshold target"),
    "pairs.tolerance": Rule.number(at_least=0, at_most=100),  # accuracy points below the large member
    "pairs.budget": Rule.number(at_least=0, at_most=1),  # share of inputs that may be deferred
}


# --------------------------------------------------------------------------- search space


_Number = Annotated[float, Strict()]  # an int or a float; never a string or a bool
_Int = Annotated[int, Strict()]


class Dimension(_Strict):
    """One searchable value: a float or int range (optionally log/step) or a list of choices."""

    model_config = ConfigDict(strict=False)  # YAML lists become the bound tuples; the bounds stay strict

    float_: tuple[_Number, _Number] | None = Field(None, alias="float")
    int_: tuple[_Int, _Int] | None = Field(None, alias="int")
    choices: list[Any] | None = None
    log: Annotated[bool, Strict()] = False
    step: _Number | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _exactly_one(self) -> "Dimension":
        kinds = [x is not None for x in (self.float_, self.int_, self.choices)]
        if sum(kinds) != 1:
            raise ValueError("give exactly one of float: [low, high], int: [low, high], choices: [...]")
        for bounds in (self.float_, self.int_):
            if bounds is not None and not bounds[0] <= bounds[1]:
                raise ValueError(f"low must be <= high, got {list(bounds)}")
        if self.log and any(b is not None and b[0] <= 0 for b in (self.float_, self.int_)):
            raise ValueError("log scale needs low > 0")
        if self.log and self.step is not None:
            raise ValueError("give log or step, not both")
        if self.int_ is not None and self.step is not None and not float(self.step).is_integer():
            raise ValueError(f"the step of an int range must be a whole number, got {self.step}")
        if self.choices is not None and not self.choices:
            raise ValueError("choices must not be empty")
        return self

    def suggest(self, trial: Any, name: str) -> Any:
        if self.choices is not None:
            return trial.suggest_categorical(name, self.choices)
        if self.int_ is not None:
            return trial.suggest_int(name, self.int_[0], self.int_[1], step=int(self.step or 1), log=self.log)
        return trial.suggest_float(name, self.float_[0], self.float_[1], step=self.step, log=self.log)


_PAIR_KINDS = Dimension(choices=["single", "pair"])  # a pairs section without 'kind' mixes singles and pairs


class SearchSpace:
    """The YAML search space: families and knobs, KD loss, training and compression settings.

    ``suggest(trial)`` only suggests values (conditional knobs: a family's knobs only when that
    family is sampled, alpha only for losses that use labels) and returns a :class:`TrialConfig`.
    Every value is checked at load time, before any training: fixed values, both ends of a range
    and each choice must satisfy the key's :class:`Rule` (``VALUE_RULES``, or the family's knob
    rules for students).
    """

    SECTIONS = ("students", "distill", "train", "compress", "pairs")
    #: Keys each section may hold.
    KEYS = {"distill": tuple(f.name for f in dataclasses.fields(DistillSpec)),
            "train": tuple(f.name for f in dataclasses.fields(TrainSpec)),
            "compress": tuple(f.name for f in dataclasses.fields(CompressSpec)),
            "pairs": PAIR_KEYS}

    def __init__(self, data: dict[str, Any], source: str = "search space"):
        self.source = source
        unknown = [k for k in data if k not in self.SECTIONS]
        if unknown:
            raise AutokdError(f"search space {source}: unknown section '{unknown[0]}'",
                              f"use only {', '.join(self.SECTIONS)}")
        self.families: dict[str, dict[str, Any]] = {
            family: self._section(knobs, f"students.{family}")
            for family, knobs in self._mapping(data.get("students"), "students").items()}
        #: family -> where it starts: a weights file, None (from scratch), or choices of both
        self.weights: dict[str, Any] = {family: self._weights(knobs.pop("weights"), family)
                                        for family, knobs in self.families.items() if "weights" in knobs}
        self.distill = self._section(data.get("distill"), "distill")
        self.train = self._section(data.get("train"), "train")
        self.compress = self._section(data.get("compress"), "compress")
        self.pairs = self._section(data.get("pairs"), "pairs")
        self._validate()

    def hint_losses(self) -> list[str]:
        """The space's ``distill.loss`` values that regress a teacher's hint layer (hint, fitnets)."""
        loss = self.distill.get("loss", DistillSpec().loss)
        values = loss.choices if isinstance(loss, Dimension) else [loss]
        return [value for value in values if value in ("hint", "fitnets")]

    def _mapping(self, value: Any, key: str) -> dict[str, Any]:
        if value is not None and not isinstance(value, dict):
            raise AutokdError(f"search space {self.source}: {key} must be a mapping (key: value), "
                              f"not {type(value).__name__}", f"write {key} as indented 'key: value' lines")
        return value or {}

    def _section(self, value: Any, key: str) -> dict[str, Any]:
        """Key -> Dimension (a mapping: float/int/choices) or fixed value (a scalar)."""
        section = {}
        for name, spec in self._mapping(value, key).items():
            try:
                section[name] = Dimension(**spec) if isinstance(spec, dict) else spec
            except ValidationError as err:
                raise _validation_error(self.source, "search space", err, Dimension, (*key.split("."), name)) from None
        return section

    def _weights(self, spec: Any, family: str) -> Any:
        """``students.FAMILY.weights``: a file, null, or choices of them; files resolved from the space's folder."""
        def resolve(value: Any) -> str | None:
            if value is None:
                return None
            if not isinstance(value, str) or not value:
                raise AutokdError(f"search space {self.source}: students.{family}.weights = {value!r} is not a file "
                                  "path", f"write a .pt, .pth or .safetensors path, or null (from scratch)")
            path = Path(value).expanduser()
            found = next((p for p in (Path(self.source).parent / path, Path.cwd() / path) if p.is_file()), path)
            read_weights(found)  # missing or corrupt: refused now, before any training
            return str(found.resolve())

        if isinstance(spec, Dimension):
            if spec.choices is None:
                raise AutokdError(f"search space {self.source}: students.{family}.weights is a range",
                                  "write weights: PATH, or weights: {choices: [null, PATH]}")
            return Dimension(choices=[resolve(v) for v in spec.choices])
        return resolve(spec)

    def check_weights(self, *, num_classes: int, in_channels: int, image_size: int) -> None:
        """Refuse a weights file that does not fit its family for this data, at either end of every knob
        (built on the meta device: nothing is allocated or copied)."""
        for family, spec in self.weights.items():
            for path in (p for p in _options(spec) if p is not None):
                knobs = self.families[family]
                for end in (0, -1):
                    values = {k: _extremes(v)[end] for k, v in knobs.items()}
                    with torch.device("meta"):
                        build_model(family, num_classes=num_classes, in_channels=in_channels, image_size=image_size,
                                    weights=path, **values)

    def _validate(self) -> None:
        if not self.families:
            raise AutokdError(f"search space {self.source} has no students",
                              "add a 'students:' section mapping family names to knobs")
        for family, knobs in self.families.items():
            try:
                rules = family_rules(family)  # timm/NAME and torchvision/NAME too; closest names on a typo
            except AutokdError as err:
                raise AutokdError(f"search space {self.source}: {err.problem} under students", err.fix) from None
            check_knob_names(family, knobs, where=f"search space {self.source}: ")
            for knob, spec in knobs.items():
                self._check(f"students.{family}.{knob}", spec, rules[knob])
        for section, allowed in self.KEYS.items():
            for key, spec in getattr(self, section).items():
                if key not in allowed:
                    raise AutokdError(f"search space {self.source}: unknown key '{section}.{key}'",
                                      f"use {', '.join(allowed)} (docs/study-file.md)")
                if f"{section}.{key}" in VALUE_RULES:
                    self._check(f"{section}.{key}", spec, VALUE_RULES[f"{section}.{key}"])
        members = self.pairs.get("members")
        if members is not None and (not isinstance(members, list) or len(members) != 2
                                    or any(m not in self.families for m in members)):
            raise AutokdError(f"search space {self.source}: pairs.members = {members!r} must list two families of "
                              "'students'", f"write e.g. members: [{', '.join(sorted(self.families)[:2])}]")
        if isinstance(self.pairs.get("pool"), Dimension):  # reuse ranks index a pool of fixed size
            raise AutokdError(f"search space {self.source}: pairs.pool must be a fixed integer >= 2",
                              "write e.g. pool: 6")
        self._validate_compress()

    def _check(self, key: str, spec: Any, rule: Rule) -> None:
        """Raise the one-line error when a value the setting can take breaks its rule."""
        for value in _extremes(spec):
            problem = rule.problem(value)
            if problem:
                raise AutokdError(f"search space {self.source}: {key} = {_show(spec, value)} {problem}: must be {rule}",
                                  f"correct '{key}' in {Path(self.source).name} (docs/study-file.md lists what "
                                  "each key may be)")

    def _validate_compress(self) -> None:
        """Every compression setting the space can suggest must compress: checked before any training."""
        methods = [m for m in _options(self.compress.get("method", "none")) if m != "none"]
        where = f"search space {self.source}"
        for method in methods:
            ratio = self.compress.get("ratio", 0.5)
            if method in RATIO_BOUNDS:
                for value in _extremes(ratio):
                    check_ratio(method, value, where)
            for epochs in _extremes(self.compress.get("finetune_epochs", 2)):
                check_spec(CompressSpec(method, 0.5, epochs), where)
            for mode in _options(self.compress.get("quant_mode", "static")) if method == "int8" else []:
                check_spec(CompressSpec(method, 0.5, 0, mode), where)
            for importance in _options(self.compress.get("importance", "l1")) if method == "structured" else []:
                check_spec(CompressSpec(method, 0.5, 0, importance=importance), where)

    def dimensions(self) -> list[str]:
        """What the sampler searches: every range or choices (conditional ones too), no fixed value."""
        kind = self.pairs.get("kind", _PAIR_KINDS) if self.pairs else "single"
        kinds = kind.choices if isinstance(kind, Dimension) else [kind]
        members_fixed = self.pairs.get("members") is not None  # committees' families are fixed, not sampled
        names = ["family"] if len(self.families) > 1 and ("single" in kinds or not members_fixed) else []
        names += [f"students.{family}.{knob}" for family, knobs in self.families.items()
                  for knob, spec in {**knobs, "weights": self.weights.get(family)}.items()
                  if isinstance(spec, Dimension)]
        return names + [f"{section}.{key}" for section in self.KEYS for key, spec in getattr(self, section).items()
                        if isinstance(spec, Dimension)]

    @staticmethod
    def load(path: str | Path) -> "SearchSpace":
        path = Path(path)
        return SearchSpace(read_yaml(path, "search space"), source=str(path))

    def _value(self, trial: Any, name: str, spec: Any) -> Any:
        return spec.suggest(trial, name) if isinstance(spec, Dimension) else spec

    def suggest_student(self, trial: Any, prefix: str = "", family_param: str = "family",
                        family: str | None = None) -> StudentSpec:
        """A student of a suggested family (or of ``family``, fixed) with its knobs suggested."""
        family = family or trial.suggest_categorical(family_param, sorted(self.families))
        knobs = {k: self._value(trial, f"{prefix}{family}.{k}", spec) for k, spec in self.families[family].items()}
        weights = self._value(trial, f"{prefix}{family}.weights", self.weights.get(family))
        return StudentSpec.of(family, weights=weights, **knobs)

    def replay(self, params: dict[str, Any], students: Sequence[Any] = ()) -> TrialConfig:
        """Rebuild a trial's config from its stored params alone (Optuna's ``FixedTrial``: no study, no database)."""
        from optuna.trial import FixedTrial

        return self.suggest(FixedTrial(params), students)

    def suggest(self, trial: Any, students: Sequence[Any] = ()) -> TrialConfig:
        """Suggest one trial's configuration (only suggestions happen here, no training, no database).

        With a ``pairs`` section the trial's ``kind`` is suggested first; a pair suggests a
        second student (``family2``, ``second.{family}.{knob}``) and the selector's knobs, and
        no compression. A reuse pair draws two of ``students`` instead: the study's finished
        single students, best first, as the search layer found them (``reuse_pool`` of them).
        """
        kind = self._value(trial, "kind", self.pairs.get("kind", _PAIR_KINDS)) if self.pairs else "single"
        if kind in COMMITTEE_KINDS and self._value(trial, "pair.reuse", self.pairs.get("reuse", False)):
            reused = self._suggest_reuse(trial, students, kind)
            if reused is not None:
                return reused
        members = self.pairs.get("members") if kind in COMMITTEE_KINDS else None  # fixed member families
        student = self.suggest_student(trial, family=members[0] if members else None)
        distill = self._suggest_distill(trial)
        train = {k: self._value(trial, k, spec) for k, spec in self.train.items()}
        if kind in COMMITTEE_KINDS:
            second = self.suggest_student(trial, prefix="second.", family_param="family2",
                                          family=members[1] if members else None)
            router, selector = self._suggest_router(trial, kind)
            return TrialConfig(student=student, distill=DistillSpec(**distill), train=TrainSpec(**train),
                               kind=kind, second=second, router=router, selector=selector)
        compress = self._suggest_compress(trial)
        return TrialConfig(student=student, distill=DistillSpec(**distill), train=TrainSpec(**train),
                           compress=compress)

    def _suggest_distill(self, trial: Any) -> dict[str, Any]:
        """The loss and only the knobs it uses: weights for label-using losses, T for all but none."""
        knob = lambda name: self._value(trial, name, self.distill.get(name, getattr(DistillSpec, name)))  # noqa: E731
        loss = knob("loss")
        distill: dict[str, Any] = {"loss": loss}
        if loss in ("kd", "hint", "fitnets"):
            distill["weighting"] = knob("weighting")
            names = ("alpha",) if distill["weighting"] == "hinton" else ("student_weight", "distill_weight")
            distill.update({name: knob(name) for name in names})
        if loss != "none":
            distill["temperature"] = knob("temperature")
        if loss == "hint":
            distill["hint_weight"] = knob("hint_weight")
        if loss == "fitnets":
            distill["hint_epochs"] = knob("hint_epochs")
        return distill

    def _suggest_router(self, trial: Any, kind: str) -> tuple[RouterKnobs, SelectorKnobs]:
        """A committee's routing knobs: the selector's (pairs) or the confidence rule's (cascades), then the target's."""
        keys = [k for k in (SELECTOR_KEYS if kind == "pair" else ("rule", "combine")) if k in self.pairs]
        selector = {k: self._value(trial, f"selector.{k}", self.pairs[k]) for k in keys if k in SELECTOR_KEYS}
        router = {k: self._value(trial, f"router.{k}", self.pairs[k]) for k in keys if k in ROUTER_KEYS}
        target = self._value(trial, "router.target", self.pairs["target"]) if "target" in self.pairs else "match"
        router["target"] = target
        threshold_knob = "tolerance" if target == "match" else "budget"
        if threshold_knob in self.pairs:
            router[threshold_knob] = self._value(trial, f"router.{threshold_knob}", self.pairs[threshold_knob])
        return RouterKnobs(**router), SelectorKnobs(**selector)

    @property
    def singles_first(self) -> bool:
        """Whether committees only reuse finished singles while the trial kind is searched: then a
        study runs singles until two exist, rather than committees that train their own members."""
        kind, reuse = self.pairs.get("kind", _PAIR_KINDS), self.pairs.get("reuse", False)
        return (bool(self.pairs) and reuse is True and isinstance(kind, Dimension)
                and "single" in (kind.choices or []))

    @property
    def reuse_pool(self) -> int:
        """How many finished students a reuse pair may draw from (0: this space never reuses)."""
        reuse = self.pairs.get("reuse", False)
        can_reuse = True in (reuse.choices or []) if isinstance(reuse, Dimension) else bool(reuse)
        return int(self.pairs.get("pool", 6)) if self.pairs and can_reuse else 0

    def _suggest_reuse(self, trial: Any, students: Sequence[Any], kind: str = "pair") -> TrialConfig | None:
        """Two of ``students`` (finished trials, best first) by rank; None when fewer than two.

        Ranks index a pool of fixed size (``pairs.pool``) so the distributions never change;
        the resolved trial numbers and weight files go into the config, not the ranks.
        """
        pool = self.reuse_pool
        candidates = list(students)[:pool]
        if len(candidates) < 2:
            return None
        i = trial.suggest_int("pair.first", 0, pool - 1) % len(candidates)
        j = (i + 1 + trial.suggest_int("pair.second", 0, pool - 2)) % len(candidates)
        j = j if j != i else (i + 1) % len(candidates)
        return reuse_config(candidates[i], candidates[j], *self._suggest_router(trial, kind), kind)

    def _suggest_compress(self, trial: Any) -> CompressSpec:
        method = self._value(trial, "compress.method", self.compress.get("method", "none"))
        if method == "none":
            return CompressSpec()
        values: dict[str, Any] = {"method": method}
        if method in RATIO_BOUNDS:
            values["ratio"] = self._value(trial, "compress.ratio", self.compress.get("ratio", 0.5))
        if method == "structured":
            values["importance"] = self._value(trial, "compress.importance", self.compress.get("importance", "l1"))
        if method == "int8":
            values["quant_mode"] = self._value(trial, "compress.quant_mode", self.compress.get("quant_mode", "static"))
        if method in RATIO_BOUNDS or values.get("quant_mode") == "qat":
            values["finetune_epochs"] = self._value(trial, "compress.finetune_epochs",
                                                    self.compress.get("finetune_epochs", 2))
        return CompressSpec(**values)


def _options(spec: Any) -> list[Any]:
    if isinstance(spec, Dimension):
        return list(spec.choices or [])
    return [spec]


def _show(spec: Any, value: Any) -> str:
    """A value as an error shows it: with the range or choices it came from."""
    if not isinstance(spec, Dimension):
        return repr(value)
    if spec.choices is not None:
        return f"{value!r} (one of choices {spec.choices})"
    kind, bounds = ("float", spec.float_) if spec.float_ is not None else ("int", spec.int_)
    return f"{value!r} (a bound of {kind}: {list(bounds)})"


def _extremes(spec: Any) -> list[Any]:
    """Every value a dimension can reach at its ends (choices: all of them; a scalar: itself)."""
    if isinstance(spec, Dimension):
        bounds = spec.float_ if spec.float_ is not None else spec.int_
        return list(bounds) if bounds is not None else list(spec.choices or [])
    return [spec]


def reuse_config(first: Any, second: Any, router: RouterKnobs, selector: SelectorKnobs,
                 kind: str = "pair") -> TrialConfig:
    """The committee config that reuses two finished trials' students (``FrozenTrial``-like: number, user_attrs)."""
    a = TrialConfig.from_params(trial_config(first))
    b = TrialConfig.from_params(trial_config(second))
    reuse = ReusedMembers(trials=(first.number, second.number),
                          weights=(weights_path(first), weights_path(second)))
    return dataclasses.replace(a, kind=kind, second=StudentSpec(b.student.family, b.student.knobs), router=router,
                               selector=selector, reuse=reuse)
