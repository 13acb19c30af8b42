"""Committee trials: two students that answer together, as a cascade or a routed pair (docs/pairs.md).

A committee trial (``TrialConfig.kind`` ``cascade`` or ``pair``) runs these stages:

1. **Members.** Two students, distilled for the committee exactly as single students are
   (:func:`autokd.context.distill_student`), or, for a *reuse* committee, loaded from two
   finished single trials of the study (only the routing is fitted). The member with fewer
   MACs is the *cheap* one, the other the *large* one.
2. **Routing, learned on the validation split**, which the members never trained on
   (:mod:`autokd.routing`). Training images are useless for it: members nearly memorise them,
   so both are right almost everywhere and whom to trust does not transfer to new inputs.

   - cascade: run the cheap member; when its doubt (``1 - max softmax`` or ``1 - margin``,
     ``rule``) exceeds a threshold, defer to the large member (``combine: larger``) or to the
     average of both members' probabilities (``combine: average``);
   - routed pair: a selector CNN (``layers``, ``width``) predicts from the image whether the
     large member is needed, trained on augmented views of the validation images with a
     cost-aware target (:func:`autokd.routing.selector_targets`: the cheap member whenever it
     is right); inputs go to the large member when that probability exceeds a threshold.

   The threshold minimises expected MACs at the large member's accuracy minus ``tolerance``
   points (``target: match``) or maximises accuracy deferring at most ``budget`` of the inputs
   (``target: budget``). Validation figures are **out of fold**: each of ``folds`` parts of the
   validation split is routed by a rule fitted on the other parts; the deployed rule is then
   fitted on all of it. The test split is routed once, by the deployed rule, for the report.
3. **Costs as the committee runs.** ``macs``: expected MACs per input over the validation split
   (selector, cheap member on the inputs it keeps or on all of them for a cascade, the large
   member on deferred inputs); ``latency_ms``: the deployed committee timed at batch 1 on a
   stream of validation inputs with the validation routing share, early exit included;
   ``params`` / ``size_bytes``: everything that ships.

The deployed model (:class:`Cascade`, :class:`RoutedPair`) takes [0, 1] images and returns
log-probabilities; ``forward_with_route`` also returns whether each input was deferred. Both
run each member only on the rows routed to it, and export as such to ONNX and TorchScript.
"""

from __future__ import annotations

import copy
import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from autokd.checkpoint import deployable, load_checkpoint, network_from_checkpoint, save_checkpoint
from autokd.config import ROUTER_KEYS, SELECTOR_KEYS, TrialConfig
from autokd.context import build_student, distill_student
from autokd.errors import AutokdError
from autokd.measure import count_macs, count_params, environment, latency_stats, serialized_size_bytes
from autokd.models import build_model
from autokd.routing import (COMBINE_RULES, CONFIDENCE_RULES, THRESHOLD_TARGETS, cheap_first, choose_threshold,
                            combined_log_probs, committee_cost, committee_figures, defer_score, out_of_fold,
                            selector_targets)
from autokd.train import AugmentPolicy, augmented_batch, epoch_views, predict, predict_views

COMMITTEE_KINDS = ("pair", "cascade")
#: Keys of ``TrialConfig.selector`` that record where a reuse committee's members came from.
REUSE_KEYS = ("from_trial1", "from_trial2", "from_weights1", "from_weights2")
#: Validation inputs in the batch-1 stream a committee's latency is timed on.
LATENCY_STREAM = 32


# --------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class RouterSpec:
    """How a committee routes: the cascade's confidence rule and answer, and the threshold's target."""

    rule: str = "max_softmax"
    combine: str = "larger"
    target: str = "match"
    tolerance: float = 0.0
    budget: float = 0.5
    folds: int = 3
    seed: int = 0

    @staticmethod
    def from_config(config: TrialConfig) -> "RouterSpec":
        return RouterSpec(seed=config.train.seed, **{k: v for k, v in config.selector if k in ROUTER_KEYS})

    def __post_init__(self) -> None:
        for key, allowed in (("rule", CONFIDENCE_RULES), ("combine", COMBINE_RULES), ("target", THRESHOLD_TARGETS)):
            if getattr(self, key) not in allowed:
                raise AutokdError(f"router {key}={getattr(self, key)!r} is invalid", f"use one of {', '.join(allowed)}")


@dataclass(frozen=True)
class SelectorSpec:
    """The routed pair's selector: size and training budget (``epochs=None``: the trial's ``train.epochs``)."""

    layers: int = 3
    width: int = 16
    family: str = "conv"
    epochs: int | None = None
    lr: float = 3e-3
    batch_size: int = 128
    weight_decay: float = 5e-4
    seed: int = 0

    @staticmethod
    def from_config(config: TrialConfig) -> "SelectorSpec":
        knobs = {k: v for k, v in config.selector if k in SELECTOR_KEYS}
        knobs.setdefault("epochs", config.train.epochs)
        return SelectorSpec(batch_size=config.train.batch_size, seed=config.train.seed, **knobs)

    def __post_init__(self) -> None:
        if not 2 <= int(self.layers) <= 4:
            raise AutokdError(f"selector layers={self.layers} is invalid", "use 2, 3 or 4 conv layers")
        if not 1 <= int(self.width) <= 512:
            raise AutokdError(f"selector width={self.width} is invalid", "use an integer channel count in 1..512")
        if self.family not in SELECTOR_FAMILIES:
            raise AutokdError(f"selector family={self.family!r} is invalid", f"use one of {', '.join(SELECTOR_FAMILIES)}")


# --------------------------------------------------------------------------- selector

#: Selector block types: a full 3x3 convolution, or MobileNet's depthwise 3x3 + pointwise 1x1 (far fewer MACs).
SELECTOR_FAMILIES = ("conv", "separable")


def _selector_block(channels: int, out: int, family: str) -> list[nn.Module]:
    if family == "separable":
        return [nn.Conv2d(channels, channels, 3, padding=1, groups=channels, bias=False), nn.BatchNorm2d(channels),
                nn.ReLU(), nn.Conv2d(channels, out, 1, bias=False), nn.BatchNorm2d(out), nn.ReLU()]
    return [nn.Conv2d(channels, out, 3, padding=1, bias=False), nn.BatchNorm2d(out), nn.ReLU()]


class Selector(nn.Module):
    """Whether the large member is needed for this input: conv blocks, global pool, 2 logits.

    Blocks are conv-BN-ReLU (``family="conv"``) or depthwise-separable (``"separable"``) with
    ``width, 2*width, 4*width, 4*width`` channels; a 2x2 max pool follows each block while the
    map is at least 4 px. Expects normalised input (wrap with :func:`autokd.checkpoint.deployable`).
    """

    def __init__(self, *, in_channels: int, image_size: int, layers: int, width: int, family: str = "conv"):
        super().__init__()
        blocks, channels, size = [], in_channels, image_size
        for i in range(int(layers)):
            out = int(width) * 2 ** min(i, 2)
            block = _selector_block(channels, out, family if i > 0 else "conv")  # the first sees raw channels
            if size >= 4:
                block.append(nn.MaxPool2d(2))
                size //= 2
            blocks.append(nn.Sequential(*block))
            channels = out
        self.features = nn.Sequential(*blocks)
        self.head = nn.Linear(channels, 2)
        self.knobs = {"layers": int(layers), "width": int(width), "family": family}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean((2, 3)))  # (B, C, h, w) -> (B, C) -> (B, 2)


def build_selector(spec: SelectorSpec, *, in_channels: int, image_size: int, mean: Sequence[float],
                   std: Sequence[float]) -> nn.Sequential:
    torch.manual_seed(spec.seed)
    net = Selector(in_channels=in_channels, image_size=image_size, layers=spec.layers, width=spec.width,
                   family=spec.family)
    return deployable(net, tuple(mean), tuple(std))


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
        with torch.no_grad():
            target, weight = selector_targets(predict_views(cheap, images, views, policy),
                                              predict_views(large, images, views, policy), labels)
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
    return F.softmax(predict(selector, images), 1)[:, 1]


# --------------------------------------------------------------------------- deployed committees


def _run_rows(member: nn.Module, x01: torch.Tensor, rows: torch.Tensor) -> torch.Tensor | None:
    """``member`` on the rows routed to it; None when there are none (eager only: a traced graph runs it)."""
    if not torch.jit.is_tracing() and rows.numel() == 0:
        return None
    return member(x01.index_select(0, rows)).float()


def _put_rows(target: torch.Tensor, rows: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """``target`` with ``values`` in ``rows`` (a scatter: exports with a dynamic row count, unlike ``t[rows] = v``)."""
    return target.scatter(0, rows[:, None].expand(-1, target.shape[1]), values)


class Cascade(nn.Module):
    """Run the cheap member; defer the inputs it doubts (score > threshold) to the large member.

    Returns log-probabilities: the cheap member's for kept inputs, the large member's (or both
    members' averaged probabilities) for deferred ones. The large member runs only on deferred rows.
    """

    def __init__(self, cheap: nn.Module, large: nn.Module, *, rule: str, combine: str, threshold: float):
        super().__init__()
        self.members = nn.ModuleList([cheap, large])
        self.rule, self.combine = rule, combine
        self.register_buffer("threshold", torch.tensor(float(threshold)))

    def forward_with_route(self, x01: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        cheap = self.members[0](x01).float()  # (B, K)
        deferred = defer_score(cheap, self.rule) > self.threshold  # (B,)
        rows = deferred.nonzero().flatten()  # (D,)
        answer = F.log_softmax(cheap, 1)
        large = _run_rows(self.members[1], x01, rows)  # (D, K)
        if large is not None:
            answer = _put_rows(answer, rows, combined_log_probs(cheap.index_select(0, rows), large, self.combine))
        return answer, deferred

    def forward(self, x01: torch.Tensor) -> torch.Tensor:
        return self.forward_with_route(x01)[0]


class RoutedPair(nn.Module):
    """A selector sends each input to the cheap or the large member; only that member runs on it.

    Returns the routed member's log-probabilities.
    """

    def __init__(self, cheap: nn.Module, large: nn.Module, selector: nn.Module, *, threshold: float,
                 num_classes: int):
        super().__init__()
        self.members = nn.ModuleList([cheap, large])
        self.selector = selector
        self.num_classes = int(num_classes)
        self.register_buffer("threshold", torch.tensor(float(threshold)))

    def forward_with_route(self, x01: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        deferred = F.softmax(self.selector(x01).float(), 1)[:, 1] > self.threshold  # (B,)
        answer = x01.new_zeros(x01.shape[0], self.num_classes)
        for member, rows in zip(self.members, ((~deferred).nonzero().flatten(), deferred.nonzero().flatten())):
            logits = _run_rows(member, x01, rows)
            if logits is not None:
                answer = _put_rows(answer, rows, F.log_softmax(logits, 1))
        return answer, deferred

    def forward(self, x01: torch.Tensor) -> torch.Tensor:
        return self.forward_with_route(x01)[0]


class WithRoute(nn.Module):
    """A committee whose forward returns ``(log-probabilities, deferred)``: what its exports output."""

    def __init__(self, committee: nn.Module):
        super().__init__()
        self.committee = committee

    def forward(self, x01: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        answer, deferred = self.committee.forward_with_route(x01)
        return answer, deferred.long()


@torch.inference_mode()
def committee_outputs(committee: nn.Module, images: torch.Tensor, batch_size: int = 512
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """A committee's log-probabilities and deferrals on uint8 images. (N, K), (N,) bool"""
    committee.eval()
    answers, deferred = [], []
    for start in range(0, len(images), batch_size):
        answer, route = committee.forward_with_route(images[start:start + batch_size].float() / 255.0)
        answers.append(answer.float())
        deferred.append(route)
    return torch.cat(answers), torch.cat(deferred)


def committee_payload(committee: nn.Module) -> dict[str, Any]:
    """The architecture of a committee (members, selector size, routing) for its checkpoint."""
    nets = [m[-1] if isinstance(m, nn.Sequential) else m for m in committee.members]
    payload: dict[str, Any] = {"members": [{"family": n.family, "knobs": dict(n.knobs)} for n in nets],
                               "threshold": float(committee.threshold)}
    if isinstance(committee, Cascade):
        payload.update(kind="cascade", rule=committee.rule, combine=committee.combine)
    else:
        selector = committee.selector[-1] if isinstance(committee.selector, nn.Sequential) else committee.selector
        payload.update(kind="pair", selector=dict(selector.knobs))
    return payload


def load_committee(payload: dict[str, Any]) -> nn.Module:
    """Rebuild a committee from its (weights-only) checkpoint payload, in eval mode.

    Pair checkpoints written before cascades existed (a ``pair`` entry, ``students.*`` weights,
    argmax routing) load as a routed pair with threshold 0.5, which routes the same way.
    """
    shape = {"num_classes": int(payload["num_classes"]), "in_channels": int(payload["in_channels"]),
             "image_size": int(payload["image_size"])}
    mean, std = tuple(payload["mean"]), tuple(payload["std"])
    spec = payload.get("committee")
    state = dict(payload["state_dict"])
    if spec is None:  # an older pair checkpoint
        old = payload["pair"]
        spec = {"kind": "pair", "members": old["students"], "selector": old["selector"], "threshold": 0.5}
        state = {k.replace("students.", "members.", 1): v for k, v in state.items()}
        state["threshold"] = torch.tensor(0.5)
    members = [deployable(build_model(m["family"], **shape, **m["knobs"]), mean, std) for m in spec["members"]]
    if spec["kind"] == "cascade":
        committee: nn.Module = Cascade(members[0], members[1], rule=spec["rule"], combine=spec["combine"],
                                       threshold=spec["threshold"])
    else:
        sel = spec["selector"]
        selector = deployable(Selector(in_channels=shape["in_channels"], image_size=shape["image_size"],
                                       layers=sel["layers"], width=sel["width"], family=sel.get("family", "conv")),
                              mean, std)
        committee = RoutedPair(members[0], members[1], selector, threshold=spec["threshold"],
                               num_classes=shape["num_classes"])
    try:
        committee.load_state_dict(state)
    except RuntimeError as err:
        raise AutokdError(f"committee weights do not fit their architecture: {str(err).splitlines()[0][:160]}",
                          "re-create the checkpoint with this version of autokd") from None
    return committee.eval()


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


def fit_routed_pair(cheap: nn.Module, large: nn.Module, context: Any, val_logits: tuple[torch.Tensor, torch.Tensor],
                    router: RouterSpec, selector_spec: SelectorSpec, member_macs: tuple[int, int]) -> Routing:
    """Selectors trained on validation folds give out-of-fold scores; the threshold is chosen on them.

    The deployed selector is then trained on the whole validation split and keeps that threshold.
    """
    data, images, labels = context.data, context.val_images, context.val_labels
    cheap_logits, large_logits = (x.cpu() for x in val_logits)
    labels_cpu = labels.cpu()

    def new_selector() -> nn.Module:
        return build_selector(selector_spec, in_channels=data.channels, image_size=data.image_size, mean=data.mean,
                              std=data.std).to(context.device)

    def fit(index: torch.Tensor) -> nn.Module:
        selector = new_selector()
        on_device = index.to(images.device)
        train_selector(selector, cheap, large, images[on_device], labels[on_device], spec=selector_spec,
                       policy=context.policy)
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


# --------------------------------------------------------------------------- the committee trial


def second_config(config: TrialConfig) -> TrialConfig:
    """The second member's own single-student config (another init seed, same recipe)."""
    train = dataclasses.replace(config.train, seed=config.train.seed + 1)
    return dataclasses.replace(config, student=config.second, second=None, selector=(), kind="single", train=train)


def reuse_sources(config: TrialConfig) -> list[str] | None:
    """Weight files of a reuse committee's two members, or None when it trains its own."""
    knobs = dict(config.selector)
    if "from_weights1" not in knobs:
        return None
    return [knobs["from_weights1"], knobs["from_weights2"]]


def committee_members(config: TrialConfig, context: Any, on_epoch: Callable[[int, dict], None] | None
                      ) -> tuple[list[nn.Module], list[Any], dict[str, Any]]:
    """The two members (deployable, eval mode), what each is (trial number or spec), and training figures.

    ``on_epoch`` sees the first member's epochs as 0..E-1 and the second's as E..2E-1.
    """
    sources = reuse_sources(config)
    if sources is not None:
        knobs = dict(config.selector)
        trials = [knobs["from_trial1"], knobs["from_trial2"]]
        return [_load_member(Path(p), context) for p in sources], trials, {"train_seconds": 0.0}
    members, seconds = [], 0.0
    for i, cfg in enumerate((config, second_config(config))):
        model = build_student(cfg, context.data).to(context.device)
        offset = i * config.train.epochs
        hook = None if on_epoch is None else (lambda e, m, offset=offset: on_epoch(e + offset, m))
        seconds += distill_student(model, cfg, context, hook)["train_seconds"]
        members.append(model.eval())
    return members, [describe_member(m) for m in members], {
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
    data = context.data
    example = data.test_images[:1].float() / 255.0
    macs = [count_macs(copy.deepcopy(m).cpu().eval(), example) for m in members]
    order = cheap_first(macs)
    cheap, large = (members[i] for i in order)
    member_macs = (macs[order[0]], macs[order[1]])
    val_logits = (predict(cheap, context.val_images), predict(large, context.val_images))
    test_logits = (predict(cheap, context.test_images), predict(large, context.test_images))
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
    if reuse_sources(config) is not None:
        metrics["reused_from"] = members_in_order

    cheap_v, large_v = (x.cpu() for x in val_logits)
    deferred_v = routing.val_deferred
    answer_v = torch.where(deferred_v[:, None], routing.deferred_answer(cheap_v, large_v), F.log_softmax(cheap_v, 1))
    labels_v = context.val_labels.cpu()
    val = committee_figures(cheap_v, large_v, answer_v, deferred_v, labels_v, data.num_classes,
                            deferred_answer=routing.deferred_answer(cheap_v, large_v))
    answer_t, deferred_t = (x.cpu() for x in committee_outputs(committee, context.test_images))
    cheap_t, large_t = (x.cpu() for x in test_logits)
    test = committee_figures(cheap_t, large_t, answer_t, deferred_t, context.test_labels.cpu(), data.num_classes,
                             deferred_answer=routing.deferred_answer(cheap_t, large_t))
    metrics.update(val)
    metrics.update({f"test_{k}": v for k, v in test.items()})
    costs = {"fixed": member_macs[0] if config.kind == "cascade" else routing.selector_macs,
             "keep": 0.0 if config.kind == "cascade" else member_macs[0], "defer": member_macs[1]}
    metrics.update(
        kind=config.kind,
        validation_accuracy=val["accuracy"], test_accuracy=test["accuracy"],
        per_class_validation_accuracy=val["per_class_accuracy"], per_class_test_accuracy=test["per_class_accuracy"],
        members=members_in_order, member_names=[describe_member(members[i]) for i in order],
        member_validation_accuracy=val["member_accuracy"], member_test_accuracy=test["member_accuracy"],
        member_macs=list(member_macs), member_params=[count_params(members[i]) for i in order],
        selector_macs=routing.selector_macs,
        macs=int(round(committee_cost(val["routing_share"][1], **costs))),
        test_macs=int(round(committee_cost(test["routing_share"][1], **costs))),
        router={"rule": router.rule, "combine": router.combine, "target": router.target,
                "tolerance": router.tolerance, "budget": router.budget, "folds": router.folds},
    )
    if config.kind == "pair":
        metrics["selector_params"] = count_params(committee.selector)
    metrics.update(measure_committee(committee, context, deferred_v))
    weights = save_checkpoint(work_dir / "student.pt", committee, family=config.kind, knobs={}, kind=config.kind,
                              num_classes=data.num_classes, in_channels=data.channels, image_size=data.image_size,
                              mean=data.mean, std=data.std, committee=committee_payload(committee),
                              config=config.to_json(), accuracy=metrics["test_accuracy"],
                              validation_accuracy=metrics["accuracy"])
    metrics.update(weights_path=str(weights), trial_seconds=time.perf_counter() - started,
                   device=str(context.device), compression="none", **environment(context.device))
    return metrics


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


def _load_member(path: Path, context: Any) -> nn.Module:
    payload = load_checkpoint(path)
    if payload.get("compressed_module") is not None or payload.get("kind", "single") != "single":
        raise AutokdError(f"student {path} is compressed or a committee; a reuse committee takes plain students",
                          "reuse only uncompressed single trials")
    net = network_from_checkpoint(payload, source=f"student {path}")
    return deployable(net, tuple(payload["mean"]), tuple(payload["std"])).to(context.device).eval()


def describe_member(model: nn.Module) -> str:
    net = model[-1] if isinstance(model, nn.Sequential) else model
    knobs = ",".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in net.knobs.items())
    return f"{net.family}({knobs})"
