"""Fitting a committee's routing on the validation split: the cascade's threshold, the routed pair's selector.

Validation figures are out of fold: each of ``folds`` parts of the validation split is routed by a
rule fitted on the other parts; the deployed rule is then fitted on all of it (:mod:`autokd.routing`).
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from autokd.committee.modules import Cascade, RoutedPair, build_selector
from autokd.committee.spec import RouterSpec, SelectorSpec
from autokd.hostlock import paced
from autokd.data import ImageData
from autokd.measure import Split, count_macs
from autokd.routing import choose_threshold, combined_log_probs, defer_score, out_of_fold, selector_targets
from autokd.train import AugmentPolicy, augmented_batch, epoch_views, predict, predict_views

# --------------------------------------------------------------------------- the routed pair's selector


def selector_loss(selector_logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor,
                  positive_weight: float = 1.0) -> torch.Tensor:
    """Weighted binary cross-entropy of ``P(large member needed)`` (softmax of the 2 logits)."""
    z = selector_logits[:, 1].float() - selector_logits[:, 0].float()  # (B,) logit of the second class
    per_input = F.binary_cross_entropy_with_logits(z, target, reduction="none",
                                                   pos_weight=torch.tensor(positive_weight, device=z.device))
    return (weight * per_input).sum() / weight.sum().clamp_min(1e-12)


def train_selector(selector: nn.Module, cheap: nn.Module, large: nn.Module, images: torch.Tensor,
                   labels: torch.Tensor, *, spec: SelectorSpec, policy: AugmentPolicy) -> list[dict[str, float]]:
    """Train ``selector`` on held-out ``images``: every epoch both members label that epoch's views.

    The rarer class (large member needed) is up-weighted up to 10x so the selector does not learn
    to always keep; the threshold is chosen afterwards. Returns the per-epoch history.
    """
    device = images.device
    epochs = int(spec.epochs or 1)
    steps = max(1, -(-len(images) // spec.batch_size))
    optimizer = torch.optim.AdamW(selector.parameters(), lr=spec.lr, weight_decay=spec.weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs * steps)
    order_gen = torch.Generator().manual_seed(spec.seed)
    cheap.eval(), large.eval()
    history = []
    for epoch in range(epochs):
        views = epoch_views(policy, len(images), epoch).to(device)
        with paced() as pace, torch.no_grad():
            target, weight = selector_targets(predict_views(cheap, images, views, policy, pace=pace),
                                              predict_views(large, images, views, policy, pace=pace), labels)
        positives = float((weight * target).sum())
        positive_weight = min(10.0, max(1.0, float((weight * (1 - target)).sum()) / max(positives, 1.0)))
        selector.train()
        order = torch.randperm(len(images), generator=order_gen).to(device)
        total = 0.0
        for step in range(steps):
            index = order[step * spec.batch_size:(step + 1) * spec.batch_size]
            if len(index) < 2 or weight[index].sum() == 0:  # BatchNorm needs 2 rows
                continue
            loss = selector_loss(selector(augmented_batch(images, index, views, policy)), target[index],
                                 weight[index], positive_weight)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            total += loss.item()
        history.append({"epoch": epoch + 1, "loss": total / steps, "needs_large": positives / len(images)})
    selector.eval()
    return history


def selector_scores(selector: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """``P(large member needed)`` per uint8 image. (N,)"""
    with paced() as pace:
        return F.softmax(predict(selector, images, pace=pace), 1)[:, 1]


# --------------------------------------------------------------------------- fitting the routing


@dataclass
class Routing:
    """A fitted committee and its out-of-fold decisions on the validation split."""

    committee: nn.Module
    val_deferred: torch.Tensor  # (N_val,) bool, out of fold
    deferred_answer: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (cheap, large) logits -> answer
    selector_macs: int = 0
    figures: dict[str, Any] = dataclasses.field(default_factory=dict)


def fit_cascade(cheap: nn.Module, large: nn.Module, val_logits: tuple[torch.Tensor, torch.Tensor],
                labels: torch.Tensor, router: RouterSpec, member_macs: tuple[int, int]) -> Routing:
    """The cascade's threshold, chosen on validation (out-of-fold figures, then all of it)."""
    cheap_logits, large_logits = (x.cpu() for x in val_logits)
    labels = labels.cpu()
    scores = defer_score(cheap_logits, router.rule)
    right_kept = cheap_logits.argmax(1) == labels
    right_deferred = combined_log_probs(cheap_logits, large_logits, router.combine).argmax(1) == labels
    reference = float((large_logits.argmax(1) == labels).float().mean())
    costs = {"fixed": member_macs[0], "keep": 0.0, "defer": member_macs[1]}

    def fit(index: torch.Tensor) -> float:
        return choose_threshold(scores[index], right_kept[index], right_deferred[index],
                                reference=float((large_logits[index].argmax(1) == labels[index]).float().mean()),
                                target=router.target, tolerance=router.tolerance, budget=router.budget,
                                **costs).threshold

    folds = min(router.folds, len(labels))
    val_deferred = out_of_fold(len(labels), folds, router.seed, fit, lambda t, index: scores[index] > t)
    chosen = choose_threshold(scores, right_kept, right_deferred, reference=reference, target=router.target,
                              tolerance=router.tolerance, budget=router.budget, **costs)
    committee = Cascade(cheap, large, rule=router.rule, combine=router.combine, threshold=chosen.threshold)
    return Routing(committee, val_deferred, lambda c, lg: combined_log_probs(c, lg, router.combine),
                   figures={"threshold": chosen.threshold, "threshold_defer_share": chosen.defer_share})


def fit_routed_pair(cheap: nn.Module, large: nn.Module, data: ImageData, validation: Split, policy: AugmentPolicy,
                    val_logits: tuple[torch.Tensor, torch.Tensor], router: RouterSpec, selector_spec: SelectorSpec,
                    member_macs: tuple[int, int]) -> Routing:
    """Selectors trained on validation folds give out-of-fold scores; the threshold is chosen on them.

    The deployed selector is then trained on the whole validation split (on its device, augmented
    by ``policy``) and keeps that threshold; ``data`` gives the images' shape and normalisation.
    """
    images, labels = validation
    cheap_logits, large_logits = (x.cpu() for x in val_logits)
    labels_cpu = labels.cpu()

    def new_selector() -> nn.Module:
        return build_selector(selector_spec, in_channels=data.channels, image_size=data.image_size, mean=data.mean,
                              std=data.std).to(images.device)

    def fit(index: torch.Tensor) -> nn.Module:
        selector = new_selector()
        on_device = index.to(images.device)
        train_selector(selector, cheap, large, images[on_device], labels[on_device], spec=selector_spec,
                       policy=policy)
        return selector

    oof_scores = torch.zeros(len(labels_cpu))

    def score(selector: nn.Module, index: torch.Tensor) -> torch.Tensor:
        oof_scores[index] = selector_scores(selector, images[index.to(images.device)]).cpu()
        return torch.zeros(len(index), dtype=torch.bool)

    out_of_fold(len(labels_cpu), min(router.folds, len(labels_cpu)), router.seed, fit, score)
    selector = fit(torch.arange(len(labels_cpu)))
    example = data.test_images[:1].float() / 255.0
    selector_macs = count_macs(copy.deepcopy(selector).cpu(), example)
    chosen = choose_threshold(oof_scores, cheap_logits.argmax(1) == labels_cpu, large_logits.argmax(1) == labels_cpu,
                              reference=float((large_logits.argmax(1) == labels_cpu).float().mean()),
                              target=router.target, tolerance=router.tolerance, budget=router.budget,
                              fixed=selector_macs, keep=member_macs[0], defer=member_macs[1])
    committee = RoutedPair(cheap, large, selector, threshold=chosen.threshold, num_classes=data.num_classes)
    return Routing(committee, oof_scores > chosen.threshold, lambda c, lg: F.log_softmax(lg.float(), 1),
                   selector_macs=selector_macs,
                   figures={"threshold": chosen.threshold, "threshold_defer_share": chosen.defer_share})

