"""Distillation losses against hand-computed values, and ensemble weight fitting."""

import math

import pytest
import torch

from autokd.distill import (distiller_kd_loss, fit_ensemble_weights, fm_loss, hint_loss, kd_loss, make_hint_adapter,
                            soft_kl)
from autokd.errors import AutokdError


def _softmax(xs):
    exps = [math.exp(x) for x in xs]
    return [e / sum(exps) for e in exps]


def test_soft_kl_matches_hand_computation():
    s, t, temp = [1.0, 2.0, 0.5], [0.2, 3.0, -1.0], 2.0
    p_t = _softmax([x / temp for x in t])
    p_s = _softmax([x / temp for x in s])
    expected = temp**2 * sum(pt * math.log(pt / ps) for pt, ps in zip(p_t, p_s))
    got = soft_kl(torch.tensor([s]), torch.tensor([t]), temp)
    assert got.item() == pytest.approx(expected, rel=1e-5)


def test_kd_loss_is_weighted_sum_of_kl_and_ce():
    s, t, y, alpha, temp = [1.0, 2.0, 0.5], [0.2, 3.0, -1.0], 2, 0.7, 4.0
    p_t = _softmax([x / temp for x in t])
    p_s = _softmax([x / temp for x in s])
    kl = temp**2 * sum(pt * math.log(pt / ps) for pt, ps in zip(p_t, p_s))
    ce = -math.log(_softmax(s)[y])
    got = kd_loss(torch.tensor([s]), torch.tensor([t]), torch.tensor([y]), alpha=alpha, temperature=temp)
    assert got.item() == pytest.approx(alpha * kl + (1 - alpha) * ce, rel=1e-5)


def test_distiller_weighting_is_sw_ce_plus_dw_kl_without_t_squared():
    """Distiller's KnowledgeDistillationPolicy: student_wt * CE + distill_wt * KL(T), no T^2 factor."""
    s, t, y, temp = [[1.0, 2.0, 0.5], [0.3, -1.0, 2.0]], [[0.2, 3.0, -1.0], [1.0, 0.0, 1.5]], [2, 0], 1.5
    def kl_row(si, ti):
        p_t, p_s = _softmax([x / temp for x in ti]), _softmax([x / temp for x in si])
        return sum(pt * math.log(pt / ps) for pt, ps in zip(p_t, p_s))

    kl = (kl_row(s[0], t[0]) + kl_row(s[1], t[1])) / 2
    ce = sum(-math.log(_softmax(si)[yi]) for si, yi in zip(s, y)) / 2
    got = distiller_kd_loss(torch.tensor(s), torch.tensor(t), torch.tensor(y), student_weight=0.3, distill_weight=0.7,
                            temperature=temp)
    assert got.item() == pytest.approx(0.3 * ce + 0.7 * kl, rel=1e-5)
    # Hinton's form at the same alpha differs by exactly the T^2 on the KL term
    hinton = kd_loss(torch.tensor(s), torch.tensor(t), torch.tensor(y), alpha=0.7, temperature=temp)
    assert hinton.item() == pytest.approx(0.3 * ce + 0.7 * temp**2 * kl, rel=1e-5)
    assert hinton.item() != pytest.approx(got.item(), rel=1e-3)


def test_distiller_kd_gradient_reaches_the_student():
    """Unlike Distiller's detached logit copy (its issue #234), the KL term trains the student."""
    s = torch.tensor([[1.0, 2.0, 0.5]], requires_grad=True)
    distiller_kd_loss(s, torch.tensor([[0.2, 3.0, -1.0]]), torch.tensor([0]), student_weight=0.0, distill_weight=1.0,
                      temperature=1.0).backward()
    assert s.grad is not None and s.grad.abs().sum() > 0


def test_kd_loss_alpha_zero_is_cross_entropy_and_identical_logits_give_zero_kl():
    s = torch.tensor([[1.0, 0.0]])
    assert kd_loss(s, s * 0, torch.tensor([0]), alpha=0.0, temperature=3.0).item() == pytest.approx(
        math.log(1 + math.exp(-1)), rel=1e-5)
    assert fm_loss(s, s.clone(), temperature=5.0).item() == pytest.approx(0.0, abs=1e-7)


def test_kd_loss_batch_mean():
    s = torch.tensor([[2.0, 0.0], [0.0, 2.0]])
    t = torch.tensor([[0.0, 2.0], [0.0, 2.0]])
    one = soft_kl(s[:1], t[:1], 1.0).item()
    assert soft_kl(s, t, 1.0).item() == pytest.approx(one / 2, rel=1e-5)  # second row matches exactly


def test_hint_loss_pools_to_teacher_size_and_is_mse():
    adapter = make_hint_adapter(2, 3)
    with torch.no_grad():
        adapter.weight.zero_()
    student = torch.randn(4, 2, 8, 8)
    teacher = torch.full((4, 3, 4, 4), 2.0)
    assert hint_loss(student, teacher, adapter).item() == pytest.approx(4.0)


def test_fitted_ensemble_weights_prefer_the_better_member_and_are_reproducible():
    gen = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 5, (400,), generator=gen)
    good = torch.nn.functional.one_hot(labels, 5).float() * 3 + torch.randn(400, 5, generator=gen)
    noisy = torch.randn(400, 5, generator=gen) * 3
    w1 = fit_ensemble_weights([good, noisy], labels, seed=3)
    w2 = fit_ensemble_weights([good, noisy], labels, seed=3)
    assert w1 == w2
    assert sum(w1) == pytest.approx(1.0) and w1[0] > 0.6


def test_distiller_and_fitnets_knobs_are_searchable_and_round_trip_through_optuna_params():
    import optuna

    from autokd.config import TrialConfig
    from autokd.report.sections import _kd
    from autokd.space import SearchSpace

    space = SearchSpace({"students": {"cnn5": {"width": 0.25}},
                         "distill": {"loss": {"choices": ["kd", "fitnets"]},
                                     "weighting": {"choices": ["hinton", "distiller"]},
                                     "alpha": {"float": [0.4, 0.9]},
                                     "student_weight": {"float": [0.4, 0.6]}, "distill_weight": {"float": [0.4, 0.6]},
                                     "temperature": {"float": [1.0, 1.5]}, "hint_epochs": {"int": [1, 3]}}})
    params = {"family": "cnn5", "loss": "fitnets", "weighting": "distiller", "student_weight": 0.5,
              "distill_weight": 0.45, "temperature": 1.35, "hint_epochs": 2}
    cfg = space.suggest(optuna.trial.FixedTrial(params))
    d = cfg.distill
    assert (d.loss, d.weighting, d.student_weight, d.distill_weight, d.temperature, d.hint_epochs) == (
        "fitnets", "distiller", 0.5, 0.45, 1.35, 2)
    assert TrialConfig.from_params(cfg.to_params()) == cfg
    assert _kd({"config": cfg.to_params()}) == "fitnets sw=0.50 dw=0.45 T=1.4"  # the report's KD column
    hinton = space.suggest(optuna.trial.FixedTrial({**params, "loss": "kd", "weighting": "hinton", "alpha": 0.4}))
    assert (hinton.distill.weighting, hinton.distill.alpha) == ("hinton", 0.4)  # alpha only for hinton
    assert _kd({"config": hinton.to_params()}) == "kd a=0.40 T=1.4"
    with pytest.raises(AutokdError, match="distill.weighting"):
        SearchSpace({"students": {"cnn5": {}}, "distill": {"weighting": "distilller"}})


def _commented_override(path):
    """The YAML block indented under the CPU-sized override's '...in a copy of this file set' comment."""
    import yaml

    lines = path.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if "in a copy of this file set" in line)
    block = []
    for line in lines[start + 1:]:
        if not line.startswith("#   "):
            break
        block.append(line[4:])
    return yaml.safe_load("\n".join(block))


def test_paper_kd_vs_hints_study_validates_with_the_published_settings_in_range():
    from autokd.config import REPO_ROOT, load_study_config
    from autokd.space import SearchSpace

    study_path = REPO_ROOT / "studies" / "paper-kd-vs-hints.yaml"
    cfg = load_study_config(study_path)
    assert (cfg.teacher.family, cfg.teacher.knobs) == ("resnet", {"depth": 56, "width": 16})
    assert cfg.dataset == "imagefolder:data" and cfg.subset_train is None  # published scale: every image
    space_path = cfg.resolve(cfg.search_space)
    space = SearchSpace.load(space_path)
    assert list(space.families) == ["resnet"] and space.families["resnet"]["depth"].choices == [8, 14, 20]
    d = space.distill
    assert {"kd", "hint", "fitnets", "none"} <= set(d["loss"].choices) and set(d["weighting"].choices) == {
        "hinton", "distiller"}
    assert d["alpha"].float_[0] <= 0.4 and d["alpha"].float_[1] >= 0.5  # published settings inside the ranges
    assert d["temperature"].float_[0] <= 1.0 and d["temperature"].float_[1] >= 1.5
    assert d["distill_weight"].float_[0] <= 0.5 <= d["distill_weight"].float_[1]


@pytest.mark.parametrize("name", ["paper-kd-vs-hints", "paper-pruning-vs-kd"])
def test_resnet56_cpu_overrides_are_the_bench_size_with_the_recipe_unchanged(name):
    """The hand-made override in the comments is the size bench/published_tables.py runs; only sizes differ."""
    import yaml

    from autokd.config import REPO_ROOT, StudyConfig, load_study_config
    from autokd.space import SearchSpace
    from bench.published_tables import RESNET56_SIZE as size

    study_path = REPO_ROOT / "studies" / f"{name}.yaml"
    cfg = load_study_config(study_path)
    cpu = StudyConfig(**{**yaml.safe_load(study_path.read_text()), **_commented_override(study_path),
                         "base_dir": str(study_path.parent)})
    assert (cpu.subset_train, cpu.subset_test, cpu.teacher.epochs, cpu.executor.kind) == (
        size["subset_train"], size["subset_test"], size["teacher_epochs"], "local")
    recipe = ("family", "knobs", "lr", "schedule", "weight_decay", "label_smoothing")
    assert [getattr(cpu.teacher, k) for k in recipe] == [getattr(cfg.teacher, k) for k in recipe]
    space_path = cfg.resolve(cfg.search_space)
    shipped = yaml.safe_load(space_path.read_text())
    cpu_space = SearchSpace({**shipped, **_commented_override(space_path)})
    assert cpu_space.train["epochs"] == size["student_epochs"]
    assert {k: v for k, v in cpu_space.train.items() if k not in ("epochs", "batch_size")} == {
        k: v for k, v in SearchSpace(shipped).train.items() if k not in ("epochs", "batch_size")}
    epochs = cpu_space.distill.get("hint_epochs") if name == "paper-kd-vs-hints" else cpu_space.compress["finetune_epochs"]
    assert epochs == size["hint_epochs" if name == "paper-kd-vs-hints" else "finetune_epochs"]
