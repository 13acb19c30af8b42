"""Cost-aware early stopping: the rule on hand-built curves, then real digits studies on both executors."""

from __future__ import annotations

import optuna
import pytest
from optuna.trial import TrialState
from typer.testing import CliRunner

from autokd.cli import app
from autokd.config import load_study_config
from autokd.early_stop import EarlyStopRule, Finished, replay, stop_reason
from autokd.record import pruned_because, trial_curve
from autokd.search.study import open_study
from tests.tiny import write_tiny_study

PARAMS = {"params": "minimize"}
RULE = EarlyStopRule(margin=0.05, first_fraction=0.34, min_finished=2)
#: Two small finished trials that learned well, and a big one.
DONE = [Finished(0, {"params": 4100.0}, (0.50, 0.85, 0.93, 0.95), 0.96),
        Finished(1, {"params": 5000.0}, (0.45, 0.80, 0.90, 0.93), 0.94),
        Finished(2, {"params": 90000.0}, (0.60, 0.90, 0.96, 0.98), 0.98)]


# --------------------------------------------------------------------------- the rule, by hand


def test_a_trial_cheaper_rivals_lead_by_more_than_it_can_make_up_is_stopped_naming_them():
    reason = stop_reason({"params": 9800.0}, (0.10, 0.12), 4, DONE, PARAMS, RULE)
    # the largest gain after epoch 2 was trial 1's, 80% -> 94%: from 12% it could reach 26%
    assert reason is not None
    assert reason.startswith("trial 0 (params 4.10k <= 9.80k, accuracy at epoch 2 85.00% vs 12.00%), "
                             "trial 1 (params 5.00k <= 9.80k, accuracy at epoch 2 80.00% vs 12.00%)")
    assert "trial 2" not in reason  # it costs more: it says nothing about this trial's front
    assert reason.endswith("each ended at least 94.00%, above the 26.00% this trial could reach")


def test_the_smallest_trial_is_never_stopped_however_far_behind():
    assert stop_reason({"params": 3000.0}, (0.10, 0.12), 4, DONE, PARAMS, RULE) is None


def test_every_cost_objective_must_be_no_worse():
    both = {"params": "minimize", "latency_ms": "minimize"}
    done = [Finished(f.number, {**f.costs, "latency_ms": 0.5}, f.curve, f.final) for f in DONE]
    assert stop_reason({"params": 9800.0, "latency_ms": 0.4}, (0.1, 0.12), 4, done, both, RULE) is None
    assert stop_reason({"params": 9800.0, "latency_ms": 0.5}, (0.1, 0.12), 4, done, both, RULE) is not None


def test_not_before_the_first_epoch_nor_at_the_last_nor_with_too_few_finished_trials():
    assert RULE.first_epoch(4) == 2 and RULE.first_epoch(10) == 4
    assert stop_reason({"params": 9800.0}, (0.10,), 4, DONE, PARAMS, RULE) is None  # epoch 1 < 2
    assert stop_reason({"params": 9800.0}, (0.1, 0.1, 0.1, 0.1), 4, DONE, PARAMS, RULE) is None  # its last epoch
    assert stop_reason({"params": 9800.0}, (0.1, 0.1, 0.1), 4, DONE, PARAMS, RULE) is not None
    assert stop_reason({"params": 9800.0}, (0.10, 0.12), 4, DONE[:1], PARAMS, RULE) is None  # 1 < min_finished
    short = [Finished(9, {"params": 1.0}, (0.9,), 0.9), DONE[0]]  # a 1-epoch curve says nothing of epoch 2
    assert stop_reason({"params": 9800.0}, (0.10, 0.12), 4, short, PARAMS, RULE) is None


def test_a_lead_within_the_margin_or_a_reach_no_rival_ended_above_goes_on():
    assert stop_reason({"params": 9800.0}, (0.50, 0.81), 4, DONE, PARAMS, RULE) is None  # 85 - 81 <= 5 points
    # A finished trial gained 61 points after epoch 2: a trial at 40% now could still reach 100%.
    late = [*DONE, Finished(3, {"params": 50000.0}, (0.1, 0.3, 0.7, 0.9), 0.91)]
    assert stop_reason({"params": 9800.0}, (0.20, 0.40), 4, late, PARAMS, RULE) is None
    reason = stop_reason({"params": 9800.0}, (0.10, 0.12), 4, late, PARAMS, RULE)
    assert reason.endswith("above the 73.00% this trial could reach")  # 12% + 61 points, below the rivals' 94%


def test_an_accuracy_only_study_compares_with_every_finished_trial():
    assert "trial 2" in stop_reason({}, (0.10, 0.12), 4, DONE, {}, RULE)


def test_replay_judges_each_trial_against_the_earlier_ones_it_let_finish():
    bad = Finished(3, {"params": 9800.0}, (0.10, 0.12, 0.15, 0.20), 0.20)
    worse = Finished(4, {"params": 9900.0}, (0.05, 0.06, 0.07, 0.08), 0.08)
    stopped = replay([*DONE, bad, worse], {}, PARAMS, RULE)
    assert set(stopped) == {3, 4} and stopped[3][0] == 2
    assert "trial 3" not in stopped[4][1]  # a stopped trial never becomes a rival


# --------------------------------------------------------------------------- real studies

runner = CliRunner()

#: cnn5 students on digits: lr 0.05 learns, lr 1e-5 learns nothing in three epochs.
SPACE = {"students": {"cnn5": {"width": {"choices": [0.125, 1.0]}, "hidden": {"int": [12, 32]}}},
         "distill": {"loss": "kd", "alpha": 0.5, "temperature": 4.0},
         "train": {"epochs": 3, "batch_size": 64, "lr": {"choices": [0.05, 0.00001]}}}
GOOD = [{"family": "cnn5", "cnn5.width": 0.125, "cnn5.hidden": h, "lr": 0.05} for h in (16, 24, 32)]
#: Bigger than every good trial and learning nothing: dominated at its cost, stopped at epoch 2 of 3. Width 1
#: (not 0.5, whose latency was within 0.001 ms of the good ones' and, timed, sometimes below one of them).
BIG_BAD = {"family": "cnn5", "cnn5.width": 1.0, "cnn5.hidden": 32, "lr": 0.00001}
#: Learning nothing too, but smaller than every finished trial: nothing cheaper beats it, it runs on.
SMALL_BAD = {"family": "cnn5", "cnn5.width": 0.125, "cnn5.hidden": 12, "lr": 0.00001}


def enqueue_study(study_path, configs):
    cfg = load_study_config(study_path)
    cfg.output_dir.mkdir(parents=True, exist_ok=True)
    study = open_study(cfg)
    for params in configs:
        study.enqueue_trial(params)
    return cfg


def check_stopped_and_not(cfg, numbers):
    """Trials 0-2 (good) and the small bad one COMPLETE, the big bad one PRUNED after epoch 2 naming its rivals."""
    trials = optuna.load_study(study_name=cfg.name, storage=cfg.storage_url).get_trials()
    by = {t.number: t for t in trials}
    big, small = by[numbers["big"]], by[numbers["small"]]
    assert [by[n].state for n in numbers["good"]] == [TrialState.COMPLETE] * 3
    assert big.state == TrialState.PRUNED, [(t.number, t.state, t.user_attrs.get("failed_because")) for t in trials]
    assert small.state == TrialState.COMPLETE  # as bad, but nothing cheaper finished: it may sit on the front
    reason = pruned_because(big)
    # Rivals are the good trials no costlier on every objective: a measured latency of these tiny
    # networks is noisy, so which of the three qualify may vary; no other trial may.
    named = {t.number for t in trials if f"trial {t.number} (params " in reason}
    assert named and named <= set(numbers["good"]), reason
    assert "accuracy at epoch 2" in reason and big.user_attrs["epoch"] == 2 and len(trial_curve(big)) == 2
    good_at_2 = [trial_curve(by[n])[1] for n in numbers["good"]]
    assert min(good_at_2) - trial_curve(big)[1] > 0.2  # clearly dominated: not a case decided by the margin
    assert len(trial_curve(small)) == 3 and trial_curve(small)[-1] < 0.5  # it learned nothing, and was let be
    assert big.user_attrs["costs_before_training"]["params"] > max(by[n].user_attrs["params"] for n in numbers["good"])
    return by


@pytest.mark.slow
def test_local_search_stops_the_dominated_trial_keeps_the_small_one_and_a_resume_never_reruns_it(tmp_path, tiny_teacher):
    study = write_tiny_study(tmp_path, space=SPACE, n_trials=5, early_stopping=False,  # the flag wins over the file
                             teacher={"checkpoint": str(tiny_teacher)}, objectives=["accuracy", "params", "latency_ms"])
    cfg = enqueue_study(study, [*GOOD, BIG_BAD, SMALL_BAD])
    result = runner.invoke(app, ["search", str(study), "--early-stopping"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "trial   3 PRUNED at epoch 2 by early stopping: trial " in result.output
    by = check_stopped_and_not(cfg, {"good": [0, 1, 2], "big": 3, "small": 4})
    assert "latency_ms" in by[3].user_attrs["costs_before_training"]  # timed in the epoch hook, mid-training
    # PRUNED counts toward n_trials, and a resumed study never runs it again.
    again = runner.invoke(app, ["search", str(study), "--early-stopping"], catch_exceptions=False)
    assert "already holds 5 finished trials (budget 5); nothing to run" in again.output
    more = runner.invoke(app, ["search", str(study), "--early-stopping", "--n-trials", "6"], catch_exceptions=False)
    assert more.exit_code == 0, more.output
    after = optuna.load_study(study_name=cfg.name, storage=cfg.storage_url).get_trials()
    assert after[3].state == TrialState.PRUNED and pruned_because(after[3]) == pruned_because(by[3])
    assert [t.params for t in after].count(by[3].params) == 1
    assert not [t for t in after if t.state == TrialState.WAITING]
    from autokd.report import rich_table
    from autokd.report.sections import unfinished_section
    from rich.console import Console

    console = Console(width=400, record=True)
    console.print(rich_table(unfinished_section(optuna.load_study(study_name=cfg.name, storage=cfg.storage_url))))
    assert "pruned at epoch 2 by early stopping: trial " in console.export_text()


@pytest.mark.slow
def test_no_early_stopping_lets_the_dominated_trial_finish(tmp_path, tiny_teacher):
    study = write_tiny_study(tmp_path, space=SPACE, n_trials=4, teacher={"checkpoint": str(tiny_teacher)})
    cfg = enqueue_study(study, [*GOOD, BIG_BAD])
    result = runner.invoke(app, ["search", str(study), "--no-early-stopping"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    trials = optuna.load_study(study_name=cfg.name, storage=cfg.storage_url).get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 4
    assert len(trial_curve(trials[3])) == 3 and "costs_before_training" not in trials[3].user_attrs


@pytest.mark.slow
def test_ray_search_stops_the_dominated_trial_in_the_driver_and_keeps_the_small_one(tmp_path, tiny_teacher):
    import yaml

    from tests.ray_support import run_search, write_study

    # One trial at a time, so the good ones have finished when the big one is judged; latency is an objective
    # too, so the big trial's untrained latency is timed before it is stopped.
    study = write_study(tmp_path, n_trials=5, epochs=3, max_concurrent=1, teacher=tiny_teacher, early_stopping=True)
    (tmp_path / "space.yaml").write_text(yaml.safe_dump(SPACE))
    cfg = enqueue_study(study, [*GOOD, BIG_BAD, SMALL_BAD])
    assert cfg.early_stopping and cfg.objectives == ["accuracy", "params", "latency_ms"]
    result = run_search(study, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "trial   3 PRUNED at epoch 2 by early stopping: trial " in result.stdout
    by = check_stopped_and_not(cfg, {"good": [0, 1, 2], "big": 3, "small": 4})
    assert "latency_ms" in by[3].user_attrs["costs_before_training"] and "latency_ms" in pruned_because(by[3])
    assert by[3].user_attrs["executor"] == "ray"


def test_the_ray_scheduler_stops_on_early_stopping_first_and_keeps_asha():
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, TrialScheduler

    from autokd.search.ray_executor import _make_scheduler

    class Trial:
        trial_id = "t1"

    pruned: dict = {}
    asha = _make_scheduler(pruned, lambda trial_id, result: "trial 0 (...)", asha=True)
    assert isinstance(asha, ASHAScheduler)
    assert asha.on_trial_result(None, Trial(), {"epoch": 1, "epochs": 3, "accuracy": 0.1}) == TrialScheduler.STOP
    assert pruned == {"t1": "trial 0 (...)"}
    fifo = _make_scheduler(pruned, lambda trial_id, result: None, asha=False)
    assert isinstance(fifo, FIFOScheduler) and not isinstance(fifo, ASHAScheduler)
    assert fifo.on_trial_result(None, Trial(), {"epoch": 1, "epochs": 3}) == TrialScheduler.CONTINUE
    assert fifo.on_trial_result(None, Trial(), {"epoch": 3, "epochs": 3, "final": True}) == TrialScheduler.CONTINUE


def test_counting_a_trials_costs_mid_training_leaves_the_random_state_alone():
    import torch

    from autokd.config import StudyConfig, TrialConfig
    from autokd.context import load_study_data
    from autokd.trial import costs_before_training
    from autokd.trial_config import StudentSpec

    data = load_study_data(StudyConfig(dataset="digits"), show_progress=False)
    torch.manual_seed(7)
    expected = torch.rand(3)
    torch.manual_seed(7)
    costs = costs_before_training(TrialConfig(student=StudentSpec.of("cnn5", width=0.25)), data, None)
    assert torch.equal(torch.rand(3), expected)
    assert costs["params"] > 0 and costs["macs"] > 0 and "latency_ms" not in costs
