"""run_trial end to end for every loss, with study-trained, checkpoint and ensemble teachers."""

from __future__ import annotations

import dataclasses
import multiprocessing as mp
from pathlib import Path

import pytest
import torch

from autokd.config import DistillSpec, ExecutorConfig, StudentSpec, TrainSpec, TrialConfig, load_study_config
from autokd.context import build_context, host_cores
from autokd.export import load_trial_model
from autokd.train import predict
from autokd.trial import run_trial
from tests.test_measure import hold_measurement
from tests.tiny import TEST_SEED, TEST_THREADS, write_tiny_study


@pytest.fixture(scope="module")
def context(tmp_path_factory):
    folder = tmp_path_factory.mktemp("trial")
    return build_context(load_study_config(write_tiny_study(folder)), show_progress=False)


@pytest.mark.parametrize("loss, path", [("kd", "cache"), ("fm", "cache"), ("hint", "live"), ("none", "none")])
def test_every_loss_trains_and_measures(context, tmp_path, loss, path, figure):
    config = TrialConfig(student=StudentSpec.of("resnet", depth=8, width=4),
                         distill=DistillSpec(loss=loss, alpha=0.8, temperature=3.0, hint_weight=0.5),
                         train=TrainSpec(epochs=4 if loss == "fm" else 2, batch_size=64, lr=0.05, seed=TEST_SEED))
    seen = []
    metrics = run_trial(config, context, work_dir=tmp_path, on_epoch=lambda e, m: seen.append(m["accuracy"]))
    assert metrics["teacher_path"] == path
    # the epoch curve and the objective are validation accuracy; test accuracy is recorded beside it
    assert len(seen) == config.train.epochs and metrics["accuracy"] == pytest.approx(seen[-1])
    assert metrics["validation_accuracy"] == metrics["accuracy"]
    # measured on the test images, whatever the validation figure (the two may coincide: k/144 = j/360)
    model, payload = load_trial_model(Path(metrics["weights_path"]))
    test = context.data
    on_test = float((predict(model, test.test_images).argmax(1) == test.test_labels).float().mean())
    assert 0.0 < metrics["test_accuracy"] == pytest.approx(on_test, abs=1e-6)
    assert len(metrics["per_class_validation_accuracy"]) == len(metrics["per_class_test_accuracy"]) == 10
    # a few epochs on digits: twice chance (0.1); measured 0.36-0.78 over seeds and threads (docs/testing.md)
    assert figure("validation accuracy", metrics["accuracy"]) > 0.2
    assert metrics["macs"] > 1000 and metrics["latency_ms"] > 0 and metrics["size_bytes"] > 4 * metrics["params"]
    assert TrialConfig.from_json(payload["config"]) == config


@pytest.mark.parametrize("same_study", [True, False], ids=["same-study", "other-study"])
def test_a_trial_pauses_for_its_own_studys_measurements_only(context, tmp_path, monkeypatch, same_study):
    """A real trial on its study's threads: a measurement of its study in another process pauses its
    training (``host_paused_s``); one of another study, as under the old host-wide lock, no longer does."""
    monkeypatch.setenv("AUTOKD_LOCK_DIR", str(tmp_path / "locks"))  # inherited by the spawned measurement
    spawn = mp.get_context("spawn")
    entered, measurements = spawn.Event(), []

    def after_epoch(epoch: int, metrics: dict) -> None:  # between epochs: a 1.5 s measurement starts elsewhere
        if epoch == 0:
            scope = context.lock_scope if same_study else "another-study"
            measurements.append(spawn.Process(target=hold_measurement, args=(scope, entered, 1.5), daemon=True))
            measurements[0].start()
            assert entered.wait(60), "the measurement did not start"

    # the tiny study runs local, on AUTOKD_TEST_THREADS threads when that is set
    assert context.threads == ExecutorConfig(kind="local", threads_per_trial=TEST_THREADS).trial_threads(host_cores())
    threads_before = torch.get_num_threads()
    config = TrialConfig(student=StudentSpec.of("resnet", depth=8, width=4), distill=DistillSpec(loss="kd"),
                         train=TrainSpec(epochs=2, batch_size=64, lr=0.05, seed=TEST_SEED))
    metrics = run_trial(config, dataclasses.replace(context, threads=1), work_dir=tmp_path / "trial",
                        on_epoch=after_epoch)
    measurements[0].join(30)
    assert measurements[0].exitcode == 0
    assert metrics["train_threads"] == 1 and torch.get_num_threads() == threads_before  # restored after the trial
    if same_study:
        assert 1.0 <= metrics["host_paused_s"] < 30  # waited out most of the 1.5 s measurement
    else:
        assert 0.0 <= metrics["host_paused_s"] < 0.5


def test_study_teacher_is_trained_once_and_reused(tmp_path, figure):
    cfg = load_study_config(write_tiny_study(tmp_path))
    first = build_context(cfg, show_progress=False)
    stamp = (cfg.output_dir / "teacher.pt").stat().st_mtime_ns
    second = build_context(cfg, show_progress=False)
    assert (cfg.output_dir / "teacher.pt").stat().st_mtime_ns == stamp
    assert second.teacher_summary["accuracy"] == figure("teacher accuracy", first.teacher_summary["accuracy"]) > 0.75


def test_ensemble_teacher_reports_members_and_fits_weights(tmp_path):
    a = build_context(load_study_config(write_tiny_study(tmp_path, name="a")), show_progress=False)
    b_cfg = load_study_config(write_tiny_study(tmp_path, name="b", teacher={"family": "vgg",
                                                                            "knobs": {"width": 0.125}, "epochs": 2}))
    build_context(b_cfg, show_progress=False)
    members = [{"checkpoint": str(tmp_path / "a" / "teacher.pt")}, {"checkpoint": str(tmp_path / "b" / "teacher.pt")}]
    ens = load_study_config(write_tiny_study(tmp_path, name="ens", teacher={"ensemble": members, "fit_weights": True}))
    one = build_context(ens, show_progress=False).teacher_summary
    two = build_context(ens, show_progress=False).teacher_summary
    assert one["kind"] == "ensemble" and len(one["member_validation_accuracy"]) == len(one["member_test_accuracy"]) == 2
    assert one["weights"] == two["weights"] and sum(one["weights"]) == pytest.approx(1.0)
    assert one["member_validation_accuracy"][0] == pytest.approx(a.teacher_summary["validation_accuracy"])
    assert one["member_test_accuracy"][0] == pytest.approx(a.teacher_summary["test_accuracy"])
    given = load_study_config(write_tiny_study(tmp_path, name="given", teacher={
        "ensemble": [{**members[0], "weight": 3}, {**members[1], "weight": 1}]}))
    assert build_context(given, show_progress=False).teacher_summary["weights"] == pytest.approx([0.75, 0.25])
