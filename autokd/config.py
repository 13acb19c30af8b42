"""Typed configuration: the study YAML, the search-space YAML and the frozen per-trial config.

Precedence is decided here and nowhere else: built-in defaults, then the study YAML, then CLI
flags (``StudyConfig.with_overrides``). YAML is read with ``yaml.safe_load`` and validated once;
every error names the file and the key.

The unit of work is :class:`TrialConfig`, a frozen dataclass that round-trips with Optuna's flat
``trial.params`` (``TrialConfig.from_params(cfg.to_params()) == cfg``), so any trial can be rebuilt
from the database alone.
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, Strict, ValidationError, field_validator, model_validator

from autokd.errors import AutokdError
from autokd.measure import LatencySettings

REPO_ROOT = Path(__file__).resolve().parents[1]

#: Objective name -> Optuna direction. Names are the metric keys ``run_trial`` returns.
OBJECTIVE_DIRECTIONS: dict[str, str] = {
    "accuracy": "maximize",
    "params": "minimize",
    "size_bytes": "minimize",
    "macs": "minimize",
    "latency_ms": "minimize",
}

#: Constraint name -> (metric, kind). ``max_*`` means metric <= bound, ``min_*`` metric >= bound.
CONSTRAINTS: dict[str, tuple[str, str]] = {
    f"{kind}_{metric}": (metric, kind) for metric in OBJECTIVE_DIRECTIONS for kind in ("max", "min")
}

LOSSES = ("kd", "fm", "hint", "none")
COMPRESSION_METHODS = ("none", "structured", "unstructured", "lowrank", "int8")
#: Keys of a search space's ``pairs`` section (docs/pairs.md); the last four are selector knobs.
SELECTOR_KEYS = ("layers", "width", "epochs", "lr")
PAIR_KEYS = ("kind", "reuse", "pool") + SELECTOR_KEYS


# --------------------------------------------------------------------------- value rules


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
            text = "one of " + ", ".join(_show_yaml(v) for v in self.values)
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


def _show_yaml(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


#: What each search-space setting may be, by ``section.key`` (docs/study-file.md lists the same).
#: A student knob's rule is declared with its family (``autokd/models/__init__.py``); the
#: method-specific ratio bounds, ``quant_mode`` and ``importance`` are checked by
#: ``autokd.compress.check_spec``.
VALUE_RULES: dict[str, Rule] = {
    "distill.loss": Rule.one_of(*LOSSES, noun="loss"),
    "distill.alpha": Rule.number(at_least=0, at_most=1),
    "distill.temperature": Rule.number(above=0),
    "distill.hint_weight": Rule.number(at_least=0),
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
    "pairs.kind": Rule.one_of("single", "pair", noun="trial kind"),
    "pairs.reuse": Rule.one_of(False, True),
    "pairs.pool": Rule.integer(at_least=2),
    "pairs.layers": Rule.integer(at_least=2, at_most=4),  # autokd.pairs.SelectorSpec builds 2..4 blocks
    "pairs.width": Rule.integer(at_least=1, at_most=512),
    "pairs.epochs": Rule.integer(at_least=1),
    "pairs.lr": Rule.number(above=0),
}


# --------------------------------------------------------------------------- trial config


@dataclass(frozen=True)
class StudentSpec:
    """One student architecture: a registered family and its size knobs."""

    family: str
    knobs: tuple[tuple[str, Any], ...] = ()

    @property
    def knob_dict(self) -> dict[str, Any]:
        return dict(self.knobs)

    @staticmethod
    def of(family: str, **knobs: Any) -> "StudentSpec":
        return StudentSpec(family, tuple(sorted(knobs.items())))


@dataclass(frozen=True)
class DistillSpec:
    """How the student learns from the teacher (see :mod:`autokd.distill`)."""

    loss: str = "kd"
    alpha: float = 0.9
    temperature: float = 4.0
    hint_weight: float = 1.0


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
    kind: str = "single"
    second: StudentSpec | None = None
    selector: tuple[tuple[str, Any], ...] = ()

    def to_params(self) -> dict[str, Any]:
        params: dict[str, Any] = {"kind": self.kind, "family": self.student.family}
        params.update({f"{self.student.family}.{k}": v for k, v in self.student.knobs})
        if self.second is not None:
            params["family2"] = self.second.family
            params.update({f"second.{self.second.family}.{k}": v for k, v in self.second.knobs})
        params.update({f"selector.{k}": v for k, v in self.selector})
        for prefix, spec in (("", self.distill), ("", self.train), ("compress.", self.compress)):
            params.update({prefix + k: v for k, v in dataclasses.asdict(spec).items()})
        return params

    @staticmethod
    def from_params(params: dict[str, Any]) -> "TrialConfig":
        family = params["family"]
        knobs = {k.split(".", 1)[1]: v for k, v in params.items() if k.startswith(f"{family}.")}
        second = None
        if params.get("family2"):
            f2 = params["family2"]
            prefix = f"second.{f2}."
            second = StudentSpec.of(f2, **{k[len(prefix):]: v for k, v in params.items() if k.startswith(prefix)})
        selector = tuple(sorted((k.split(".", 1)[1], v) for k, v in params.items() if k.startswith("selector.")))

        def pick(cls: type, prefix: str = "") -> Any:
            names = {f.name for f in dataclasses.fields(cls)}
            return cls(**{n: params[prefix + n] for n in names if prefix + n in params})

        return TrialConfig(
            student=StudentSpec.of(family, **knobs),
            distill=pick(DistillSpec),
            train=pick(TrainSpec),
            compress=pick(CompressSpec, "compress."),
            kind=params.get("kind", "single"),
            second=second,
            selector=selector,
        )

    def to_json(self) -> str:
        return json.dumps(self.to_params(), sort_keys=True)

    @staticmethod
    def from_json(text: str) -> "TrialConfig":
        return TrialConfig.from_params(json.loads(text))

    def describe(self) -> str:
        arch = _describe_student(self.student)
        if self.second is not None:
            arch = f"{arch} | {_describe_student(self.second)} + selector"
        return arch


def _describe_student(spec: StudentSpec) -> str:
    knobs = ",".join(f"{k}={_short(v)}" for k, v in spec.knobs)
    return f"{spec.family}({knobs})"


def _short(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


# --------------------------------------------------------------------------- YAML helpers


def read_yaml(path: Path, what: str) -> dict[str, Any]:
    """Read a YAML mapping safely; malformed files give one line naming the file."""
    if not path.is_file():
        raise AutokdError(f"{what} file {path} does not exist", f"check the path or create {path.name}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise AutokdError(f"{what} {path} is not valid YAML{where}", "fix the YAML syntax there") from None
    if not isinstance(data, dict):
        raise AutokdError(f"{what} {path} must be a YAML mapping (key: value), not {type(data).__name__}",
                          "start the file with top-level keys")
    return data


def _validation_error(path: Path | str, what: str, err: ValidationError, model: type[BaseModel],
                      prefix: tuple[str, ...] = ()) -> AutokdError:
    """One line for pydantic's first error: the key, the value and, for a number, its allowed range."""
    first = err.errors()[0]
    key = _dotted(prefix + tuple(first["loc"])) or "(top level)"
    value, msg = first.get("input"), first["msg"].removeprefix("Value error, ")
    rule = _field_rule(model, first["loc"])
    problem = rule.problem(value) if rule is not None else None
    if problem:
        text = f"{key} = {value!r} {problem}: must be {rule}"
    elif first["type"] == "extra_forbidden":
        text = f"unknown key '{key}'"
    elif isinstance(value, (str, int, float, bool)):
        text = f"{key} = {value!r}: {msg}"
    else:
        text = f"key '{key}': {msg}"
    return AutokdError(f"{what} {path}: {text}",
                       f"correct '{key}' in {Path(str(path)).name} (docs/study-file.md lists what each key may be)")


def _dotted(loc: tuple[Any, ...]) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".")


def _field_rule(model: type[BaseModel] | None, loc: tuple[Any, ...]) -> Rule | None:
    """The Rule a numeric pydantic field declares (its type and Field bounds), found by an error's loc."""
    info = None
    for part in (p for p in loc if not isinstance(p, int)):  # list indexes step into the item's model
        fields = {f.alias or name: f for name, f in model.model_fields.items()} if model is not None else {}
        info = fields.get(part)
        if info is None:
            return None
        model = next((t for t in _types(info.annotation) if isinstance(t, type) and issubclass(t, BaseModel)), None)
    kinds = _types(info.annotation, containers=False) if info is not None else []
    kind = int if int in kinds else float if float in kinds else None
    if kind is None:
        return None
    bounds = {k: getattr(m, k) for m in info.metadata for k in ("ge", "gt", "le", "lt") if hasattr(m, k)}
    return Rule(kind, bounds.get("gt", bounds.get("ge")), bounds.get("lt", bounds.get("le")),
                low_open="gt" in bounds, high_open="lt" in bounds)


def _types(annotation: Any, containers: bool = True) -> list[Any]:
    """The plain types inside an annotation: ``list[X] | None`` -> [X, NoneType] (``containers=False``:
    [list[X], NoneType], only unions and ``Annotated`` are opened)."""
    args = typing.get_args(annotation)
    opened = containers or typing.get_origin(annotation) in (typing.Union, types.UnionType, Annotated)
    return [t for arg in args for t in _types(arg, containers)] if args and opened else [annotation]


# --------------------------------------------------------------------------- study config


class _Strict(BaseModel):
    # strict: "15" or true is not a number (YAML already gives numbers their own type)
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class TeacherMember(_Strict):
    checkpoint: str
    weight: float | None = Field(None, ge=0)


class TeacherConfig(_Strict):
    """A teacher: an architecture the study trains once, a checkpoint, or a weighted ensemble."""

    family: str | None = None
    knobs: dict[str, Any] = Field(default_factory=dict)
    checkpoint: str | None = None
    ensemble: list[TeacherMember] | None = None
    fit_weights: bool = False
    joint_head: bool = False  # ensemble only: a linear head over the members' logits, fitted on validation
    epochs: int = Field(15, ge=1)
    lr: float = Field(0.1, gt=0)
    batch_size: int = Field(128, ge=1)

    @model_validator(mode="after")
    def _one_source(self) -> "TeacherConfig":
        sources = [self.family is not None, self.checkpoint is not None, self.ensemble is not None]
        if sum(sources) != 1:
            raise ValueError("give exactly one of family (train it), checkpoint, or ensemble")
        if self.joint_head and self.ensemble is None:
            raise ValueError("joint_head needs an ensemble teacher")
        return self


class AugmentConfig(_Strict):
    crop_pad: int | None = Field(None, ge=0)
    flip: bool | None = None


class ExecutorConfig(_Strict):
    """Where trials run. Ray Tune is the default; ``local`` runs them one by one in this process."""

    kind: Literal["local", "ray"] = "ray"
    max_concurrent: int = Field(2, ge=1)
    cpus_per_trial: float = Field(1.0, gt=0)
    gpus_per_trial: float = Field(0.0, ge=0)
    address: str | None = None
    asha: bool = False
    max_failures: int = Field(2, ge=0)


class StudyConfig(_Strict):
    """A study: what to search, against which teacher, for which objectives, stored where.

    Every field has a default: ``StudyConfig()`` is the built-in digits study of ``make demo``.
    """

    name: str = "digits-default"
    dataset: str = "digits"
    data_root: str | None = None
    download: bool = False
    image_size: int | None = Field(None, ge=8, le=64)
    subset_train: int | None = Field(None, ge=10)
    subset_test: int | None = Field(None, ge=10)
    # Share of the training images held out for validation: every objective and every sampler
    # decision is scored there; the test split is only evaluated for reporting (docs/methodology.md).
    validation_fraction: float = Field(0.1, gt=0, lt=1)
    validation_min_per_class: int = Field(2, ge=1)
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    teacher: TeacherConfig = Field(default_factory=lambda: TeacherConfig(family="resnet18", epochs=12, lr=0.05))
    search_space: str = "search_spaces/default.yaml"
    objectives: list[str] = Field(default_factory=lambda: ["accuracy", "params", "latency_ms"])
    constraints: dict[str, float] = Field(default_factory=dict)
    n_trials: int | None = Field(16, ge=1)
    timeout: float | None = Field(None, gt=0)
    sampler: Literal["tpe", "nsga2", "random"] = "tpe"
    seed: int = Field(0, ge=0)
    storage: str | None = None
    output: str | None = None
    latency_runs: int = Field(30, ge=5)
    latency_threads: int = Field(1, ge=1)
    # Timed runs go on for at least this long (a CPU's speed drifts within a second; docs/methodology.md).
    latency_min_seconds: float = Field(0.5, ge=0, le=60)
    compile: bool = False  # torch.compile students (GPU); compile time is reported apart
    executor: ExecutorConfig = Field(default_factory=ExecutorConfig)
    # Where the study file lives; relative paths in it resolve from there.
    base_dir: str = "."

    @field_validator("objectives")
    @classmethod
    def _known_objectives(cls, value: list[str]) -> list[str]:
        unknown = [v for v in value if v not in OBJECTIVE_DIRECTIONS]
        if unknown:
            raise ValueError(f"unknown objective {unknown[0]!r}; known: {', '.join(OBJECTIVE_DIRECTIONS)}")
        if not value or len(set(value)) != len(value):
            raise ValueError("objectives must be a non-empty list without repeats")
        return value

    @field_validator("constraints")
    @classmethod
    def _known_constraints(cls, value: dict[str, float]) -> dict[str, float]:
        unknown = [k for k in value if k not in CONSTRAINTS]
        if unknown:
            raise ValueError(f"unknown constraint {unknown[0]!r}; known: {', '.join(CONSTRAINTS)}")
        return value

    @field_validator("name")
    @classmethod
    def _safe_name(cls, value: str) -> str:
        if not value or any(c in value for c in "/\\ \t\n"):
            raise ValueError("name must be non-empty, without spaces or slashes")
        return value

    # ----- derived paths
    def resolve(self, relative: str) -> Path:
        path = Path(relative).expanduser()
        if path.is_absolute():
            return path
        for base in (Path(self.base_dir), Path.cwd(), REPO_ROOT):
            if (base / path).exists():
                return (base / path).resolve()
        return (Path(self.base_dir) / path).resolve()

    @property
    def output_dir(self) -> Path:
        return self.resolve(self.output) if self.output else (Path.cwd() / "runs" / self.name).resolve()

    @property
    def storage_url(self) -> str:
        return self.storage or f"sqlite:///{self.output_dir / 'study.db'}"

    @property
    def directions(self) -> list[str]:
        return [OBJECTIVE_DIRECTIONS[o] for o in self.objectives]

    @property
    def latency_settings(self) -> LatencySettings:
        return LatencySettings(runs=self.latency_runs, threads=self.latency_threads,
                               min_seconds=self.latency_min_seconds)

    def with_overrides(self, **overrides: Any) -> "StudyConfig":
        """CLI flags win over the YAML; ``None`` means 'not given'."""
        given = {k: v for k, v in overrides.items() if v is not None}
        executor_keys = {"max_concurrent", "cpus_per_trial", "gpus_per_trial", "address", "asha"}
        executor = {k: given.pop(k) for k in list(given) if k in executor_keys}
        if "executor" in given:
            executor["kind"] = given.pop("executor")
        data = self.model_dump()
        data.update(given)
        data["executor"] = {**data["executor"], **executor}
        try:
            return StudyConfig(**data)
        except ValidationError as err:
            raise _validation_error("command line", "option", err, StudyConfig) from None

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


def load_study_config(path: str | Path | None) -> StudyConfig:
    """Load a study YAML (``None``: the built-in digits study)."""
    if path is None:
        return StudyConfig()
    path = Path(path)
    data = read_yaml(path, "study")
    data.setdefault("base_dir", str(path.resolve().parent))
    try:
        return StudyConfig(**data)
    except ValidationError as err:
        raise _validation_error(path, "study", err, StudyConfig) from None


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


_PAIR_KINDS = Dimension(choices=["single", "pair"])  # a pairs section without 'kind' mixes both


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
        self.distill = self._section(data.get("distill"), "distill")
        self.train = self._section(data.get("train"), "train")
        self.compress = self._section(data.get("compress"), "compress")
        self.pairs = self._section(data.get("pairs"), "pairs")
        self._validate()

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

    def _validate(self) -> None:
        from autokd.models import family_knobs, family_names, family_rules

        if not self.families:
            raise AutokdError(f"search space {self.source} has no students",
                              "add a 'students:' section mapping family names to knobs")
        for family, knobs in self.families.items():
            if family not in family_names():
                raise AutokdError(f"search space {self.source}: unknown family '{family}' under students",
                                  f"use one of {', '.join(family_names())}")
            known, rules = family_knobs(family), family_rules(family)
            for knob, spec in knobs.items():
                if knob not in known:
                    raise AutokdError(f"search space {self.source}: family '{family}' has no knob '{knob}'",
                                      f"use {', '.join(known) or 'no knobs'}")
                self._check(f"students.{family}.{knob}", spec, rules[knob])
        for section, allowed in self.KEYS.items():
            for key, spec in getattr(self, section).items():
                if key not in allowed:
                    raise AutokdError(f"search space {self.source}: unknown key '{section}.{key}'",
                                      f"use {', '.join(allowed)} (docs/study-file.md)")
                if f"{section}.{key}" in VALUE_RULES:
                    self._check(f"{section}.{key}", spec, VALUE_RULES[f"{section}.{key}"])
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
        from autokd.compress import check_ratio, check_spec

        methods = [m for m in _options(self.compress.get("method", "none")) if m != "none"]
        where = f"search space {self.source}"
        for method in methods:
            ratio = self.compress.get("ratio", 0.5)
            if method in ("structured", "unstructured", "lowrank"):
                for value in _extremes(ratio):
                    check_ratio(method, value, where)
            for epochs in _extremes(self.compress.get("finetune_epochs", 2)):
                check_spec(CompressSpec(method, 0.5, epochs), where)
            for mode in _options(self.compress.get("quant_mode", "static")) if method == "int8" else []:
                check_spec(CompressSpec(method, 0.5, 0, mode), where)
            for importance in _options(self.compress.get("importance", "l1")) if method == "structured" else []:
                check_spec(CompressSpec(method, 0.5, 0, importance=importance), where)

    @staticmethod
    def load(path: str | Path) -> "SearchSpace":
        path = Path(path)
        return SearchSpace(read_yaml(path, "search space"), source=str(path))

    def _value(self, trial: Any, name: str, spec: Any) -> Any:
        return spec.suggest(trial, name) if isinstance(spec, Dimension) else spec

    def suggest_student(self, trial: Any, prefix: str = "", family_param: str = "family") -> StudentSpec:
        family = trial.suggest_categorical(family_param, sorted(self.families))
        knobs = {k: self._value(trial, f"{prefix}{family}.{k}", spec) for k, spec in self.families[family].items()}
        return StudentSpec.of(family, **knobs)

    def suggest(self, trial: Any) -> TrialConfig:
        """Suggest one trial's configuration (only suggestions happen here, no training).

        With a ``pairs`` section the trial's ``kind`` is suggested first; a pair suggests a
        second student (``family2``, ``second.{family}.{knob}``) and the selector's knobs, and
        no compression. A reuse pair draws two finished students of the study instead.
        """
        kind = self._value(trial, "kind", self.pairs.get("kind", _PAIR_KINDS)) if self.pairs else "single"
        if kind == "pair" and self._value(trial, "pair.reuse", self.pairs.get("reuse", False)):
            reused = self._suggest_reuse(trial)
            if reused is not None:
                return reused
        student = self.suggest_student(trial)
        loss = self._value(trial, "loss", self.distill.get("loss", "kd"))
        distill: dict[str, Any] = {"loss": loss}
        if loss in ("kd", "hint"):
            distill["alpha"] = self._value(trial, "alpha", self.distill.get("alpha", DistillSpec.alpha))
        if loss in ("kd", "hint", "fm"):
            distill["temperature"] = self._value(trial, "temperature",
                                                 self.distill.get("temperature", DistillSpec.temperature))
        if loss == "hint":
            distill["hint_weight"] = self._value(trial, "hint_weight",
                                                 self.distill.get("hint_weight", DistillSpec.hint_weight))
        train = {k: self._value(trial, k, spec) for k, spec in self.train.items()}
        if kind == "pair":
            second = self.suggest_student(trial, prefix="second.", family_param="family2")
            return TrialConfig(student=student, distill=DistillSpec(**distill), train=TrainSpec(**train),
                               kind="pair", second=second, selector=self._suggest_selector(trial))
        compress = self._suggest_compress(trial)
        return TrialConfig(student=student, distill=DistillSpec(**distill), train=TrainSpec(**train),
                           compress=compress)

    def _suggest_selector(self, trial: Any) -> tuple[tuple[str, Any], ...]:
        knobs = {k: self._value(trial, f"selector.{k}", self.pairs[k]) for k in SELECTOR_KEYS if k in self.pairs}
        return tuple(sorted(knobs.items()))

    def _suggest_reuse(self, trial: Any) -> TrialConfig | None:
        """Two finished students of the study by rank (None: fewer than two yet, train new ones).

        Ranks index a pool of fixed size (``pairs.pool``) so the distributions never change;
        the resolved trial numbers and weight files go into the config, not the ranks.
        """
        from autokd.pairs import finished_students, reuse_config

        study = getattr(trial, "study", None)  # FixedTrial has none: replay uses the stored config
        pool = int(self.pairs.get("pool", 6))
        candidates = finished_students(study, pool) if study is not None else []
        if len(candidates) < 2:
            return None
        i = trial.suggest_int("pair.first", 0, pool - 1) % len(candidates)
        j = (i + 1 + trial.suggest_int("pair.second", 0, pool - 2)) % len(candidates)
        j = j if j != i else (i + 1) % len(candidates)
        return reuse_config(candidates[i], candidates[j], dict(self._suggest_selector(trial)))

    def _suggest_compress(self, trial: Any) -> CompressSpec:
        method = self._value(trial, "compress.method", self.compress.get("method", "none"))
        if method == "none":
            return CompressSpec()
        values: dict[str, Any] = {"method": method}
        if method in ("structured", "unstructured", "lowrank"):
            values["ratio"] = self._value(trial, "compress.ratio", self.compress.get("ratio", 0.5))
        if method == "structured":
            values["importance"] = self._value(trial, "compress.importance", self.compress.get("importance", "l1"))
        if method == "int8":
            values["quant_mode"] = self._value(trial, "compress.quant_mode", self.compress.get("quant_mode", "static"))
        if method in ("structured", "unstructured", "lowrank") or values.get("quant_mode") == "qat":
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
