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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from autokd.errors import AutokdError

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


def _validation_error(path: Path | str, what: str, err: ValidationError) -> AutokdError:
    first = err.errors()[0]
    key = ".".join(str(p) for p in first["loc"]) or "(top level)"
    return AutokdError(f"{what} {path}: key '{key}': {first['msg']}",
                       f"correct '{key}' in {Path(str(path)).name} (see README: study and search-space YAML)")


# --------------------------------------------------------------------------- study config


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TeacherMember(_Strict):
    checkpoint: str
    weight: float | None = None


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
    image_size: int | None = None
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
    seed: int = 0
    storage: str | None = None
    output: str | None = None
    latency_runs: int = Field(30, ge=5)
    latency_threads: int = Field(1, ge=1)
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
            raise _validation_error("command line", "option", err) from None

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
        raise _validation_error(path, "study", err) from None


# --------------------------------------------------------------------------- search space


class Dimension(_Strict):
    """One searchable value: a float or int range (optionally log/step) or a list of choices."""

    float_: tuple[float, float] | None = Field(None, alias="float")
    int_: tuple[int, int] | None = Field(None, alias="int")
    choices: list[Any] | None = None
    log: bool = False
    step: float | None = None

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


def _dimension(value: Any) -> Dimension | Any:
    """A mapping becomes a Dimension; a scalar stays a fixed value."""
    return Dimension(**value) if isinstance(value, dict) else value


class SearchSpace:
    """The YAML search space: families and knobs, KD loss, training and compression settings.

    ``suggest(trial)`` only suggests values (conditional knobs: a family's knobs only when that
    family is sampled, alpha only for losses that use labels) and returns a :class:`TrialConfig`.
    """

    SECTIONS = ("students", "distill", "train", "compress", "pairs")

    def __init__(self, data: dict[str, Any], source: str = "search space"):
        self.source = source
        unknown = [k for k in data if k not in self.SECTIONS]
        if unknown:
            raise AutokdError(f"search space {source}: unknown section '{unknown[0]}'",
                              f"use only {', '.join(self.SECTIONS)}")
        try:
            self.families: dict[str, dict[str, Any]] = {}
            for family, knobs in (data.get("students") or {}).items():
                self.families[family] = {k: _dimension(v) for k, v in (knobs or {}).items()}
            self.distill = {k: _dimension(v) for k, v in (data.get("distill") or {}).items()}
            self.train = {k: _dimension(v) for k, v in (data.get("train") or {}).items()}
            self.compress = {k: _dimension(v) for k, v in (data.get("compress") or {}).items()}
            self.pairs = {k: _dimension(v) for k, v in (data.get("pairs") or {}).items()}
        except ValidationError as err:
            raise _validation_error(source, "search space", err) from None
        self._validate()

    def _validate(self) -> None:
        from autokd.models import family_knobs, family_names

        if not self.families:
            raise AutokdError(f"search space {self.source} has no students",
                              "add a 'students:' section mapping family names to knobs")
        for family, knobs in self.families.items():
            if family not in family_names():
                raise AutokdError(f"search space {self.source}: unknown family '{family}' under students",
                                  f"use one of {', '.join(family_names())}")
            known = family_knobs(family)
            for knob in knobs:
                if knob not in known:
                    raise AutokdError(f"search space {self.source}: family '{family}' has no knob '{knob}'",
                                      f"use {', '.join(known) or 'no knobs'}")
        checks = (("distill", self.distill, DistillSpec), ("train", self.train, TrainSpec),
                  ("compress", self.compress, CompressSpec))
        for section, values, spec in checks:
            allowed = {f.name for f in dataclasses.fields(spec)}
            for key in values:
                if key not in allowed:
                    raise AutokdError(f"search space {self.source}: unknown key '{section}.{key}'",
                                      f"use {', '.join(sorted(allowed))}")
        for key, known in (("optimizer", ("sgd", "adamw")), ("schedule", ("onecycle", "cosine"))):
            for value in _options(self.train.get(key, getattr(TrainSpec, key))):
                if value not in known:
                    raise AutokdError(f"search space {self.source}: unknown {key} '{value}' under train",
                                      f"use {' or '.join(known)}")
        for loss in _options(self.distill.get("loss", "kd")):
            if loss not in LOSSES:
                raise AutokdError(f"search space {self.source}: unknown loss '{loss}'", f"use {', '.join(LOSSES)}")
        for method in _options(self.compress.get("method", "none")):
            if method not in COMPRESSION_METHODS:
                raise AutokdError(f"search space {self.source}: unknown compression method '{method}'",
                                  f"use {', '.join(COMPRESSION_METHODS)}")
        self._validate_compress()
        self._validate_pairs()

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

    def _validate_pairs(self) -> None:
        for key in self.pairs:
            if key not in PAIR_KEYS:
                raise AutokdError(f"search space {self.source}: unknown key 'pairs.{key}'",
                                  f"use {', '.join(PAIR_KEYS)} (see docs/pairs.md)")
        for kind in _options(self.pairs.get("kind", "pair")):
            if kind not in ("single", "pair"):
                raise AutokdError(f"search space {self.source}: unknown trial kind '{kind}' under pairs.kind",
                                  "use single or pair")
        pool = self.pairs.get("pool", 6)
        if isinstance(pool, Dimension) or not isinstance(pool, int) or pool < 2:
            raise AutokdError(f"search space {self.source}: pairs.pool must be a fixed integer >= 2",
                              "write e.g. pool: 6")

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


def _extremes(spec: Any) -> list[Any]:
    """Every value a dimension can reach at its ends (choices: all of them; a scalar: itself)."""
    if isinstance(spec, Dimension):
        bounds = spec.float_ if spec.float_ is not None else spec.int_
        return list(bounds) if bounds is not None else list(spec.choices or [])
    return [spec]
