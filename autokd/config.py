"""Typed configuration: the study YAML and the search-space YAML (the per-trial config: :mod:`autokd.trial_config`).

Precedence is decided here and nowhere else: built-in defaults, then the study YAML, then CLI
flags (``StudyConfig.with_overrides``). YAML is read with ``yaml.safe_load`` and validated once;
every error names the file and the key.

The unit of work is :class:`TrialConfig`, a frozen dataclass that round-trips with Optuna's flat
``trial.params`` (``TrialConfig.from_params(cfg.to_params()) == cfg``), so any trial can be rebuilt
from the database alone.
"""

from __future__ import annotations

import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from autokd.errors import AutokdError
from autokd.rules import Rule
from autokd.trial_config import (COMMITTEE_KINDS, COMPRESSION_METHODS, KD_WEIGHTINGS, LOSSES, PAIR_KEYS,  # noqa: F401
                                 REUSE_KEYS, ROUTER_KEYS, SELECTOR_KEYS, CompressSpec, DistillSpec, ReusedMembers,
                                 RouterKnobs, SelectorKnobs, StudentSpec, TrainSpec, TrialConfig)

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

# --------------------------------------------------------------------------- value rules


@dataclass(frozen=True)
class LatencySettings:
    """How a latency is timed: at least ``runs`` timed runs and at least ``min_seconds`` of them.

    A CPU's speed drifts over a second or two even on an idle host (seen here: medians of
    0.25 s windows of one idle process ranged 0.40 to 0.67 ms for one cnn5), so a median over a
    window of about a second is far steadier than one over 30 runs (a few ms); ``min_seconds``
    sets that window. ``threads`` fixes the CPU thread count while timing.
    """

    runs: int = 30
    threads: int = 1
    min_seconds: float = 0.0
    warmup: int = 10
    #: ``onnxruntime`` (the student's ONNX export in an InferenceSession), ``torch`` (eager) or
    #: ``command`` (``command`` run on the exported file prints the figure, e.g. on a target device).
    backend: str = "torch"
    batch: int = 1
    command: str | None = None
    command_timeout: float = 120.0
    #: A file locked while ``command`` runs: one model at a time across the study (also under Ray).
    lock_path: str | None = None

    @property
    def label(self) -> str:
        """What produced a figure, as a column header says it: ``ORT ms (1 thr, b1)``."""
        return latency_label(self.backend, self.threads, self.batch)


#: ``latency_backend`` values; the short name each is shown by in the report.
LATENCY_BACKENDS = {"onnxruntime": "ORT", "torch": "eager", "command": "device"}


def latency_label(backend: str | None, threads: int | None, batch: int | None) -> str:
    """``ORT ms (1 thr, b1)``; a trial stored before backends were recorded was timed eager at batch 1."""
    name = LATENCY_BACKENDS.get(backend or "torch", backend)
    if backend == "command":
        return f"{name} ms (b{batch or 1})"
    return f"{name} ms ({threads or 1} thr, b{batch or 1})"



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
                      prefix: tuple[str, ...] = (), flags: dict[str, str] | None = None) -> AutokdError:
    """One line for pydantic's first error: the key, the value and, for a number, its allowed range.

    ``flags`` maps a key to the command-line option that set it (``n_trials`` -> ``--n-trials``):
    an error in such a key names the option as typed, not the key.
    """
    first = err.errors()[0]
    key = _dotted(prefix + tuple(first["loc"])) or "(top level)"
    value, msg = first.get("input"), first["msg"].removeprefix("Value error, ")
    rule = _field_rule(model, first["loc"])
    problem = rule.problem(value) if rule is not None else None
    flag = (flags or {}).get(key)
    if flag is not None:
        shown = f"{flag} {value}" if isinstance(value, (str, int, float)) else flag
        if problem:
            return AutokdError(f"{shown} {problem}: must be {rule}", f"pass {flag} {rule}")
        expected = (first.get("ctx") or {}).get("expected")
        return AutokdError(f"{shown}: {msg}", f"pass {flag} {expected}" if expected else f"correct {flag}")
    if problem:
        text = f"{key} = {value!r} {problem}: must be {rule}"
    elif first["type"] == "extra_forbidden":
        text = f"unknown key '{key}'"
    elif isinstance(value, (str, int, float, bool)):
        text = f"{key} = {value!r}: {msg}"
    else:
        text = f"key '{key}': {msg}"
    where = Path(str(path)).name
    if flags:  # the study file was valid alone: a flag given with it made this combination invalid
        where = f"the study file or the options {', '.join(sorted(set(flags.values())))}"
    return AutokdError(f"{what} {path}: {text}",
                       f"correct '{key}' in {where} (docs/study-file.md lists what each key may be)")



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


class TeacherRecipe(_Strict):
    """How a teacher (or an ensemble member, or JointNet's joint stage) is trained: the one place
    for teacher defaults. Label smoothing is off unless asked for, as in the published recipes;
    ``crop``/``flip`` left unset follow the study's ``augment``."""

    epochs: int = Field(12, ge=1)
    lr: float = Field(0.05, gt=0)
    batch_size: int = Field(128, ge=1)
    optimizer: Literal["sgd", "adamw"] = "sgd"
    schedule: Literal["onecycle", "cosine", "step"] = "onecycle"
    weight_decay: float = Field(5e-4, ge=0)
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    crop: bool | None = None
    flip: bool | None = None

    def recipe(self) -> "TeacherRecipe":
        """The recipe fields alone (a ``TeacherConfig`` is a recipe plus where its networks come from)."""
        return TeacherRecipe(**{k: getattr(self, k) for k in TeacherRecipe.model_fields})

    def train_spec(self, seed: int) -> TrainSpec:
        return TrainSpec(epochs=self.epochs, batch_size=self.batch_size, lr=self.lr, weight_decay=self.weight_decay,
                         optimizer=self.optimizer, schedule=self.schedule, label_smoothing=self.label_smoothing,
                         seed=seed)


def _overridden(recipe: TeacherRecipe, overrides: dict[str, Any], key: str) -> TeacherRecipe:
    """``recipe`` with ``overrides`` (a member's or the joint stage's ``recipe`` mapping) applied and checked."""
    try:
        return TeacherRecipe(**{**recipe.recipe().model_dump(), **overrides})
    except ValidationError as err:
        first = err.errors()[0]
        name = _dotted(tuple(first["loc"]))
        rule = _field_rule(TeacherRecipe, first["loc"])
        problem = rule.problem(first.get("input")) if rule is not None else None
        detail = f"{problem}: must be {rule}" if problem else first["msg"].removeprefix("Value error, ")
        raise ValueError(f"{key}.{name} = {first.get('input')!r} {detail}") from None


class TeacherMember(_Strict):
    """One ensemble member: a checkpoint, or a family the study trains (the teacher's recipe, with
    this member's ``recipe`` overrides)."""

    checkpoint: str | None = None
    family: str | None = None
    knobs: dict[str, Any] = Field(default_factory=dict)
    weights: str | None = None  # a state dict file the trained member starts from
    recipe: dict[str, Any] = Field(default_factory=dict)
    weight: float | None = Field(None, ge=0)

    @model_validator(mode="after")
    def _one_source(self) -> "TeacherMember":
        if (self.checkpoint is None) == (self.family is None):
            raise ValueError("an ensemble member gives exactly one of checkpoint or family")
        if self.checkpoint is not None and (self.knobs or self.recipe or self.weights):
            raise ValueError("knobs, weights and recipe belong to a member the study trains (family), not to a "
                             "checkpoint")
        return self


class TeacherConfig(TeacherRecipe):
    """A teacher: an architecture the study trains once, a checkpoint, or an ensemble (AvNet or
    JointNet) of checkpoints and/or architectures the study trains; the recipe fields it inherits
    train every network the study trains for it."""

    family: str | None = None
    knobs: dict[str, Any] = Field(default_factory=dict)  # a family's knobs, or a factory's keyword arguments
    weights: str | None = None  # a state dict file the trained teacher starts from (fine-tuned by the recipe)
    checkpoint: str | None = None  # an autokd checkpoint, TorchScript or ONNX file (recognised by content)
    factory: str | None = None  # "package.module:function" returning an nn.Module: runs the user's code
    ensemble: list[TeacherMember] | None = None
    # The input of a checkpoint or factory teacher (default: its file's metadata, else the data's own)
    # and the class names of its outputs in order (default: its file's, else the data's order).
    image_size: int | None = Field(None, ge=8, le=1024)
    mean: list[float] | None = None
    std: list[float] | None = None
    classes: list[str] | None = None
    combine: Literal["average", "jointnet"] = "average"  # average: AvNet; jointnet: docs/teachers.md
    fit_weights: bool = False
    joint_head: bool = False  # average only: a linear head over the members' logits, fitted on validation
    joint_recipe: dict[str, Any] = Field(default_factory=dict)  # jointnet: overrides of the recipe for its stage

    @model_validator(mode="after")
    def _one_source(self) -> "TeacherConfig":
        sources = [self.family is not None, self.checkpoint is not None, self.factory is not None,
                   self.ensemble is not None]
        if sum(sources) != 1:
            raise ValueError("give exactly one of family (train it), checkpoint, factory, or ensemble")
        given = [k for k in ("image_size", "mean", "std", "classes") if getattr(self, k) is not None]
        if given and self.checkpoint is None and self.factory is None:
            raise ValueError(f"{given[0]} describes a teacher from a file or factory (checkpoint or factory)")
        if (self.mean is None) != (self.std is None) or (self.mean and len(self.mean) != len(self.std)):
            raise ValueError("give mean and std together, one value per channel each")
        if self.std and any(v <= 0 for v in self.std):
            raise ValueError("std values must be above 0")
        if self.weights is not None and self.family is None:
            raise ValueError("weights belong to a teacher the study trains (family)")
        if (self.joint_head or self.combine == "jointnet") and self.ensemble is None:
            raise ValueError("joint_head and combine: jointnet need an ensemble teacher")
        if self.combine == "jointnet" and (self.joint_head or self.fit_weights or len(self.ensemble) < 2):
            raise ValueError("combine: jointnet needs 2 or more members and neither joint_head nor fit_weights")
        for i, member in enumerate(self.ensemble or []):
            _overridden(self, member.recipe, f"ensemble[{i}].recipe")
        _overridden(self, self.joint_recipe, "joint_recipe")
        return self

    def member_recipe(self, index: int) -> TeacherRecipe:
        return _overridden(self, self.ensemble[index].recipe, f"ensemble[{index}].recipe")

    def joint_stage_recipe(self) -> TeacherRecipe:
        return _overridden(self, self.joint_recipe, "joint_recipe")


class AugmentConfig(_Strict):
    crop_pad: int | None = Field(None, ge=0)
    flip: bool | None = None
    inception_crop: bool = False  # Inception's random-resized crop instead of the padded crop (function matching)


class ExecutorConfig(_Strict):
    """Where trials run. Ray Tune is the default; ``local`` runs them one by one in this process."""

    kind: Literal["local", "ray"] = "ray"
    max_concurrent: int = Field(2, ge=1)
    cpus_per_trial: float = Field(1.0, gt=0)
    gpus_per_trial: float = Field(0.0, ge=0)
    address: str | None = None
    asha: bool = False
    max_failures: int = Field(2, ge=0)
    # Torch intra-op threads of each trial; null: the host's cores shared by the trials at once.
    threads_per_trial: int | None = Field(None, ge=1)

    def trial_threads(self, cores: int) -> int:
        """Torch intra-op threads for one trial on a host with ``cores`` CPUs, so that the trials
        running at once do not oversubscribe it: ``threads_per_trial`` when set, else ``cores``
        divided by the trials at once on the host (local: 1; ray: ``max_concurrent``, at most
        ``cores / cpus_per_trial``), at least 1.

        Example:
            >>> ExecutorConfig(kind="ray", max_concurrent=2).trial_threads(2), ExecutorConfig(kind="local").trial_threads(2)
            (1, 2)
        """
        if self.threads_per_trial is not None:
            return self.threads_per_trial
        at_once = 1 if self.kind == "local" else max(1, min(self.max_concurrent, int(cores // self.cpus_per_trial)))
        return max(1, cores // at_once)


class StudyConfig(_Strict):
    """A study: what to search, against which teacher, for which objectives, stored where.

    Every field has a default: ``StudyConfig()`` is the built-in digits study of ``make demo``.
    """

    name: str = "digits-default"
    dataset: str = "digits"
    data_root: str | None = None
    download: bool = False
    image_size: int | None = Field(None, ge=8, le=224)
    subset_train: int | None = Field(None, ge=10)
    subset_test: int | None = Field(None, ge=10)
    # Share of the training images held out for validation: every objective and every sampler
    # decision is scored there; the test split is only evaluated for reporting (docs/methodology.md).
    validation_fraction: float = Field(0.1, gt=0, lt=1)
    validation_min_per_class: int = Field(2, ge=1)
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    # A wide 5-layer CNN: on digits more accurate than ResNet-18 at width 32 (99.0% against 98.2% mean
    # validation over seeds 0-8) in a third of its time (bench/results/teacher_size.json).
    teacher: TeacherConfig = Field(default_factory=lambda: TeacherConfig(family="cnn5", knobs={"width": 2.0, "hidden": 256},
                                                                         lr=0.1))
    search_space: str = "search_spaces/default.yaml"
    objectives: list[str] = Field(default_factory=lambda: ["accuracy", "params", "latency_ms"])
    constraints: dict[str, float] = Field(default_factory=dict)
    n_trials: int | None = Field(16, ge=1)
    # Fixed configurations of the search space run first, in order, counted in n_trials (autokd.warmstart).
    enqueue: list[dict[str, Any]] = Field(default_factory=list)
    timeout: float | None = Field(None, gt=0)
    sampler: Literal["tpe", "nsga2", "random"] = "tpe"
    # TPE's start-up proposals: spread over the cost axis (autokd.search.startup) or random, as Optuna's.
    startup: Literal["spread", "random"] = "spread"
    seed: int = Field(0, ge=0)
    storage: str | None = None
    # Seconds a driver waits out a lost database connection before it stops (autokd.search.storage).
    storage_retry_seconds: float = Field(300.0, ge=0)
    output: str | None = None
    latency_runs: int = Field(30, ge=5)
    latency_threads: int = Field(1, ge=1)
    # Timed runs go on for at least this long (a CPU's speed drifts within a second; docs/methodology.md).
    latency_min_seconds: float = Field(0.5, ge=0, le=60)
    # What a latency figure is: the ONNX export in onnxruntime (default), eager PyTorch, or a
    # command that times the ONNX file where the model will run (docs/latency.md).
    latency_backend: Literal["onnxruntime", "torch", "command"] = "onnxruntime"
    latency_batch: int = Field(1, ge=1, le=4096)
    latency_command: str | None = None  # a template with {model}: prints one number, the latency in ms
    latency_command_timeout: float = Field(120.0, gt=0)
    # After the last trial, time the front's members again together, interleaved round-robin over
    # retime_rounds rounds, so the host's drift hits every member alike (docs/latency.md).
    retime_front: bool = True
    retime_rounds: int = Field(15, ge=3, le=1000)
    compile: bool = False  # torch.compile students (GPU); compile time is reported apart
    # Stop a trial whose cheaper finished rivals lead it by a margin it cannot make up (autokd.early_stop).
    # Off by default: beside the same search without it, it stopped 2 of that search's 11 digits front
    # members (bench/results/search_efficiency-digits.json; docs/methodology.md).
    early_stopping: bool = False
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
        for key, bound in value.items():
            rule = Rule.number(at_least=0, at_most=1) if CONSTRAINTS[key][0] == "accuracy" else Rule.number(at_least=0)
            if rule.problem(bound):
                raise ValueError(f"constraints.{key} = {bound!r} {rule.problem(bound)}: must be {rule}")
        return value

    @model_validator(mode="after")
    def _latency_command(self) -> "StudyConfig":
        if self.latency_backend == "command" and not self.latency_command:
            raise ValueError("latency_backend: command needs latency_command, a command template with {model}")
        if self.latency_command is not None and "{model}" not in self.latency_command:
            raise ValueError(f"latency_command {self.latency_command!r} has no {{model}} (where the ONNX file goes)")
        return self

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
    def startup_trials(self) -> int:
        """TPE's start-up phase (``startup``): a third of the budget, 4 to 10 trials."""
        return max(4, min(10, (self.n_trials or 30) // 3))

    @property
    def directions(self) -> list[str]:
        return [OBJECTIVE_DIRECTIONS[o] for o in self.objectives]

    @property
    def latency_settings(self) -> LatencySettings:
        return LatencySettings(runs=self.latency_runs, threads=self.latency_threads,
                               min_seconds=self.latency_min_seconds, backend=self.latency_backend,
                               batch=self.latency_batch, command=self.latency_command,
                               command_timeout=self.latency_command_timeout,
                               lock_path=str(self.output_dir / "latency_command.lock"))

    def with_overrides(self, **overrides: Any) -> "StudyConfig":
        """CLI flags win over the YAML; ``None`` means 'not given'. Each keyword is the option's name
        (``n_trials`` is ``--n-trials``, ``executor`` is ``--executor``); an invalid value is refused naming it."""
        given = {k: v for k, v in overrides.items() if v is not None}
        flags = {k: option_flag(k) for k in given}
        executor_keys = {"max_concurrent", "cpus_per_trial", "gpus_per_trial", "threads_per_trial", "address", "asha"}
        executor = {k: given.pop(k) for k in list(given) if k in executor_keys}
        if "executor" in given:
            executor["kind"] = given.pop("executor")
        flags = {("executor.kind" if k == "executor" else f"executor.{k}" if k in executor_keys else k): f
                 for k, f in flags.items()}
        data = self.model_dump()
        data.update(given)
        data["executor"] = {**data["executor"], **executor}
        try:
            return StudyConfig(**data)
        except ValidationError as err:
            raise _validation_error("command line", "option", err, StudyConfig, flags=flags) from None

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


def option_flag(name: str) -> str:
    """The command-line option of a keyword argument, as typed: ``n_trials`` -> ``--n-trials``."""
    return "--" + name.replace("_", "-")


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
