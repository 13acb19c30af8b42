"""TPE's start-up proposals spread over the cost axis (autokd.search.startup): the real ``propose`` on
real Optuna studies and the digits students' real parameter counts; no training (values are told)."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import optuna
import yaml
import pytest
from optuna.trial import TrialState

from autokd.config import StudyConfig
from autokd.data import load_dataset
from autokd.search.early_stopping import cost_probe
from autokd.search.startup import POOL, CostSpread
from autokd.search.study import open_study, propose, sampler_seed
from autokd.space import SearchSpace

pytestmark = pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed to be used")

SPACE = {"students": {"cnn5": {"width": {"float": [0.125, 1.0], "log": True}, "hidden": {"int": [16, 128], "log": True}},
                      "resnet": {"depth": {"choices": [8, 14]}, "width": {"int": [4, 16], "step": 4}}},
         "distill": {"loss": {"choices": ["kd", "none"]}, "alpha": {"float": [0.3, 0.95]}, "temperature": 4.0},
         "train": {"epochs": 2, "lr": {"float": [0.02, 0.2], "log": True}}}


@pytest.fixture(scope="module")
def probe():
    return cost_probe(SimpleNamespace(data=load_dataset("digits"), latency=None))


def _study(tmp_path: Path, **overrides):
    cfg = StudyConfig(**{"name": "startup", "output": str(tmp_path / "out"), "objectives": ["accuracy", "params"],
                         "n_trials": 12, "seed": 3, **overrides})
    cfg.output_dir.mkdir(parents=True)
    return cfg, open_study(cfg, heartbeat=False)


def _pool_log_params(space: SearchSpace, spread: CostSpread, seed: int) -> list[float]:
    """The log10 params of the POOL random configurations a proposal with ``seed`` is chosen from."""
    pool = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    return [spread.log_cost(space.suggest(pool.ask())) for _ in range(POOL)]


def _log_params(probe, space: SearchSpace, params: dict) -> float:
    return math.log10(probe(space.replay(params), False)["params"])


def test_start_up_proposals_spread_over_the_cost_axis_cheapest_first(tmp_path, probe):
    cfg, study = _study(tmp_path)
    space = SearchSpace(SPACE)
    spread = CostSpread(cfg, space, probe)
    proposed = []
    for _ in range(cfg.startup_trials):
        seed = sampler_seed(cfg.seed, len(study.trials))
        trial, _ = propose(study, cfg, space, spread=spread)  # left RUNNING: in flight, it counts as held
        proposed.append(_log_params(probe, space, trial.params))
        pool = _pool_log_params(space, spread, seed)
        if len(proposed) == 1:
            assert proposed[0] == min(pool)  # the cheapest of its pool
        else:  # the farthest from every trial held, in log params
            gap = lambda x: min(abs(x - p) for p in proposed[:-1])  # noqa: E731
            assert gap(proposed[-1]) == max(gap(x) for x in pool) > 0
    assert max(proposed) - min(proposed) > 1.0  # more than a decade of params apart
    # The start-up is over: TPE proposes as it would alone.
    for trial in study.get_trials(states=(TrialState.RUNNING,)):
        study.tell(trial.number, [0.9, 1000.0])
    assert spread.choose(study, 0) is None


def test_random_start_up_enqueued_trials_and_committees_are_left_alone(tmp_path, probe):
    space = SearchSpace(SPACE)
    plain_cfg, plain = _study(tmp_path / "plain", startup="random")
    spread_cfg, spread_study = _study(tmp_path / "spread")
    assert CostSpread(plain_cfg, space, probe).choose(plain, 0) is None  # startup: random
    random_first = propose(plain, plain_cfg, space, spread=CostSpread(plain_cfg, space, probe))[0].params
    assert random_first == propose(*_study(tmp_path / "none", startup="random")[::-1], space)[0].params
    # An enqueued configuration runs as given.
    fixed = {"family": "resnet", "resnet.depth": 14, "resnet.width": 16}
    spread_study.enqueue_trial(fixed)
    trial, config = propose(spread_study, spread_cfg, space, spread=CostSpread(spread_cfg, space, probe))
    assert {k: trial.params[k] for k in fixed} == fixed
    # Compressed students cost what compression makes of them: the start-up stays random.
    compress = SearchSpace({**SPACE, "compress": {"method": {"choices": ["none", "structured"]}, "ratio": 0.5}})
    assert CostSpread(spread_cfg, compress, probe).choose(spread_study, 0) is None
    # Only TPE has a start-up to spread.
    nsga_cfg, nsga = _study(tmp_path / "nsga", sampler="nsga2")
    assert CostSpread(nsga_cfg, space, probe).choose(nsga, 0) is None


def test_a_cost_bound_keeps_the_pool_inside_it_and_an_accuracy_only_study_starts_at_random(tmp_path, probe):
    space = SearchSpace(SPACE)
    cfg, study = _study(tmp_path, constraints={"max_params": 20000})
    spread = CostSpread(cfg, space, probe)
    for _ in range(cfg.startup_trials):
        trial, config = propose(study, cfg, space, spread=spread)
        assert probe(config, False)["params"] <= 20000
    # every proposal was the spread's own pick: nothing over the bound was proposed and replaced
    assert [t.state for t in study.trials].count(TrialState.FAIL) == 0
    # no cost objective, no front over cost: Optuna's random start-up
    only_cfg, only = _study(tmp_path / "accuracy", objectives=["accuracy"])
    assert CostSpread(only_cfg, space, probe).choose(only, 0) is None


@pytest.mark.slow
@pytest.mark.parametrize("executor", ["local", "ray"])
def test_a_search_starts_from_the_cheapest_of_its_pool_on_both_executors(tmp_path, tiny_teacher, probe, executor):
    from ray_support import load, run_search, write_study

    from autokd.config import load_study_config

    path = write_study(tmp_path, n_trials=1, epochs=1, teacher=tiny_teacher, executor=executor, max_concurrent=1)
    done = run_search(path, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    [trial] = load(path).trials
    cfg = load_study_config(path)
    space = SearchSpace(yaml.safe_load((tmp_path / "space.yaml").read_text()))
    cheapest = min(_pool_log_params(space, CostSpread(cfg, space, probe), sampler_seed(cfg.seed, 0)))
    assert _log_params(probe, space, trial.params) == cheapest
