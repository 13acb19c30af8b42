"""Pair trials (two students + a selector) and ensemble teachers, on digits and constructed data."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
import torch
from optuna.trial import TrialState
from rich.console import Console
from torch import nn

from autokd.config import StudentSpec, TrialConfig, load_study_config
from autokd.space import SearchSpace
from autokd.report import trial_figures
from autokd.data import load_dataset
from autokd.export import agreement, export_model, load_trial_model
from autokd.pairs import (RoutedPair, SelectorSpec, build_selector, reuse_sources, routing_targets, selector_loss,
                          train_selector)
from autokd.train import AugmentPolicy, predict
from tests.tiny import TINY_SPACE, write_tiny_study

PAIR_SPACE = {
    **TINY_SPACE,
    "students": {"cnn5": {"width": {"float": [0.125, 0.25], "log": True}, "hidden": 16},
                 "vgg": {"variant": 7, "width": 0.0625}},
    "pairs": {"kind": {"choices": ["single", "pair"]}, "reuse": {"choices": [False, True]}, "pool": 4,
              "layers": {"int": [2, 3]}, "width": {"int": [4, 8]}, "epochs": 2},
}


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Tiny models gain nothing from intra-op threads, and on a shared CPU extra threads cost a lot."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


# --------------------------------------------------------------------------- pure parts


def test_routing_targets_handle_one_both_and_neither_right():
    labels = torch.tensor([0, 0, 0, 0])
    first = torch.tensor([[3.0, 0.0], [0.0, 3.0], [3.0, 0.0], [0.0, 3.0]])   # right, wrong, right, wrong
    second = torch.tensor([[0.0, 3.0], [3.0, 0.0], [1.0, 0.0], [0.0, 1.0]])  # wrong, right, right, wrong
    target, weight = routing_targets(first, second, labels, both_weight=0.5, neither_weight=0.0)
    assert target[:2].tolist() == [1.0, 0.0] and weight.tolist() == [1.0, 1.0, 0.5, 0.0]
    assert 0.5 < target[2] < 1.0  # both right: the more confident first student is preferred


def test_selector_loss_ignores_zero_weight_inputs():
    logits = torch.tensor([[5.0, -5.0], [-5.0, 5.0]])
    target, weight = torch.tensor([1.0, 1.0]), torch.tensor([1.0, 0.0])
    assert selector_loss(logits, target, weight).item() == pytest.approx(0.0, abs=1e-3)


def test_pair_config_round_trips_and_space_suggests_both_kinds():
    cfg = TrialConfig(student=StudentSpec.of("cnn5", width=0.25), second=StudentSpec.of("vgg", width=0.0625),
                      kind="pair", selector=(("layers", 3), ("width", 8)))
    assert TrialConfig.from_params(cfg.to_params()) == cfg
    space = SearchSpace(PAIR_SPACE)
    pair = space.suggest(optuna.trial.FixedTrial({"kind": "pair", "pair.reuse": False, "family": "cnn5",
                                                  "cnn5.width": 0.2, "family2": "vgg", "selector.layers": 2,
                                                  "selector.width": 4, "loss": "none"}))
    assert pair.kind == "pair" and pair.second.family == "vgg" and dict(pair.selector)["epochs"] == 2
    assert TrialConfig.from_params(pair.to_params()) == pair
    single = space.suggest(optuna.trial.FixedTrial({"kind": "single", "family": "vgg", "loss": "none"}))
    assert single.kind == "single" and single.second is None


def test_pairs_section_is_validated():
    from autokd.errors import AutokdError

    with pytest.raises(AutokdError, match="pairs.bogus"):
        SearchSpace({**PAIR_SPACE, "pairs": {"bogus": 1}})
    with pytest.raises(AutokdError, match="trial kind"):
        SearchSpace({**PAIR_SPACE, "pairs": {"kind": "triple"}})


# --------------------------------------------------------------------------- constructed routing


class _ReadsRow(nn.Module):
    """A 'student' that reads the class one-hot from one image row (pixels row, 0..3)."""

    def __init__(self, row: int):
        super().__init__()
        self.row = row

    def forward(self, x01: torch.Tensor) -> torch.Tensor:
        return x01[:, 0, self.row, :4] * 10.0  # (B, 4)


def _separable(n: int, share_first: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Group A (top rows bright): row 7 holds the true one-hot, row 6 a wrong one; group B the reverse."""
    gen = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 4, (n,), generator=gen)
    group_a = torch.rand(n, generator=gen) < share_first
    images = torch.zeros(n, 1, 8, 8, dtype=torch.uint8)
    images[group_a, :, :5] = 255
    wrong = (labels + 1) % 4
    rows = torch.arange(n)
    images[rows, 0, torch.where(group_a, 7, 6), labels] = 255
    images[rows, 0, torch.where(group_a, 6, 7), wrong] = 255
    return images, labels


def test_routed_accuracy_not_below_worse_student_on_separable_routing():
    train_x, train_y = _separable(600, 0.3, seed=0)
    test_x, test_y = _separable(300, 0.3, seed=1)
    students = [_ReadsRow(7), _ReadsRow(6)]  # right exactly on group A / group B
    spec = SelectorSpec(layers=2, width=8, epochs=8, lr=0.01, batch_size=64)
    selector = build_selector(spec, in_channels=1, image_size=8, mean=(0.5,), std=(0.5,))
    stats = train_selector(selector, students, train_x, train_y, spec=spec, policy=AugmentPolicy())
    assert stats["selector_targets"]["one_right"] == pytest.approx(1.0)  # every input is a routing lesson
    routed = RoutedPair(students[0], students[1], selector).eval()
    acc = [float((predict(m, test_x).argmax(1) == test_y).float().mean()) for m in (*students, routed)]
    assert acc[2] >= min(acc[:2])
    assert acc[2] >= 0.97  # perfectly separable routing is learned: near the oracle (100%)
    assert torch.equal(routed.forward_routed(test_x.float() / 255).argmax(1), predict(routed, test_x).argmax(1))


# --------------------------------------------------------------------------- a digits study


@pytest.fixture(scope="module")
def pair_study(tmp_path_factory):
    """A tiny digits study: one single, one new pair, then a reuse pair, one more of each kind."""
    from autokd.search.local import run_local
    from autokd.search.study import open_study
    from autokd.context import build_context
    from autokd.measure import measure_model

    folder = tmp_path_factory.mktemp("pairs")
    path = write_tiny_study(folder, name="pairs", space=PAIR_SPACE, n_trials=5,
                            teacher={"family": "cnn5", "knobs": {"width": 0.25}, "epochs": 2, "lr": 0.05},
                            objectives=["accuracy", "params", "latency_ms"], sampler="random")
    cfg = load_study_config(path)
    cfg.output_dir.mkdir(parents=True, exist_ok=True)
    space = SearchSpace.load(cfg.resolve(cfg.search_space))
    study = open_study(cfg, heartbeat=False)
    context = build_context(cfg, show_progress=False)
    study.set_user_attr("teacher", {**context.teacher_summary, **measure_model(context.teacher, context),
                                    "architecture": "cnn5"})
    for params in ({"kind": "single"}, {"kind": "single", "family": "vgg"}, {"kind": "pair", "pair.reuse": False},
                   {"kind": "pair", "pair.reuse": True}, {"kind": "pair", "pair.reuse": True}):
        study.enqueue_trial(params)
    run_local(study, cfg, space, context)
    return cfg, study, context


def test_pair_trials_complete_through_local_executor(pair_study):
    cfg, study, _ = pair_study
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(complete) == 5
    pairs = [t for t in complete if t.user_attrs["config"]["kind"] == "pair"]
    assert len(pairs) == 3
    for t in pairs:
        a = trial_figures(t)
        for key in ("oracle_accuracy", "student_accuracy", "selector_accuracy", "routing_share",
                    "per_class_accuracy", "student_per_class_accuracy", "macs", "latency_ms", "size_bytes"):
            assert key in a, key
        assert a["oracle_accuracy"] >= max(a["student_accuracy"]) - 1e-6
        assert a["params"] == a["selector_params"] + sum(a["student_params"])
        assert sum(a["routing_share"]) == pytest.approx(1.0)
        assert t.values == [a["accuracy"], a["params"], a["latency_ms"]]
    reused = [t for t in pairs if trial_figures(t).get("reused_from")]
    assert len(reused) == 2 and all(trial_figures(t)["train_seconds"] == 0.0 for t in reused)
    singles = {t.number for t in complete if t.user_attrs["config"]["kind"] == "single"}
    assert all(set(trial_figures(t)["reused_from"]) <= singles for t in reused)
    rebuilt = TrialConfig.from_params(reused[0].user_attrs["config"])  # the stored config alone rebuilds it
    assert rebuilt.kind == "pair" and reuse_sources(rebuilt) == [
        study.trials[n].user_attrs["weights_path"] for n in trial_figures(reused[0])["reused_from"]]
    # One Pareto front holds both kinds of trial (or at least draws from the mixed pool).
    assert {t.user_attrs["config"]["kind"] for t in study.best_trials} <= {"single", "pair"}


def test_routed_pair_exports_to_onnx_and_agrees(pair_study, tmp_path):
    cfg, study, context = pair_study
    pair = next(t for t in study.get_trials(states=(TrialState.COMPLETE,))
                if t.user_attrs["config"]["kind"] == "pair")
    model, payload = load_trial_model(Path(pair.user_attrs["weights_path"]))
    assert isinstance(model, RoutedPair) and payload["pair"]["selector"]["layers"] in (2, 3)
    reloaded = float((predict(model, context.data.test_images).argmax(1) == context.data.test_labels).float().mean())
    assert reloaded == pytest.approx(pair.user_attrs["test_accuracy"], abs=1e-6)
    onnx = export_model(model, "onnx", tmp_path / "pair.onnx", context.data.test_images[:1].float() / 255.0)
    assert agreement(model, onnx, "onnx", context.data.test_images) >= 0.99


def test_report_shows_pair_comparison(pair_study):
    from autokd.report import print_report

    cfg, study, _ = pair_study
    console = Console(record=True, width=200)
    print_report(study, cfg, console)
    text = console.export_text()
    assert "Pairs" in text and "routed" in text and "oracle" in text


@pytest.mark.slow
def test_pair_trials_through_ray_executor(pair_study):
    """Two more trials of the same study on Ray: a new pair and a reuse pair (teacher.pt is reused)."""
    pytest.importorskip("ray")
    from autokd.search.ray_executor import run_ray

    cfg, study, _ = pair_study
    ray_cfg = cfg.with_overrides(n_trials=7, executor="ray", max_concurrent=1)
    space = SearchSpace.load(cfg.resolve(cfg.search_space))
    study.enqueue_trial({"kind": "pair", "pair.reuse": False})
    study.enqueue_trial({"kind": "pair", "pair.reuse": True})
    run_ray(study, ray_cfg, space, console=Console(quiet=True))
    new = [t for t in study.get_trials(states=(TrialState.COMPLETE,)) if t.number >= 5]
    assert len(new) == 2 and all(t.user_attrs["config"]["kind"] == "pair" for t in new)
    assert all(0.0 < t.user_attrs["accuracy"] <= trial_figures(t)["oracle_accuracy"] + 1e-6 for t in new)
    assert any(trial_figures(t).get("reused_from") for t in new)


# --------------------------------------------------------------------------- ensemble teachers


@pytest.fixture(scope="module")
def two_members(tmp_path_factory):
    from autokd.checkpoint import save_checkpoint
    from autokd.teacher import train_teacher

    folder = tmp_path_factory.mktemp("members")
    data = load_dataset("digits").with_validation(0.1, seed=0)
    paths = []
    for i, (family, knobs) in enumerate((("cnn5", {"width": 0.125, "hidden": 16}), ("vgg", {"width": 0.0625}))):
        net, acc = train_teacher(data, family=family, knobs=knobs, epochs=1, lr=0.05, batch_size=64,
                                 policy=AugmentPolicy(), device=torch.device("cpu"), seed=i)
        paths.append(save_checkpoint(folder / f"m{i}.pt", net, family=family, knobs=net.knobs,
                                     num_classes=data.num_classes, in_channels=data.channels,
                                     image_size=data.image_size, mean=data.mean, std=data.std, accuracy=acc))
    return data, paths


def test_ensemble_weights_fitted_on_validation_are_reproducible(two_members):
    from autokd.config import StudyConfig
    from autokd.teacher import build_teacher

    data, paths = two_members
    study = StudyConfig(teacher={"ensemble": [{"checkpoint": str(p)} for p in paths], "fit_weights": True}, seed=3)
    runs = [build_teacher(study, data, AugmentPolicy(), torch.device("cpu"))[1] for _ in range(2)]
    assert runs[0]["weights"] == runs[1]["weights"]
    assert sum(runs[0]["weights"]) == pytest.approx(1.0)
    assert runs[0]["kind"] == "ensemble" and len(runs[0]["member_validation_accuracy"]) == 2
    assert 0.0 <= runs[0]["accuracy"] <= 1.0
    other = build_teacher(study.with_overrides(seed=4), data,
                          AugmentPolicy(), torch.device("cpu"))[1]
    assert other["member_test_accuracy"] == runs[0]["member_test_accuracy"]  # members fixed; only the fit is seeded


def test_report_shows_ensemble_next_to_members(two_members):
    from autokd.report import teacher_table

    teacher = {"kind": "ensemble", "members": ["cnn5(a)", "vgg(b)"], "member_validation_accuracy": [0.9, 0.8],
               "member_test_accuracy": [0.85, 0.75], "weights": [0.7, 0.3], "accuracy": 0.93,
               "validation_accuracy": 0.93, "test_accuracy": 0.91}
    console = Console(record=True, width=160)
    console.print(teacher_table(teacher))
    text = console.export_text()
    assert "cnn5(a)" in text and "90.00%" in text and "80.00%" in text and "93.00%" in text and "0.700" in text
    assert "85.00%" in text and "91.00%" in text and "val acc" in text and "test acc" in text


def test_joint_head_teacher_is_reproducible_and_reported(two_members):
    from autokd.config import StudyConfig
    from autokd.report import teacher_table
    from autokd.teacher import build_teacher

    data, paths = two_members
    plain = StudyConfig(teacher={"ensemble": [{"checkpoint": str(p)} for p in paths], "fit_weights": True})
    joint = StudyConfig(teacher={"ensemble": [{"checkpoint": str(p)} for p in paths], "joint_head": True})
    teachers = [build_teacher(joint, data, AugmentPolicy(), torch.device("cpu")) for _ in range(2)]
    assert torch.equal(teachers[0][0].head.weight, teachers[1][0].head.weight)
    summary = teachers[0][1]
    assert summary["joint_head"] and summary["id"] != build_teacher(plain, data, AugmentPolicy(),
                                                                    torch.device("cpu"))[1]["id"]
    assert summary["accuracy"] >= 0.5 * max(summary["member_validation_accuracy"])
    console = Console(record=True, width=160)
    console.print(teacher_table(summary))
    assert "ensemble (joint head)" in console.export_text()
