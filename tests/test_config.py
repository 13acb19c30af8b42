"""Study and search-space YAML: validation, precedence, and the trial config round trip."""

import optuna
import pytest

from autokd.config import (CompressSpec, DistillSpec, SearchSpace, StudentSpec, StudyConfig, TrainSpec, TrialConfig,
                           load_study_config)
from autokd.errors import AutokdError
from autokd.search.local import replay
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
        assert replay(trial.params, space) == cfg  # rebuilt from the database's params alone
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
    ({"students": {"resnet99": {}}}, "unknown family 'resnet99'"),
    ({"students": {"cnn5": {"depth": 3}}}, "has no knob 'depth'"),
    ({"students": {"cnn5": {"width": {"float": [1.0, 0.5]}}}}, "low must be <= high"),
    ({"students": {"cnn5": {"width": {"float": [0.1, 0.5], "choices": [1]}}}}, "exactly one of"),
    ({"students": {"cnn5": {}}, "distill": {"loss": {"choices": ["kd", "magic"]}}}, "unknown loss 'magic'"),
    ({"students": {"cnn5": {}}, "trian": {}}, "unknown section 'trian'"),
    ({}, "has no students"),
    ({"students": {"cnn5": {}}, "train": {"optimizer": {"choices": ["sgd", "lamb"]}}}, "unknown optimizer 'lamb'"),
    ({"students": {"cnn5": {}}, "train": {"schedule": "step"}}, "unknown schedule 'step'"),
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
