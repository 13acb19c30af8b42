"""The committee trial: members, routing fitted on validation, figures, costs as it runs, checkpoint.

:func:`run_committee_trial` is what :func:`autokd.trial.run_trial` calls for a trial of kind
``cascade`` or ``pair`` (the stages are described in :mod:`autokd.committee`).
"""

from __future__ import annotations

import copy
import dataclasses
import time
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from autokd.checkpoint import save_checkpoint
from autokd.committee.checkpoint import committee_payload, load_member
from autokd.committee.fit import Routing, fit_cascade, fit_routed_pair
from autokd.committee.modules import committee_outputs
from autokd.committee.spec import RouterSpec, SelectorSpec
from autokd.config import COMMITTEE_KINDS, SelectorKnobs, RouterKnobs, TrialConfig
from autokd.context import build_student, distill_student
from autokd.hostlock import paced
from autokd.measure import count_macs, count_params, environment, latency_stats, serialized_size_bytes
from autokd.models import describe
from autokd.routing import cheap_first, committee_cost, committee_figures
from autokd.train import predict

#: Validation inputs in the batch-1 stream a committee's latency is timed on.
LATENCY_STREAM = 32


def second_config(config: TrialConfig) -> TrialConfig:
    """The second member's own single-student config (another init seed, same recipe)."""
    train = dataclasses.replace(config.train, seed=config.train.seed + 1)
    return dataclasses.replace(config, student=config.second, second=None, router=RouterKnobs(),
                               selector=SelectorKnobs(), reuse=None, kind="single", train=train)


def committee_members(config: TrialConfig, context: Any, on_epoch: Callable[[int, dict], None] | None
                      ) -> tuple[list[nn.Module], list[Any], dict[str, Any]]:
    """The two members (deployable, eval mode), what each is (trial number or spec), and training figures.

    ``on_epoch`` sees the first member's epochs as 0..E-1 and the second's as E..2E-1.
    """
    if config.reuse is not None:
        members = [load_member(Path(p), context.device) for p in config.reuse.weights]
        return members, list(config.reuse.trials), {"train_seconds": 0.0}
    members, seconds = [], 0.0
    for i, cfg in enumerate((config, second_config(config))):
        model = build_student(cfg, context.data).to(context.device)
        offset = i * config.train.epochs
        hook = None if on_epoch is None else (lambda e, m, offset=offset: on_epoch(e + offset, m))
        seconds += distill_student(model, cfg, context, hook)["train_seconds"]
        members.append(model.eval())
    return members, [describe(m) for m in members], {
        "train_seconds": seconds, "teacher_path": "cache" if context.teacher is not None else "none"}


def run_committee_trial(config: TrialConfig, context: Any, *, work_dir: Path,
                        on_epoch: Callable[[int, dict], None] | None = None) -> dict[str, Any]:
    """Members, routing fitted on validation, figures on validation (out of fold) and test, checkpoint.

    A committee has no epoch checkpoints: an interrupted committee trial starts over.
    """
    if config.second is None or config.kind not in COMMITTEE_KINDS:
        raise ValueError("a committee trial needs kind 'pair' or 'cascade' and a second student")
    started = time.perf_counter()
    members, identities, metrics = committee_members(config, context, on_epoch)
    example = context.data.test_images[:1].float() / 255.0
    macs = [count_macs(copy.deepcopy(m).cpu().eval(), example) for m in members]
    order = cheap_first(macs)
    cheap, large = (members[i] for i in order)
    member_macs = (macs[order[0]], macs[order[1]])
    with paced() as pace:
        val_logits = (predict(cheap, context.val_images, pace=pace), predict(large, context.val_images, pace=pace))
        test_logits = (predict(cheap, context.test_images, pace=pace), predict(large, context.test_images, pace=pace))
    routing_started = time.perf_counter()
    router = RouterSpec.from_config(config)
    if config.kind == "cascade":
        routing = fit_cascade(cheap, large, val_logits, context.val_labels, router, member_macs)
    else:
        routing = fit_routed_pair(cheap, large, context, val_logits, router, SelectorSpec.from_config(config),
                                  member_macs)
    committee = routing.committee.eval()
    metrics["router_seconds"] = time.perf_counter() - routing_started
    metrics.update(routing.figures)
    members_in_order = [identities[i] for i in order]  # every member list of the record is cheap member first
    if config.reuse is not None:
        metrics["reused_from"] = members_in_order
    val, test = committee_split_figures(committee, routing, context, val_logits, test_logits)
    in_order = {"members": members_in_order, "member_names": [describe(members[i]) for i in order],
                "member_params": [count_params(members[i]) for i in order]}
    metrics.update(committee_record(config, routing, router, (val, test), member_macs, in_order))
    metrics.update(measure_committee(committee, context, routing.val_deferred))
    data = context.data
    weights = save_checkpoint(work_dir / "student.pt", committee, family=config.kind, knobs={}, kind=config.kind,
                              num_classes=data.num_classes, in_channels=data.channels, image_size=data.image_size,
                              mean=data.mean, std=data.std, committee=committee_payload(committee),
                              config=config.to_json(), accuracy=metrics["test_accuracy"],
                              validation_accuracy=metrics["accuracy"])
    metrics.update(weights_path=str(weights), trial_seconds=time.perf_counter() - started,
                   device=str(context.device), compression="none", **environment(context.device))
    return metrics


def committee_split_figures(committee: nn.Module, routing: Routing, context: Any,
                            val_logits: tuple[torch.Tensor, torch.Tensor],
                            test_logits: tuple[torch.Tensor, torch.Tensor]) -> tuple[dict, dict]:
    """The committee's figures on validation (its out-of-fold decisions) and on test (the deployed committee)."""
    num_classes = context.data.num_classes
    cheap_v, large_v = (x.cpu() for x in val_logits)
    deferred_v = routing.val_deferred
    answer_v = torch.where(deferred_v[:, None], routing.deferred_answer(cheap_v, large_v), F.log_softmax(cheap_v, 1))
    val = committee_figures(cheap_v, large_v, answer_v, deferred_v, context.val_labels.cpu(), num_classes,
                            deferred_answer=routing.deferred_answer(cheap_v, large_v))
    answer_t, deferred_t = (x.cpu() for x in committee_outputs(committee, context.test_images))
    cheap_t, large_t = (x.cpu() for x in test_logits)
    test = committee_figures(cheap_t, large_t, answer_t, deferred_t, context.test_labels.cpu(), num_classes,
                             deferred_answer=routing.deferred_answer(cheap_t, large_t))
    return val, test


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


def measure_committee(committee: nn.Module, context: Any, val_deferred: torch.Tensor) -> dict[str, Any]:
    """What ships (params, bytes) and the deployed committee's batch-1 CPU latency per input.

    Timed on a stream of validation inputs whose deferral share is the validation routing share,
    so early exit is paid as it happens; the host is to itself while timing (autokd.hostlock).
    """
    cpu = copy.deepcopy(committee).cpu().eval()
    _, deferred = committee_outputs(cpu, context.data.val_images)
    stream = latency_stream(deferred, val_deferred)
    inputs = context.data.val_images[stream].float() / 255.0
    stats = latency_stats(_BatchOneStream(cpu, inputs), inputs[:1], context.latency)
    n = len(stream)
    return {"params": count_params(cpu), "size_bytes": serialized_size_bytes(cpu),
            "latency_ms": stats.median_ms / n, "latency_spread_ms": stats.spread_ms / n,
            "latency_wait_s": stats.waited_s, "latency_alone": stats.alone,
            "latency_threads": context.latency.threads, "latency_stream": n,
            "latency_stream_deferred": int(deferred[stream].sum())}

