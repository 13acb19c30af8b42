"""Warm starts: ``enqueue:`` in a study file and ``autokd search --enqueue-from STUDY``.

Fast tests check a configuration against a real search space (no training): the Optuna params it
gives round-trip to the same frozen config through ``FixedTrial``, and each way of not fitting the
space is refused in one line, by ``autokd search`` with exit 2 before anything is written. The
end-to-end tests run real searches on digits with a one-epoch teacher and two-epoch students, on
the local and the Ray executor: the enqueued configurations are the first trials, exactly as given,
recorded as enqueued and from where; a resumed study keeps them and runs none twice; another
study's front is enqueued with the members that do not fit this space named in one line.
"""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState
from ray_support import load, run_search
from typer.testing import CliRunner

from autokd.cli import app
from autokd.record import enqueued_from
from autokd.space import SearchSpace
from autokd.trial_config import TrialConfig
from autokd.warmstart import Unfit, fixed_params, flatten
from tests.tiny import TINY_SPACE, write_tiny_study

pytestmark = pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed to be used")

#: Two configurations of TINY_SPACE, every dimension they reach fixed (cnn5 with KD, vgg on labels only).
CNN = {"students": {"cnn5": {"width": 0.2, "hidden": 20}}, "distill": {"loss": "kd", "alpha": 0.7}}
VGG = {"students": {"vgg": {"width": 0.1}}, "distill": {"loss": "none"}}
CNN_PARAMS = {"family": "cnn5", "cnn5.width": 0.2, "cnn5.hidden": 20, "loss": "kd", "weighting": "hinton",
              "alpha": 0.7}
VGG_PARAMS = {"family": "vgg", "vgg.width": 0.1, "loss": "none"}


def _tiny_space(**distill) -> dict:
    # TINY_SPACE searches no weighting; give it one fixed so every key of a KD config is settled
    return {**TINY_SPACE, "distill": {**TINY_SPACE["distill"], "weighting": "hinton", **distill}}


def test_a_configuration_gives_the_params_a_sampled_trial_holds_and_round_trips():
    space = SearchSpace(_tiny_space())
    for entry, expected in ((CNN, CNN_PARAMS), (VGG, VGG_PARAMS)):
        params, config = fixed_params(space, flatten(entry))
        assert params == {k: v for k, v in expected.items() if k != "weighting"}  # weighting is fixed, not searched
        assert space.replay(params) == config  # what the study rebuilds from the trial's params
        assert TrialConfig.from_params(config.to_params()) == config
    _, config = fixed_params(space, flatten(CNN))
    assert (config.student.knob_dict, config.distill.alpha, config.distill.temperature, config.train.epochs) == (
        {"hidden": 20, "width": 0.2}, 0.7, 4.0, 2)


@pytest.mark.parametrize("entry, problem", [
    ({**CNN, "students": {"cnn5": {"width": 0.5, "hidden": 20}}}, "students.cnn5.width = 0.5 is outside the space's "
                                                                  "float: [0.125, 0.25]"),
    ({**CNN, "students": {"cnn5": {"width": 0.2, "hidden": 64}}}, "students.cnn5.hidden = 64 is outside the space's "
                                                                  "int: [16, 32]"),
    ({**CNN, "students": {"mobilenetv2": {"width": 0.5}}}, "mobilenetv2: not in this space"),
    ({**CNN, "students": {"cnn5": {"width": 0.2, "hidden": 20, "depth": 3}}}, "cnn5.depth: not a knob of cnn5"),
    ({**CNN, "students": {"cnn5": {"width": 0.2}}}, "no value for students.cnn5.hidden, which the space searches"),
    ({**VGG, "students": {"vgg": {"width": 0.1, "variant": 11}}}, "students.vgg.variant = 11, which the space fixes "
                                                                  "at 7"),
    ({**CNN, "distill": {"loss": "fm", "alpha": 0.7}}, "distill.loss = 'fm' is not one of the space's choices"),
    ({**VGG, "distill": {"loss": "none", "alpha": 0.7}}, "distill.alpha is not a setting of this configuration"),
    ({**CNN, "train": {"epochs": 5}}, "train.epochs = 5, which the space fixes at 2"),
    ({**CNN, "train": {"lr": {"float": [0.01, 0.1]}}}, "train.lr is a range or list"),
    ({**CNN, "train": {"momentum": 0.9}}, "unknown key 'train.momentum'"),
])
def test_a_configuration_outside_the_space_is_refused_saying_why(entry, problem):
    with pytest.raises(Unfit) as err:
        fixed_params(SearchSpace(_tiny_space()), flatten(entry))
    assert problem in str(err.value)


@pytest.mark.parametrize("name", ["seed-recipes", "seed-recipes-cifar10"])
def test_the_seed_recipe_studies_are_their_recipes_and_nothing_sampled(name):
    from autokd.config import REPO_ROOT, load_study_config
    from autokd.warmstart import study_entries

    cfg = load_study_config(REPO_ROOT / "studies" / f"{name}.yaml")
    warm = study_entries(SearchSpace.load(cfg.resolve(cfg.search_space)), cfg.enqueue, name)
    assert len(warm.configs) == cfg.n_trials >= 7
    assert len({json.dumps(w.params, sort_keys=True) for w in warm.configs}) == cfg.n_trials  # none repeated
    assert {w.config.student.family for w in warm.configs} >= {"cnn5", "vgg", "resnet"}
    assert {w.config.distill.loss for w in warm.configs} >= {"kd", "fm", "none"}


def test_check_counts_the_enqueued_configurations():
    from autokd.config import REPO_ROOT

    result = CliRunner().invoke(app, ["check", str(REPO_ROOT / "studies" / "seed-recipes.yaml")],
                                catch_exceptions=False, env={"COLUMNS": "300"})
    assert result.exit_code == 0, result.output
    assert "7 enqueued configurations run first" in result.output, result.output


def test_an_interrupted_enqueued_trial_stays_enqueued_when_it_is_queued_again():
    from optuna.trial import create_trial

    from autokd.record import carried_attrs, enqueued_attrs, retry_attrs

    trial = create_trial(state=TrialState.FAIL, params={"lr": 0.05},
                         distributions={"lr": optuna.distributions.FloatDistribution(0.01, 0.1)},
                         user_attrs={**enqueued_attrs("enqueue[0] of x.yaml"), "failed_because": "interrupted"})
    assert retry_attrs(trial) == {"retry_of": trial.number, "enqueued_from": "enqueue[0] of x.yaml"}
    assert carried_attrs(trial) == {"enqueued_from": "enqueue[0] of x.yaml"}


def _tree(folder: Path) -> set[str]:
    return {str(p) for p in folder.rglob("*")}


def test_search_refuses_an_entry_outside_the_space_in_one_line_and_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    bad = {**CNN, "students": {"cnn5": {"width": 0.5, "hidden": 20}}}
    study = write_tiny_study(tmp_path, space=_tiny_space(), enqueue=[CNN, bad])
    before = _tree(tmp_path)
    result = CliRunner().invoke(app, ["search", str(study)], catch_exceptions=False)
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"error: study {study}: enqueue[1]: students.cnn5.width = 0.5 "
                                                   "is outside the space's float: [0.125, 0.25]"), result.output
    assert _tree(tmp_path) == before  # no output folder, no database, no teacher


def test_search_refuses_an_enqueue_from_study_that_does_not_exist_in_one_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    study = write_tiny_study(tmp_path, space=_tiny_space())
    before = _tree(tmp_path)
    result = CliRunner().invoke(app, ["search", str(study), "--enqueue-from", "nowhere"], catch_exceptions=False)
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: 'nowhere' is neither a study file"), result.output
    assert _tree(tmp_path) == before


def _study(tmp_path: Path, teacher: Path, name: str, executor: str = "local", **overrides) -> Path:
    folder = tmp_path / name
    return write_tiny_study(folder, name=name, space=overrides.pop("space", _tiny_space()), output="out",
                            teacher={"checkpoint": str(teacher)},
                            executor={"kind": executor, "max_concurrent": 2}, **overrides)


def _search(study: Path, *args: str) -> str:
    done = run_search(study, *args, timeout=400)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


def _trials(study: Path) -> list[optuna.trial.FrozenTrial]:
    return sorted(load(study).get_trials(deepcopy=False), key=lambda t: t.number)


@pytest.mark.slow
def test_enqueued_configurations_run_first_exactly_and_a_resumed_study_keeps_them(tmp_path, tiny_teacher):
    # Both executors in one study (once a case each): the local run enqueues and runs the first configuration,
    # the resume on Ray the queued one. Enqueueing happens before either executor runs, and both take a queued
    # trial through the same TrialLifecycle.start (autokd.search.lifecycle).
    study = _study(tmp_path, tiny_teacher, "enq", "local", n_trials=1, enqueue=[CNN, VGG])
    out = _search(study)  # a budget of one: the first configuration runs, the second stays queued
    assert "enqueued 2 configurations to run before sampled ones" in out, out
    trials = _trials(study)
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.WAITING], [(t.number, t.state) for t in trials]
    assert trials[0].params == {k: v for k, v in CNN_PARAMS.items() if k != "weighting"}  # weighting: fixed
    assert enqueued_from(trials[0]) == f"enqueue[0] of {study}"
    space = SearchSpace.load(study.parent / f"{study.stem}-space.yaml")
    assert TrialConfig.from_params(trials[0].user_attrs["config"]) == space.replay(trials[0].params)

    # resumed on Ray: nothing queued again, the queued one runs, then one sampled
    out = _search(study, "--n-trials", "3", "--executor", "ray")
    assert "enqueued 0 configurations to run before sampled ones (2 already in the study)" in out, out
    trials = _trials(study)
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 3, [(t.number, t.state) for t in trials]
    assert [t.user_attrs["executor"] for t in trials] == ["local", "ray", "ray"]
    assert trials[1].params == VGG_PARAMS and enqueued_from(trials[1]) == f"enqueue[1] of {study}"
    assert TrialConfig.from_params(trials[1].user_attrs["config"]) == space.replay(trials[1].params)
    assert enqueued_from(trials[2]) is None  # sampled
    assert len({json.dumps(t.params, sort_keys=True) for t in trials}) == 3


@pytest.mark.slow
def test_enqueue_from_runs_the_fitting_front_of_another_study_first(tmp_path, tiny_teacher):
    # The source study ranks params against MACs: a ResNet-8 (5,142 params, 49,568 MACs) and a VGG7
    # (7,530 params, 22,208 MACs) are each cheaper on one, so both are its front whatever they learn.
    source_space = {"students": {"resnet": {"depth": 8, "width": {"int": [4, 8], "step": 4}},
                                 "vgg": {"variant": 7, "width": {"float": [0.0625, 0.125]}}},
                    "distill": {"loss": "kd", "alpha": {"float": [0.5, 0.9]}, "temperature": 4.0},
                    "train": {"epochs": 1, "batch_size": 64, "lr": 0.05}}
    resnet = {"students": {"resnet": {"width": 4}}, "distill": {"alpha": 0.6}}
    vgg = {"students": {"vgg": {"width": 0.0625}}, "distill": {"alpha": 0.8}}
    source = _study(tmp_path, tiny_teacher, "source", n_trials=2, space=source_space, objectives=["params", "macs"],
                    enqueue=[vgg, resnet])
    _search(source)
    front = sorted(load(source).best_trials, key=lambda t: t.number)
    assert [t.params["family"] for t in front] == ["vgg", "resnet"]
    # This study searches accuracy against params over ResNets (depth searched too) and cnn5s, no VGG: the
    # VGG is named in one line, the ResNet runs first as it was, and sampling fills the budget.
    space = {**_tiny_space(), "students": {"resnet": {"depth": {"choices": [8, 14]}, "width": {"int": [4, 8], "step": 4}},
                                           "cnn5": TINY_SPACE["students"]["cnn5"]}}
    study = _study(tmp_path, tiny_teacher, "target", n_trials=2, space=space)
    out = _search(study, "--enqueue-from", str(source))
    assert [line for line in out.splitlines() if line.startswith("not enqueued:")] == [
        f"not enqueued: trial {front[0].number} (vgg: not in this space)"]
    trials = _trials(study)
    assert trials[0].params == {"family": "resnet", "resnet.depth": 8, "resnet.width": 4, "loss": "kd", "alpha": 0.6}
    assert enqueued_from(trials[0]) == f"trial {front[1].number} of study source"
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 2 and enqueued_from(trials[1]) is None
