"""Study and search-space YAML: validation, precedence, and the trial config round trip."""

from pathlib import Path

import optuna
import pytest
from typer.testing import CliRunner

from autokd.cli import app
from autokd.config import (REPO_ROOT, CompressSpec, DistillSpec, StudentSpec, StudyConfig, TrainSpec, TrialConfig,
                           load_study_config)
from autokd.rules import Rule
from autokd.space import VALUE_RULES, SearchSpace
from autokd.errors import AutokdError
from tests.tiny import TINY_SPACE, write_tiny_study


def test_trial_config_round_trips_through_flat_params_and_json():
    cfg = TrialConfig(student=StudentSpec.of("resnet", depth=14, width=8),
                      distill=DistillSpec("hint", 0.6, 3.0, 0.5), train=TrainSpec(epochs=3, lr=0.01),
                      compress=CompressSpec("structured", 0.5, 2))
    assert TrialConfig.from_params(cfg.to_params()) == cfg
    assert TrialConfig.from_json(cfg.to_json()) == cfg


def test_suggested_config_replays_from_stored_params_with_fixed_trial():
    space = SearchSpace(TINY_SPACE)
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=optuna.samplers.RandomSampler(seed=1))
    for _ in range(5):
        trial = study.ask()
        cfg = space.suggest(trial)
        assert space.replay(trial.params) == cfg  # rebuilt from the database's params alone
        assert TrialConfig.from_params(cfg.to_params()) == cfg
        assert cfg.student.family in ("cnn5", "vgg")
        assert set(cfg.student.knob_dict) == ({"width", "hidden"} if cfg.student.family == "cnn5" else
                                              {"variant", "width"})
        study.tell(trial, [0.5, 1.0])


def test_conditional_knobs_only_for_the_sampled_family_and_loss():
    space = SearchSpace(TINY_SPACE)
    cfg = space.suggest(optuna.trial.FixedTrial({"family": "vgg", "vgg.width": 0.1, "loss": "none", "lr": 0.05}))
    assert cfg.distill == DistillSpec(loss="none")
    assert cfg.student == StudentSpec.of("vgg", variant=7, width=0.1)
    with pytest.raises(ValueError):  # a vgg trial must not ask for cnn5 knobs: FixedTrial lacks them
        space.suggest(optuna.trial.FixedTrial({"family": "cnn5", "loss": "none", "lr": 0.05}))


@pytest.mark.parametrize("space, message", [
    ({"students": {"resnet99": {}}}, r"unknown model family 'resnet99' \(closest: resnet"),
    ({"students": {"cnn5": {"depth": 3}}}, "has no knob 'depth'"),
    ({"students": {"cnn5": {"width": {"float": [1.0, 0.5]}}}}, "low must be <= high"),
    ({"students": {"cnn5": {"width": {"float": [0.1, 0.5], "choices": [1]}}}}, "exactly one of"),
    ({"students": {"cnn5": {}}, "distill": {"loss": {"choices": ["kd", "magic"]}}}, "'magic' .* not a valid loss"),
    ({"students": {"cnn5": {}}, "trian": {}}, "unknown section 'trian'"),
    ({}, "has no students"),
    ({"students": {"cnn5": {}}, "train": {"optimizer": {"choices": ["sgd", "lamb"]}}},
     "'lamb' .* not a valid optimizer"),
    ({"students": {"cnn5": {}}, "train": {"schedule": "step"}}, "train.schedule = 'step' is not a valid schedule"),
    ({"students": {"cnn5": {}}, "train": {"epochs": 3, "warmup": 1}}, "unknown key 'train.warmup'"),
    ({"students": "cnn5"}, "students must be a mapping"),
])
def test_search_space_errors_name_the_problem(space, message):
    with pytest.raises(AutokdError, match=message):
        SearchSpace(space, source="s.yaml")


def test_malformed_yaml_names_file_and_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nteacher: [unclosed\n")
    with pytest.raises(AutokdError, match=r"bad.yaml is not valid YAML at line \d"):
        load_study_config(bad)


@pytest.mark.parametrize("override, message", [
    ({"objectives": ["accuracy", "speed"]}, "unknown objective 'speed'"),
    ({"sampler": "cmaes"}, "sampler"),
    ({"teacher": {"family": "cnn5", "checkpoint": "t.pt"}}, "exactly one of"),
    ({"constraints": {"max_weight": 3}}, "unknown constraint"),
])
def test_study_schema_errors_name_the_key(tmp_path, override, message):
    path = write_tiny_study(tmp_path, **override)
    with pytest.raises(AutokdError, match=message):
        load_study_config(path)


def test_cli_flags_override_yaml_and_defaults(tmp_path):
    cfg = load_study_config(write_tiny_study(tmp_path, n_trials=5))
    assert cfg.n_trials == 5 and StudyConfig().n_trials == 16
    over = cfg.with_overrides(n_trials=9, timeout=None, max_concurrent=3)
    assert over.n_trials == 9 and over.executor.max_concurrent == 3 and over.timeout is None
    assert over.storage_url.startswith("sqlite:///") and over.storage_url.endswith("tiny/study.db")


# --------------------------------------------------------------------------- range checks


@pytest.mark.parametrize("section, key, spec, expected", [
    ("train", "epochs", -3, "train.epochs = -3 is out of range: must be an integer >= 1"),
    ("train", "batch_size", -8, "train.batch_size = -8 is out of range: must be an integer >= 1"),
    ("distill", "alpha", 1.5, "distill.alpha = 1.5 is out of range: must be a number in [0, 1]"),
    ("distill", "temperature", 0, "distill.temperature = 0 is out of range: must be a number > 0"),
    ("train", "lr", -0.1, "train.lr = -0.1 is out of range: must be a number > 0"),
    ("train", "lr", {"float": [-1, 0.1]},
     "train.lr = -1.0 (a bound of float: [-1.0, 0.1]) is out of range: must be a number > 0"),
    ("train", "epochs", {"choices": [10, 0]},
     "train.epochs = 0 (one of choices [10, 0]) is out of range: must be an integer >= 1"),
    ("train", "epochs", {"float": [1, 10]},
     "train.epochs = 1.0 (a bound of float: [1.0, 10.0]) is not an integer: must be an integer >= 1"),
    ("train", "epochs", "ten", "train.epochs = 'ten' is not an integer: must be an integer >= 1"),
    ("train", "epochs", True, "train.epochs = True is not an integer: must be an integer >= 1"),
    ("train", "lr", "0.1", "train.lr = '0.1' is not a number: must be a number > 0"),
    ("train", "weight_decay", -1e-4, "train.weight_decay = -0.0001 is out of range: must be a number >= 0"),
    ("train", "label_smoothing", 1.0, "train.label_smoothing = 1.0 is out of range: must be a number in [0, 1)"),
    ("distill", "hint_weight", -1, "distill.hint_weight = -1 is out of range: must be a number >= 0"),
    ("compress", "ratio", 1.0, "compress.ratio = 1.0 is out of range: must be a number in [0, 1)"),
    ("compress", "finetune_epochs", {"int": [-1, 2]},
     "compress.finetune_epochs = -1 (a bound of int: [-1, 2]) is out of range: must be an integer >= 0"),
    ("pairs", "layers", 1, "pairs.layers = 1 is out of range: must be an integer in 2..4"),
    ("pairs", "width", 0, "pairs.width = 0 is out of range: must be an integer in 1..512"),
    ("pairs", "epochs", 0, "pairs.epochs = 0 is out of range: must be an integer >= 1"),
    ("pairs", "lr", 0.0, "pairs.lr = 0.0 is out of range: must be a number > 0"),
    ("pairs", "reuse", "yes", "pairs.reuse = 'yes' is not true or false: must be one of false, true"),
    ("pairs", "pool", 1, "pairs.pool = 1 is out of range: must be an integer >= 2"),
    ("students", "resnet.depth", {"choices": [8, 9]}, "students.resnet.depth = 9 (one of choices [8, 9]) is not a "
     "valid depth: must be one of 8, 14, 20, 26, 32, 38, 44, 50, 56, 110 (6n+2)"),
    ("students", "vgg.variant", 12, "students.vgg.variant = 12 is not a valid variant: must be one of 7, 11, 13, 16"),
    ("students", "cnn5.width", 0, "students.cnn5.width = 0 is out of range: must be a number in (0, 8]"),
    ("students", "resnet.width", {"int": [0, 8]},
     "students.resnet.width = 0 (a bound of int: [0, 8]) is out of range: must be an integer in 1..256"),
    ("students", "cnn5.hidden", 64.0, "students.cnn5.hidden = 64.0 is not an integer: must be an integer in 1..4096"),
])
def test_out_of_range_search_space_value_is_one_line_naming_key_value_and_range(section, key, spec, expected):
    space: dict = {"students": {"cnn5": {}}}
    if section == "students":
        family, knob = key.split(".")
        space["students"] = {family: {knob: spec}}
    else:
        space[section] = {key: spec}
    with pytest.raises(AutokdError) as info:
        SearchSpace(space, source="search_spaces/x.yaml")
    message = str(info.value)
    assert message.startswith(f"error: search space search_spaces/x.yaml: {expected}; fix: "), message
    assert "\n" not in message


@pytest.mark.parametrize("dimension, expected", [
    ({"float": ["a", 0.1]}, "train.lr.float[0] = 'a'"),
    ({"int": [1, 4], "step": 0}, "train.lr.step = 0 is out of range: must be a number > 0"),
    ({"int": [1, 4], "step": 1.5}, "step of an int range must be a whole number"),
    ({"float": [0.01, 0.1], "log": "yes"}, "train.lr.log = 'yes'"),
])
def test_malformed_dimension_names_the_key(dimension, expected):
    with pytest.raises(AutokdError, match="search space s.yaml: .*" + expected.replace("[", r"\[").replace(".", r"\.")):
        SearchSpace({"students": {"cnn5": {}}, "train": {"lr": dimension}}, source="s.yaml")


@pytest.mark.parametrize("override, expected", [
    ({"teacher": {"family": "cnn5", "epochs": -3}}, "teacher.epochs = -3 is out of range: must be an integer >= 1"),
    ({"teacher": {"family": "cnn5", "lr": 0}}, "teacher.lr = 0 is out of range: must be a number > 0"),
    ({"teacher": {"family": "cnn5", "batch_size": "big"}},
     "teacher.batch_size = 'big' is not an integer: must be an integer >= 1"),
    ({"teacher": {"ensemble": [{"checkpoint": "a.pt", "weight": -1}]}},
     "teacher.ensemble[0].weight = -1 is out of range: must be a number >= 0"),
    ({"validation_fraction": 1.5}, "validation_fraction = 1.5 is out of range: must be a number in (0, 1)"),
    ({"validation_min_per_class": 0}, "validation_min_per_class = 0 is out of range: must be an integer >= 1"),
    ({"latency_runs": 2}, "latency_runs = 2 is out of range: must be an integer >= 5"),
    ({"n_trials": "16"}, "n_trials = '16' is not an integer: must be an integer >= 1"),
    ({"timeout": 0}, "timeout = 0 is out of range: must be a number > 0"),
    ({"image_size": 4}, "image_size = 4 is out of range: must be an integer in 8..224"),
    ({"executor": {"kind": "local", "max_concurrent": 0}},
     "executor.max_concurrent = 0 is out of range: must be an integer >= 1"),
    ({"executor": {"cpus_per_trial": 0}}, "executor.cpus_per_trial = 0 is out of range: must be a number > 0"),
    ({"executor": {"threads_per_trial": 0}},
     "executor.threads_per_trial = 0 is out of range: must be an integer >= 1"),
    ({"executor": {"kind": "local", "speed": 3}}, "unknown key 'executor.speed'"),
    ({"sampler": "cmaes"}, "sampler = 'cmaes': Input should be"),
])
def test_out_of_range_study_value_is_one_line_naming_key_value_and_range(tmp_path, override, expected):
    path = write_tiny_study(tmp_path, **override)
    with pytest.raises(AutokdError) as info:
        load_study_config(path)
    message = str(info.value)
    assert message.startswith(f"error: study {path}: {expected}"), message
    assert "fix: correct" in message and "\n" not in message


def test_trial_threads_share_the_host_cores_between_the_trials_at_once():
    from autokd.config import ExecutorConfig

    assert ExecutorConfig(kind="ray", max_concurrent=2).trial_threads(2) == 1  # the default on 2 cores
    assert ExecutorConfig(kind="ray", max_concurrent=2).trial_threads(16) == 8
    assert ExecutorConfig(kind="ray", max_concurrent=8).trial_threads(2) == 1  # Ray fits 2 of 1 CPU at once
    assert ExecutorConfig(kind="ray", max_concurrent=4, cpus_per_trial=4).trial_threads(16) == 4
    assert ExecutorConfig(kind="ray", max_concurrent=4, cpus_per_trial=0.5).trial_threads(2) == 1  # never below 1
    assert ExecutorConfig(kind="local", max_concurrent=4).trial_threads(2) == 2  # one trial at a time
    assert ExecutorConfig(kind="local", threads_per_trial=1).trial_threads(16) == 1  # the study's setting wins
    assert ExecutorConfig(kind="ray", threads_per_trial=3).trial_threads(2) == 3


def test_cli_flag_out_of_range_names_the_option(tmp_path):
    cfg = load_study_config(write_tiny_study(tmp_path))
    with pytest.raises(AutokdError) as info:
        cfg.with_overrides(max_concurrent=0)
    assert str(info.value) == ("error: --max-concurrent 0 is out of range: must be an integer >= 1; "
                               "fix: pass --max-concurrent an integer >= 1")


def test_rule_descriptions_and_problems():
    assert str(Rule.number(above=0, below=1)) == "a number in (0, 1)"
    assert str(Rule.number(at_least=0.5)) == "a number >= 0.5"
    assert str(Rule.integer(at_most=4)) == "an integer <= 4"
    assert Rule.number(above=0).problem(float("inf")) == "is not a finite number"
    assert Rule.number(at_least=0, at_most=1).problem(1) is None and Rule.number(at_least=0).problem(False)
    assert Rule.one_of("sgd", "adamw", noun="optimizer").problem("lamb") == "is not a valid optimizer"
    assert Rule.integer(at_least=1).problem(2) is None


def test_docs_list_every_search_space_rule():
    from autokd.models import family_names, family_rules

    text = (REPO_ROOT / "docs" / "study-file.md").read_text()
    for key, rule in VALUE_RULES.items():
        assert f"| `{key}` | {rule}" in text, key
    for family in family_names():
        for knob, rule in family_rules(family).items():
            assert f"| `{family}` | `{knob}` | {rule} |" in text, (family, knob)


@pytest.mark.parametrize("path", sorted((REPO_ROOT / "search_spaces").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_search_space_validates(path):
    assert SearchSpace.load(path).families


@pytest.mark.parametrize("path", sorted((REPO_ROOT / "studies").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_study_and_its_search_space_validate(path):
    cfg = load_study_config(path)
    assert SearchSpace.load(cfg.resolve(cfg.search_space)).families


def _tree(folder: Path) -> set[str]:
    return {str(p) for p in folder.rglob("*")}


@pytest.mark.parametrize("bad", ["space", "study"])
def test_search_with_an_out_of_range_value_exits_2_and_writes_nothing(tmp_path, monkeypatch, bad):
    monkeypatch.chdir(tmp_path)  # a default runs/ folder would appear here
    space = {**TINY_SPACE, "train": {**TINY_SPACE["train"], "epochs": -3}} if bad == "space" else None
    study = write_tiny_study(tmp_path, space=space, **({"validation_fraction": 1.5} if bad == "study" else {}))
    before = _tree(tmp_path)
    result = CliRunner().invoke(app, ["search", str(study)], catch_exceptions=False)
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    expected = ("train.epochs = -3 is out of range: must be an integer >= 1" if bad == "space" else
                "validation_fraction = 1.5 is out of range: must be a number in (0, 1)")
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], result.output
    assert _tree(tmp_path) == before  # no output folder, no study database, no runs/
    assert not (tmp_path / "tiny").exists() and not list(tmp_path.rglob("*.db"))


def test_docs_list_every_study_key():
    """docs/study-file.md names every key of StudyConfig and of its parts (base_dir is set by the loader)."""
    from pydantic import BaseModel

    from autokd.config import StudyConfig

    text = (REPO_ROOT / "docs" / "study-file.md").read_text()
    for name, field in StudyConfig.model_fields.items():
        if name == "base_dir":
            continue
        part = field.annotation if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel) else None
        keys = [f"{name}.{sub}" for sub in part.model_fields] if part is not None else [name]
        for key in keys:
            assert f"| `{key}` |" in text, key


def test_the_built_in_study_written_out_is_the_built_in_study():
    """``studies/default.yaml`` says it is ``autokd search`` with no arguments: every setting must agree."""
    written = load_study_config(REPO_ROOT / "studies" / "default.yaml")
    built_in = StudyConfig()
    assert written.resolve(written.search_space) == built_in.resolve(built_in.search_space)
    ignore = {"base_dir", "search_space"}
    assert written.model_dump(exclude=ignore) == built_in.model_dump(exclude=ignore)
