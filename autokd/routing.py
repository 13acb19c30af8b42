"""Routing rules of committees (cascades and routed pairs) as pure functions of members' outputs.

A committee has a *cheap* member (fewer MACs) and a *large* one. Every input gets a **defer
score** (higher: more reason to use the large member) and goes to the large member when the
score clears a threshold:

- cascade: the score is the cheap member's doubt about its own answer (``1 - max softmax``, or
  ``1 - margin`` between its two most likely classes); a deferred input is answered by the large
  member, or by the average of both members' probabilities (``combine``);
- routed pair: the score is a selector network's probability that the large member is needed.

The threshold is chosen on the members' predictions on data they were not trained on (the
validation split) by :func:`choose_threshold`: the cheapest threshold whose accuracy is within
``tolerance`` points of the large member alone (``target: match``), or the most accurate one
that defers at most a ``budget`` share of inputs (``target: budget``). :func:`out_of_fold`
gives honest validation figures for a rule fitted on the same split: each fold is routed by a
rule fitted on the other folds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F

from autokd.measure import accuracy, per_class_accuracy

CONFIDENCE_RULES = ("max_softmax", "margin")
COMBINE_RULES = ("larger", "average")
THRESHOLD_TARGETS = ("match", "budget")


def defer_score(logits: torch.Tensor, rule: str) -> torch.Tensor:
    """How unsure a member is of its answer, in [0, 1]: ``1 - max p`` or ``1 - (p1 - p2)``. (N,)

    Example:
        >>> defer_score(torch.tensor([[2.0, 0.0], [0.0, 0.0]]), "max_softmax").round(decimals=3).tolist()
        [0.119, 0.5]
    """
    probs = F.softmax(logits.float(), 1)  # (N, K)
    if rule == "max_softmax":
        return 1.0 - probs.max(1).values
    if rule == "margin":
        top2 = probs.topk(2, dim=1).values  # (N, 2)
        return 1.0 - (top2[:, 0] - top2[:, 1])
    raise ValueError(f"unknown confidence rule '{rule}' (use {', '.join(CONFIDENCE_RULES)})")


def combined_log_probs(cheap_logits: torch.Tensor, large_logits: torch.Tensor, combine: str) -> torch.Tensor:
    """The answer to a deferred input: the large member's, or both members' averaged probabilities."""
    if combine == "larger":
        return F.log_softmax(large_logits.float(), 1)
    if combine == "average":
        return torch.log((F.softmax(cheap_logits.float(), 1) + F.softmax(large_logits.float(), 1)) / 2)
    raise ValueError(f"unknown combine rule '{combine}' (use {', '.join(COMBINE_RULES)})")


@dataclass(frozen=True)
class ThresholdChoice:
    """A threshold and what it gave on the inputs it was chosen on (accuracy, deferral share, cost)."""

    threshold: float
    defer_share: float
    accuracy: float
    cost: float


def committee_cost(defer_share: float, *, fixed: float, keep: float, defer: float) -> float:
    """Expected cost per input: ``fixed`` always, ``keep`` for kept inputs, ``defer`` for deferred ones."""
    return fixed + (1.0 - defer_share) * keep + defer_share * defer


def choose_threshold(scores: torch.Tensor, right_kept: torch.Tensor, right_deferred: torch.Tensor, *,
                     reference: float, target: str = "match", tolerance: float = 0.0, budget: float = 0.5,
                     fixed: float = 0.0, keep: float = 0.0, defer: float = 1.0) -> ThresholdChoice:
    """The threshold on ``scores`` (defer when ``score > threshold``) that best meets ``target``.

    ``right_kept`` / ``right_deferred``: whether each input's answer is right when kept / when
    deferred. ``match``: the cheapest threshold whose accuracy is at least ``reference -
    tolerance / 100`` (``reference``: the large member's accuracy; ``tolerance`` in points),
    ties to the more accurate; if none reaches it, the most accurate. ``budget``: the most
    accurate threshold deferring at most ``budget`` of the inputs, ties to the cheaper.

    Example:
        >>> s = torch.tensor([0.9, 0.1, 0.8, 0.2])  # two unsure inputs the cheap member gets wrong
        >>> kept, deferred = torch.tensor([0, 1, 0, 1]).bool(), torch.tensor([1, 1, 1, 1]).bool()
        >>> c = choose_threshold(s, kept, deferred, reference=1.0)
        >>> (c.defer_share, c.accuracy)
        (0.5, 1.0)
    """
    n = len(scores)
    if n == 0:
        return ThresholdChoice(float("inf"), 0.0, float("nan"), committee_cost(0.0, fixed=fixed, keep=keep, defer=defer))
    order = torch.argsort(scores.float(), descending=True)
    ranked = scores.float()[order]
    gain = (right_deferred.float() - right_kept.float())[order]
    # deferring the k most doubtful inputs: k = 0..n; only cut between distinct scores
    correct = float(right_kept.float().sum()) + torch.cat([torch.zeros(1), torch.cumsum(gain, 0)])  # (n + 1,)
    cuts = [0] + [k for k in range(1, n) if ranked[k] < ranked[k - 1]] + [n]
    options = []
    for k in cuts:
        share = k / n
        threshold = float("inf") if k == 0 else (float("-inf") if k == n else float(ranked[k - 1] + ranked[k]) / 2)
        options.append(ThresholdChoice(threshold, share, float(correct[k]) / n,
                                       committee_cost(share, fixed=fixed, keep=keep, defer=defer)))
    if target == "match":
        good = [o for o in options if o.accuracy >= reference - tolerance / 100.0 - 1e-9]
        if good:
            return min(good, key=lambda o: (o.cost, -o.accuracy))
        return max(options, key=lambda o: (o.accuracy, -o.cost))
    if target == "budget":
        within = [o for o in options if o.defer_share <= budget + 1e-9]
        return max(within, key=lambda o: (o.accuracy, -o.cost))
    raise ValueError(f"unknown threshold target '{target}' (use {', '.join(THRESHOLD_TARGETS)})")


def fold_indices(n: int, folds: int, seed: int) -> list[torch.Tensor]:
    """``folds`` disjoint, seeded index sets covering ``range(n)`` (sizes differ by at most one)."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return [order[i::folds].sort().values for i in range(folds)]


def out_of_fold(n: int, folds: int, seed: int, fit: Callable[[torch.Tensor], Any],
                decide: Callable[[Any, torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """Each input's decision by a rule fitted without it: ``decide(fit(other folds), this fold)``. (n,) bool"""
    decisions = torch.zeros(n, dtype=torch.bool)
    everything = torch.arange(n)
    for held_out in fold_indices(n, folds, seed):
        mask = torch.ones(n, dtype=torch.bool)
        mask[held_out] = False
        decisions[held_out] = decide(fit(everything[mask]), held_out).cpu()
    return decisions


def selector_targets(cheap_logits: torch.Tensor, large_logits: torch.Tensor,
                     labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Cost-aware routing targets: 1 = the large member is needed, with a weight per input.

    Only the large member right: 1. The cheap member right (alone or with the large one): 0,
    because it costs less. Neither right: weight 0 (no route fixes it).

    Example:
        >>> cheap = torch.tensor([[2., 0.], [0., 2.], [2., 0.], [0., 2.]])
        >>> large = torch.tensor([[2., 0.], [2., 0.], [0., 2.], [0., 2.]])
        >>> t, w = selector_targets(cheap, large, torch.tensor([0, 0, 0, 0]))
        >>> t.tolist(), w.tolist()
        ([0.0, 1.0, 0.0, 0.0], [1.0, 1.0, 1.0, 0.0])
    """
    cheap_right = cheap_logits.argmax(1) == labels
    large_right = large_logits.argmax(1) == labels
    target = (large_right & ~cheap_right).float()
    weight = (cheap_right | large_right).float()
    return target, weight


def committee_figures(cheap_logits: torch.Tensor, large_logits: torch.Tensor, answer_log_probs: torch.Tensor,
                      deferred: torch.Tensor, labels: torch.Tensor, num_classes: int,
                      deferred_answer: torch.Tensor | None = None) -> dict[str, Any]:
    """A committee's figures on one split. Pure.

    ``answer_log_probs``: the committee's answer per input; ``deferred``: whether the input went
    to the large member; ``deferred_answer``: what a deferred input is answered with (the large
    member's logits unless the committee averages). ``router_accuracy``: on inputs where exactly
    one of (cheap member, deferred answer) is right, the share routed to the right one.
    """
    deferred_answer = large_logits if deferred_answer is None else deferred_answer
    cheap_right = cheap_logits.argmax(1) == labels
    large_right = large_logits.argmax(1) == labels
    deferred_right = deferred_answer.argmax(1) == labels
    one = cheap_right ^ deferred_right
    routed_right = torch.where(deferred, deferred_right, cheap_right)
    oracle = cheap_right | large_right
    oracle_logits = torch.where((cheap_right | ~large_right)[:, None], cheap_logits, large_logits)
    share = float(deferred.float().mean())
    return {
        "accuracy": accuracy(answer_log_probs, labels),
        "oracle_accuracy": float(oracle.float().mean()),
        "member_accuracy": [accuracy(cheap_logits, labels), accuracy(large_logits, labels)],
        "router_accuracy": float(routed_right[one].float().mean()) if one.any() else float("nan"),
        "disagreement": float(one.float().mean()),
        "routing_share": [1.0 - share, share],
        "per_class_accuracy": per_class_accuracy(answer_log_probs, labels, num_classes),
        "oracle_per_class_accuracy": per_class_accuracy(oracle_logits, labels, num_classes),
        "member_per_class_accuracy": [per_class_accuracy(lg, labels, num_classes)
                                      for lg in (cheap_logits, large_logits)],
    }


def cheap_first(costs: Sequence[float]) -> list[int]:
    """Member order of a committee: the cheaper member first (stable on ties)."""
    return sorted(range(len(costs)), key=lambda i: (costs[i], i))
