"""Distillation losses against hand-computed values, and ensemble weight fitting."""

import math

import pytest
import torch

from autokd.distill import fit_ensemble_weights, fm_loss, hint_loss, kd_loss, make_hint_adapter, soft_kl


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
