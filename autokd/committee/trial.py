"""The committee's part of a committee trial: routing fitted on validation, figures, costs as it runs.

:func:`autokd.trial.committee_trial` trains (or loads) the two members, then calls
:func:`fit_committee` and :func:`measure_committee` and saves the committee (the stages are
described in :mod:`autokd.committee`).
"""

from __future__ import annotations

import copy
import dataclasses
import time
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from autokd.committee.fit import Routing, fit_cascade, fit_routed_pair
from autokd.committee.modules import committee_outputs
from autokd.committee.spec import RouterSpec, SelectorSpec
from autokd.config import LatencySettings, RouterKnobs, SelectorKnobs, TrialConfig
from autokd.data import ImageData
from autokd.hostlock import paced
from autokd.measure import Split, count_macs, count_params, latency_stats, serialized_size_bytes
from autokd.models import describe
from autokd.routing import cheap_first, committee_cost, committee_figures
from autokd.train import AugmentPolicy, predict

#: Validation inputs in the batch-1 stream a committee's latency is timed on.
LATENCY_STREAM = 32


def second_config(config: TrialConfig) -> TrialConfig:
    """The second member's own single-student config (another init seed, same recipe)."""
    train = dataclasses.replace(config.train, seed=config.train.seed + 1)
    return dataclasses.replace(config, student=config.second, second=None, router=RouterKnobs(),
                               selector=SelectorKnobs(), reuse=None, kind="single", train=train)


def fit_committee(config: TrialConfig, members: list[nn.Module], identities: list[Any], *, data: ImageData,
                  validation: Split, test: Split, policy: AugmentPolicy) -> tuple[nn.Module, torch.Tensor, dict]:
    """The committee of two trained members: routing fitted on ``validation``, figures on validation and test.

    Args:
        members, identities: the two members (deployable, eval mode, on the splits' device) and what
            each is (a trial number or a spec), in the config's order.
        data: the data's shape (classes, channels, image size, normalisation) and its CPU test images.
        validation: routing is fitted on it; its figures are out of fold.
        test: routed once by the deployed committee, for the report.
        policy: the study's augmentation (a routed pair's selector trains on augmented views).

    Returns:
        ``(committee, val_deferred, figures)``: the deployed committee (eval mode), which validation
        inputs it defers (out of fold), and the record's figures (:func:`committee_record`).
    """
    example = data.test_images[:1].float() / 255.0  # (1, C, H, W)
    macs = [count_macs(copy.deepcopy(m).cpu().eval(), example) for m in members]
    order = cheap_first(macs)
    cheap, large = (members[i] for i in order)
    member_macs = (macs[order[0]], macs[order[1]])
    with paced() as pace:
        val_logits = (predict(cheap, validation.images, pace=pace), predict(large, validation.images, pace=pace))
        test_logits = (predict(cheap, test.images, pace=pace), predict(large, test.images, pace=pace))
    routing_started = time.perf_counter()
    router = RouterSpec.from_config(config)
    if config.kind == "cascade":
        routing = fit_cascade(cheap, large, val_logits, validation.labels, router, member_macs)
    else:
        routing = fit_routed_pair(cheap, large, data, validation, policy, val_logits, router,
                                  SelectorSpec.from_config(config), member_macs)
    committee = routing.committee.eval()
    figures: dict[str, Any] = {"router_seconds": time.perf_counter() - routing_started, **routing.figures}
    members_in_order = [identities[i] for i in order]  # every member list of the record is cheap member first
    if config.reuse is not None:
        figures["reused_from"] = members_in_order
    split_figures = committee_split_figures(committee, routing, validation, test, data.num_classes, val_logits,
                                            test_logits)
    in_order = {"members": members_in_order, "member_names": [describe(members[i]) for i in order],
                "member_params": [count_params(members[i]) for i in order]}
    figures.update(committee_record(config, routing, router, split_figures, member_macs, in_order))
    return committee, routing.val_deferred, figures


def committee_split_figures(committee: nn.Module, routing: Routing, validation: Split, test: Split, num_classes: int,
                            val_logits: tuple[torch.Tensor, torch.Tensor],
                            test_logits: tuple[torch.Tensor, torch.Tensor]) -> tuple[dict, dict]:
    """The committee's figures on validation (its out-of-fold decisions) and on test (the deployed committee)."""
    cheap_v, large_v = (x.cpu() for x in val_logits)
    deferred_v = routing.val_deferred
    answer_v = torch.where(deferred_v[:, None], routing.deferred_answer(cheap_v, large_v), F.log_softmax(cheap_v, 1))
    val = committee_figures(cheap_v, large_v, answer_v, deferred_v, validation.labels.cpu(), num_classes,
                            deferred_answer=routing.deferred_answer(cheap_v, large_v))
    answer_t, deferred_t = (x.cpu() for x in committee_outputs(committee, test.images))
    cheap_t, large_t = (x.cpu() for x in test_logits)
    test_figures = committee_figures(cheap_t, large_t, answer_t, deferred_t, test.labels.cpu(), num_classes,
                                     deferred_answer=routing.deferred_answer(cheap_t, large_t))
    return val, test_figures


def committee_record(config: TrialConfig, routing: Routing, router: RouterSpec, figures: tuple[dict, dict],
                     member_macs: tuple[int, int], members: dict[str, list]) -> dict[str, Any]:
    """What a committee trial records of its figures (validation, test), members (``members``,
    ``member_names``, ``member_params``, cheap member first), costs (expected MACs as routed) and routing."""
    val, test = figures
    costs = {"fixed": member_macs[0] if config.kind == "cascade" else routing.selector_macs,
             "keep": 0.0 if config.kind == "cascade" else member_macs[0], "defer": member_macs[1]}
    record = {**val, **{f"test_{k}": v for k, v in test.items()}}
    record.update(
        kind=config.kind,
        validation_accuracy=val["accuracy"], test_accuracy=test["accuracy"],
        per_class_validation_accuracy=val["per_class_accuracy"], per_class_test_accuracy=test["per_class_accuracy"],
        members=members["members"], member_names=members["member_names"],
        member_validation_accuracy=val["member_accuracy"], member_test_accuracy=test["member_accuracy"],
        member_macs=list(member_macs), member_params=members["member_params"], selector_macs=routing.selector_macs,
        macs=int(round(committee_cost(val["routing_share"][1], **costs))),
        test_macs=int(round(committee_cost(test["routing_share"][1], **costs))),
        router={"rule": router.rule, "combine": router.combine, "target": router.target,
                "tolerance": router.tolerance, "budget": router.budget, "folds": router.folds},
    )
    if config.kind == "pair":
        record["selector_params"] = count_params(routing.committee.selector)
    return record


class _BatchOneStream(nn.Module):
    """One forward of this module runs ``model`` on each of ``inputs`` at batch 1, in order."""

    def __init__(self, model: nn.Module, inputs: torch.Tensor):
        super().__init__()
        self.model, self.inputs = model, list(inputs.split(1))

    def forward(self, _: torch.Tensor) -> None:
        for x in self.inputs:
            self.model(x)


def latency_stream(deferred: torch.Tensor, val_deferred: torch.Tensor, size: int = LATENCY_STREAM,
                   seed: int = 0) -> torch.Tensor:
    """Indices of ``size`` validation inputs, ``val_deferred``'s share of them ones the committee defers.

    ``deferred``: the deployed committee's own decisions on the validation inputs.
    """
    order = torch.randperm(len(deferred), generator=torch.Generator().manual_seed(seed))
    want = round(float(val_deferred.float().mean()) * size)
    going = [int(i) for i in order if deferred[i]][:want]
    staying = [int(i) for i in order if not deferred[i]][:size - len(going)]
    return torch.tensor(sorted(going + staying), dtype=torch.long)


def measure_committee(committee: nn.Module, images: torch.Tensor, val_deferred: torch.Tensor,
                      latency: LatencySettings) -> dict[str, Any]:
    """What ships (params, bytes) and the deployed committee's batch-1 CPU latency per input.

    Timed on a stream of the validation ``images`` (uint8) whose deferral share is the validation
    routing share ``val_deferred``, so early exit is paid as it happens; timed inside
    autokd.hostlock.timed_alone (the opt-in lock).
    """
    cpu = copy.deepcopy(committee).cpu().eval()
    images = images.cpu()
    _, deferred = committee_outputs(cpu, images)
    stream = latency_stream(deferred, val_deferred)
    inputs = images[stream].float() / 255.0
    stats = latency_stats(_BatchOneStream(cpu, inputs), inputs[:1], latency)
    n = len(stream)
    return {"params": count_params(cpu), "size_bytes": serialized_size_bytes(cpu),
            "latency_ms": stats.median_ms / n, "latency_spread_ms": stats.spread_ms / n,
            "latency_wait_s": stats.waited_s, "latency_alone": stats.alone,
            "latency_threads": latency.threads, "latency_backend": "torch", "latency_batch": 1, "latency_stream": n,
            "latency_stream_deferred": int(deferred[stream].sum())}
