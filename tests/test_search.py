"""The search protocol shared by both executors: proposals never repeat a configuration, sampler
seeds follow the study's history, metrics are named, and a search whose trials all fail says so.

Proposal tests drive the real ``propose`` against real Optuna studies on SQLite and PostgreSQL;
they tell values computed from the parameters instead of training, so they take a second.
"""

from __future__ import annotations

import threading
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState
from typer.testing import CliRunner

from autokd.cli import app
from autokd.config import StudyConfig, load_study_config
from autokd.record import trial_figures
from autokd.space import SearchSpace
from autokd.search.study import SpaceExhausted, open_study, propose
from tests.tiny import TINY_SPACE, write_tiny_study

pytestmark = pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed to be used")


def _config(tmp_path: Path, **overrides) -> StudyConfig:
    base = {"name": "proposals", "output": str(tmp_path / "out"), "objectives": ["accuracy", "params"],
            "n_trials": 12, "seed": 7}
    return StudyConfig(**{**base, **overrides})


def _fake_values(config) -> list[float]:
    """Deterministic stand-in objectives so a proposal test needs no training."""
    knobs = config.student.knob_dict
    return [float(knobs.get("width", 0.5)), float(knobs.get("hidden", 10))]


def _run(study: optuna.Study, cfg: StudyConfig, space: SearchSpace, n: int) -> list[dict]:
    proposed = []
    for _ in range(n):
        trial, config = propose(study, cfg, space)
        study.tell(trial, _fake_values(config))
        proposed.append(trial.params)
    return proposed


def _complete_params(study: optuna.Study) -> list[dict]:
    return [t.params for t in study.get_trials(states=(TrialState.COMPLETE,))]


@pytest.mark.parametrize("sampler", ["tpe", "random", "nsga2"])
def test_resume_and_a_new_process_never_repeat_a_configuration(tmp_path, sampler):
    cfg = _config(tmp_path, sampler=sampler)
    cfg.output_dir.mkdir(parents=True)
    space = SearchSpace(TINY_SPACE)
    first = _run(open_study(cfg, heartbeat=False), cfg, space, 3)
    # A resumed search (a new process: a new Study object and a fresh sampler) continues the study.
    resumed = _run(open_study(cfg, heartbeat=False), cfg, space, 3)
    params = _complete_params(open_study(cfg, heartbeat=False))
    assert len(params) == 6 and all(p not in first for p in resumed)
    assert len({repr(sorted(p.items())) for p in params}) == 6


def test_fresh_studies_with_one_seed_propose_the_same_trials_in_order(tmp_path):
    space = SearchSpace(TINY_SPACE)
    runs = []
    for name in ("a", "b"):
        cfg = _config(tmp_path / name, name=name)
        cfg.output_dir.mkdir(parents=True)
        runs.append(_run(open_study(cfg, heartbeat=False), cfg, space, 8))  # past TPE's start-up phase
    assert runs[0] == runs[1]
    other = _config(tmp_path / "c", name="c", seed=8)
    other.output_dir.mkdir(parents=True)
    assert _run(open_study(other, heartbeat=False), other, space, 3) != runs[0][:3]


def test_a_duplicate_proposal_is_replaced_before_training_and_an_exhausted_space_stops(tmp_path):
    cfg = _config(tmp_path, sampler="tpe")
    cfg.output_dir.mkdir(parents=True)
    tiny = SearchSpace({"students": {"cnn5": {"width": {"choices": [0.25, 0.5]}, "hidden": 16}},
                        "distill": {"loss": "none"}})  # two configurations in all
    study = open_study(cfg, heartbeat=False)
    proposed = _run(study, cfg, tiny, 2)
    assert sorted(p["cnn5.width"] for p in proposed) == [0.25, 0.5]
    with pytest.raises(SpaceExhausted, match="exhausted"):
        propose(study, cfg, tiny)
    replaced = [t for t in study.get_trials() if t.state == TrialState.FAIL]
    complete = {t.number for t in study.get_trials(states=(TrialState.COMPLETE,))}
    assert len(complete) == 2 and replaced and all(t.user_attrs["duplicate_of"] in complete for t in replaced)
    assert all("replaced before training" in t.user_attrs["failed_because"] for t in replaced)


def test_a_retry_replays_its_own_parameters(tmp_path):
    cfg = _config(tmp_path)
    cfg.output_dir.mkdir(parents=True)
    space = SearchSpace(TINY_SPACE)
    study = open_study(cfg, heartbeat=False)
    trial, config = propose(study, cfg, space)
    study.tell(trial, state=TrialState.FAIL)  # its driver died
    study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number})
    retry, again = propose(study, cfg, space)
    assert retry.params == trial.params and again == config


@pytest.mark.postgres
def test_two_drivers_proposing_at_once_never_share_a_configuration(tmp_path, postgres_url):
    cfg = _config(tmp_path, storage=postgres_url, n_trials=None)
    cfg.output_dir.mkdir(parents=True)
    open_study(cfg, heartbeat=False)  # created once; both drivers load it
    space = SearchSpace(TINY_SPACE)
    errors: list[BaseException] = []

    def driver() -> None:
        try:
            _run(open_study(cfg, heartbeat=False), cfg, space, 5)
        except BaseException as err:  # surfaced by the assertion below
            errors.append(err)

    threads = [threading.Thread(target=driver) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors
    params = _complete_params(open_study(cfg, heartbeat=False))
    assert len(params) == 10 and len({repr(sorted(p.items())) for p in params}) == 10


def test_the_study_names_its_metrics_for_the_dashboard(tmp_path):
    cfg = _config(tmp_path, objectives=["accuracy", "params", "latency_ms"])
    cfg.output_dir.mkdir(parents=True)
    open_study(cfg, heartbeat=False)
    stored = optuna.load_study(study_name=cfg.name, storage=cfg.storage_url)
    assert stored.metric_names == ["accuracy", "params", "latency_ms"]


# --------------------------------------------------------------------------- through the CLI

runner = CliRunner()


@pytest.mark.slow
def test_resumed_search_runs_only_new_configurations(tmp_path):
    study = write_tiny_study(tmp_path, n_trials=2)
    assert runner.invoke(app, ["search", str(study)], catch_exceptions=False).exit_code == 0
    result = runner.invoke(app, ["search", str(study), "--n-trials", "4"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    cfg = load_study_config(study)
    trials = optuna.load_study(study_name=cfg.name, storage=cfg.storage_url).get_trials(states=(TrialState.COMPLETE,))
    assert len(trials) == 4 and len({repr(sorted(t.params.items())) for t in trials}) == 4
    for t in trials:  # the objective is validation accuracy; test accuracy is stored beside it
        assert t.values[0] == t.user_attrs["validation_accuracy"] and "test_accuracy" in t.user_attrs


@pytest.mark.slow
def test_a_search_where_every_trial_fails_exits_1_with_one_line_and_logs(tmp_path):
    space = {"students": {"cnn5": {"width": {"float": [0.125, 0.25]}}}, "distill": {"loss": "none"},
             "train": {"epochs": 1, "lr": 1.0e12, "batch_size": 64}}  # valid settings; training diverges
    study = write_tiny_study(tmp_path, space=space, n_trials=2)
    result = runner.invoke(app, ["search", str(study)])
    assert result.exit_code == 1, result.output
    lines = [line for line in result.output.strip().splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "no trial finished" in lines[0] and "FloatingPointError" in lines[0]
    assert "Traceback" not in result.output
    logs = sorted((tmp_path / "tiny" / "trials").glob("*/trial.log"))
    assert logs and str(logs[0]) in lines[0]
    assert "Traceback" in logs[0].read_text() and "diverged" in logs[0].read_text()


@pytest.mark.slow
def test_an_image_folder_val_split_is_the_validation_split(tmp_path, cifar_subset_dir):
    import shutil

    root = tmp_path / "imgs"
    shutil.copytree(cifar_subset_dir, root)
    for cls_dir in (root / "train").iterdir():
        (root / "val" / cls_dir.name).mkdir(parents=True)
        for f in sorted(cls_dir.iterdir())[:2]:
            f.rename(root / "val" / cls_dir.name / f.name)
    space = {"students": {"cnn5": {"width": 0.25, "hidden": 16}}, "distill": {"loss": {"choices": ["kd", "none"]},
             "alpha": 0.5, "temperature": 2.0}, "train": {"epochs": 1, "batch_size": 32}}
    study = write_tiny_study(tmp_path, space=space, n_trials=1, dataset=f"imagefolder:{root}",
                             teacher={"family": "cnn5", "knobs": {"width": 0.25}, "epochs": 1})
    result = runner.invoke(app, ["search", str(study)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "180 train / 20 validation / 100 test" in " ".join(result.output.split())
    cfg = load_study_config(study)
    trial = optuna.load_study(study_name=cfg.name, storage=cfg.storage_url).trials[0]
    per_class = trial_figures(trial)["per_class_validation_accuracy"]
    assert len(per_class) == 10 and all(round(v * 2) == v * 2 for v in per_class)  # 2 images per class
