"""Which study a command means: a study YAML, its output folder or a name under ./runs; where its
storage URL came from (named in storage errors); the stored study, opened read-only."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Callable, Optional

from autokd.config import StudyConfig, load_study_config
from autokd.errors import AutokdError


def storage_from_env(cfg: StudyConfig) -> StudyConfig:
    """``AUTOKD_STORAGE`` is the storage of a study whose YAML and command line name none."""
    from autokd.search.storage import env_storage

    env = env_storage()
    return cfg.with_overrides(storage=env) if cfg.storage is None and env else cfg


def resolve_study(study: Optional[str], command: str = "search") -> StudyConfig:
    """A study YAML path, a study output folder, or the name of a study under ./runs."""
    return load_study_config(study_file(study, command))


def study_file(study: Optional[str], command: str = "search") -> Optional[Path]:
    """The YAML that ``study`` (as typed) names; ``None`` for the built-in study.

    A folder that is no study output folder is refused with what it holds: its YAML files and
    the ``autokd COMMAND`` to run on one of them.
    """
    if study is None:
        return None
    path = Path(study)
    if path.is_file():
        return path
    for folder in (path, Path("runs") / study):
        if (folder / "study.yaml").is_file():
            return folder / "study.yaml"
    if path.is_dir():
        yamls = sorted(p for p in path.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file())
        if not yamls:
            raise AutokdError(f"folder '{study}' is not a study output folder (no study.yaml) and holds no YAML "
                              "files", "pass a study YAML (studies/NAME.yaml), its output folder, or a name under "
                                       "./runs")
        shown = ", ".join(p.name for p in yamls[:6]) + (f" and {len(yamls) - 6} more" if len(yamls) > 6 else "")
        example = next((p for p in yamls if _looks_like_study(p)), yamls[0])
        raise AutokdError(f"folder '{study}' holds YAML files ({shown}) but is not a study output folder "
                          "(no study.yaml)", f"name the study file, e.g. '{_command_line(command, example)}'")
    raise AutokdError(f"'{study}' is neither a study file, a study output folder, nor a study under ./runs",
                      "pass a study YAML (studies/NAME.yaml), its output folder, or a name under ./runs")


def _looks_like_study(path: Path) -> bool:
    """A study YAML has study keys at its top level (a search space has ``students``)."""
    import yaml

    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return False
    return isinstance(data, dict) and "students" not in data and bool({"name", "dataset", "teacher"} & set(data))


def _command_line(command: str, study: Path) -> str:
    """``autokd COMMAND STUDY`` as the user would type it (``predict`` takes its study as ``--study``)."""
    return f"autokd predict --study {study} --trial N IMAGES" if command == "predict" else f"autokd {command} {study}"


def storage_origin(study: Optional[str], storage: Optional[str]) -> str:
    """Where a command's storage URL came from, as the user would look for it (named in storage errors)."""
    from autokd.search.storage import ENV_STORAGE, env_storage

    if storage is not None:
        return "--storage"
    path = study_file(study, "report")
    if path is not None and load_study_config(path).storage is not None:
        return f"'storage:' in {path}"
    if env_storage():
        return ENV_STORAGE
    return "the default SQLite file of the output folder (--output, or 'output:' in the study file)"


@contextlib.contextmanager
def storage_named(origin: str) -> Any:
    """Storage errors inside name ``origin``, where the URL came from, in their fix."""
    from autokd.search.storage import StorageUnavailable

    try:
        yield
    except StorageUnavailable as err:
        raise err.from_origin(origin) from None


def open_existing(study: Optional[str], storage: Optional[str], command: str) -> tuple[StudyConfig, Any]:
    """The stored study, read only: a wrong or empty database is refused before Optuna could create its tables."""
    from autokd.search.storage import redact_url, stored_study_names
    from autokd.search.study import open_study

    cfg = storage_from_env(resolve_study(study, command).with_overrides(storage=storage))
    if cfg.storage is None and not (cfg.output_dir / "study.db").exists():
        raise AutokdError(f"study '{cfg.name}' has no database at {cfg.output_dir / 'study.db'}",
                          "run 'autokd search' for it first, or pass --storage URL")
    with storage_named(storage_origin(study, storage)):
        names = stored_study_names(cfg.storage_url)
        if cfg.name not in (names or []):
            empty = " (it holds no Optuna tables)" if names is None else ""
            raise AutokdError(f"no study named '{cfg.name}' in {redact_url(cfg.storage_url)}{empty}",
                              f"run 'autokd search' first, or pick one of: "
                              f"{', '.join(names or []) or '(none stored)'}")
        return cfg, open_study(cfg, create=False, heartbeat=False)


def check_study(cfg: StudyConfig, warn: Callable[[list[str]], None]) -> list[tuple[str, str]]:
    """What ``autokd check`` validates (search space, data layout, subsets, teacher), as summary rows.

    Nothing trains, no database is opened, no file is written; ``warn`` gets what the data's listing
    skipped. Raises :class:`AutokdError` naming the first problem and its fix.
    """
    from autokd.context import study_data_source
    from autokd.data import inspect_dataset
    from autokd.space import SearchSpace
    from autokd.latency import check_latency_command
    from autokd.teacher import validate_teacher

    check_latency_command(cfg.latency_command)
    space_path = cfg.resolve(cfg.search_space)
    space = SearchSpace.load(space_path)
    info = inspect_dataset(**study_data_source(cfg))
    warn(info.warnings)
    for split, wanted in (("train", cfg.subset_train), ("test", cfg.subset_test)):
        have = info.split_sizes.get(split)
        if wanted is not None and have is not None and wanted > have:
            raise AutokdError(f"study: subset_{split} = {wanted} is more than the {have:,} {split} images of {info.name}",
                              f"set subset_{split} to at most {have} in the study file, or remove it to use them all")
    validate_teacher(cfg, hint_losses=space.hint_losses())
    sizes = " / ".join(f"{n:,} {split}" for split, n in info.split_sizes.items()) or "sizes known once loaded"
    subset = (f", subset {cfg.subset_train or 'all'} train / {cfg.subset_test or 'all'} test"
              if cfg.subset_train or cfg.subset_test else "")
    classes = f"{len(info.classes)} classes, " if info.classes else ""
    pixels = f", {info.image_size} px" if info.image_size else ""
    dims = space.dimensions()
    from autokd.warmstart import study_entries

    queued = len(study_entries(space, cfg.enqueue, f"'{cfg.name}'").configs)
    return [
        ("dataset", f"{info.name}: {classes}{sizes}{subset}{pixels}; {cfg.validation_fraction:g} of train held out "
                    "for validation"),
        ("teacher", _describe_teacher(cfg)),
        ("search space", f"{space_path.name}: {len(dims)} search dimension{'s' * (len(dims) != 1)}, families "
                         f"{', '.join(sorted(space.families))}"),
        ("objectives", ", ".join(f"{o} ({d[:3]})" for o, d in zip(cfg.objectives, cfg.directions))),
        ("constraints", ", ".join(f"{k} {v:g}" for k, v in cfg.constraints.items()) or "none"),
        ("latency", cfg.latency_settings.label + (f" by {cfg.latency_command}" if cfg.latency_backend == "command"
                                                  else "")),
        ("budget", f"{cfg.n_trials} trials" + (f", timeout {cfg.timeout:g} s" if cfg.timeout else "")
                   + f", sampler {cfg.sampler}, executor {cfg.executor.kind}; output {cfg.output_dir}"
                   + (f"; {queued} enqueued configuration{'s' * (queued != 1)} run first" if queued else "")),
    ]


def warm_start(cfg: StudyConfig, space: Any, study: Optional[str], enqueue_from: Optional[str] = None,
               storage: Optional[str] = None) -> Any:
    """What a search queues before sampling (a :class:`~autokd.warmstart.WarmStart`): the study file's
    ``enqueue:`` entries, refused in one line when one does not fit ``space``, then the Pareto front of
    the study ``enqueue_from`` names (a YAML, an output folder or a name under ./runs; ``storage``:
    its URL), those of its trials that fit ``space``. Reads only; nothing is written."""
    from autokd.warmstart import study_entries

    warm = study_entries(space, cfg.enqueue, str(study_file(study)) if study else "the built-in study")
    if enqueue_from is None:
        return warm
    from autokd.search.warmstart import front_warm

    other_cfg, other = open_existing(enqueue_from, storage, "search --enqueue-from")
    return warm + front_warm(other, other_cfg.name, space)


def _describe_teacher(cfg: StudyConfig) -> str:
    teacher = cfg.teacher
    if teacher.family is not None:
        knobs = ",".join(f"{k}={v}" for k, v in teacher.knobs.items())
        return f"{teacher.family}{f'({knobs})' if knobs else ''} trained by the study, {teacher.epochs} epochs"
    if teacher.checkpoint is not None or teacher.factory is not None:
        from autokd.teacher_source import describe_source

        return describe_source(cfg)
    return f"ensemble of {len(teacher.ensemble)} ({teacher.combine})"
