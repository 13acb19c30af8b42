"""Pair trials: two distilled students and a selector CNN that routes each input to one of them.

A pair trial (``TrialConfig.kind == "pair"``) runs these stages:

1. **Students.** Two students are distilled from the study's teacher exactly as single students
   are (:func:`autokd.context.distill_student`), or, for a *reuse* pair, loaded from two finished
   single trials of the same study (their ``weights_path``), so the pair costs one selector.
2. **Routing targets** (:func:`routing_targets`). On every training image, as the epoch's
   augmentation schedule views it, each student is right or wrong and has a confidence (its
   softmax probability of the true label). The selector learns ``t = P(first student is the one
   to use)``:

   - exactly one student right: a hard target (1 or 0), weight 1;
   - both right: a soft target from confidence, ``t = c1 / (c1 + c2)``, weight ``both_weight``
     (0.5): either choice is correct, but the more confident student is the safer one where
     the two start to disagree, and on small, well-fitted data sets these images are most of
     the training split, so dropping them would leave the selector a handful of examples;
   - neither right: excluded (weight 0): no routing fixes them, and they are mostly ambiguous
     or mislabelled images whose targets would be noise.
3. **Selector** (:class:`Selector`): 2 to 4 conv3x3-BN-ReLU blocks (``layers``), channels
   ``width, 2*width, 4*width, 4*width``, global average pool, a linear layer to 2 logits;
   trained with AdamW and a one-cycle schedule on the weighted soft-target cross-entropy.
4. **Routed model** (:class:`RoutedPair`): ``selector(x).argmax`` picks a student per input.
   Its ``forward`` computes both students and picks rows with ``torch.where``, because that
   exports to one ONNX graph (and TorchScript) with the routing inside; the exported graph
   therefore computes both students. A deployment that runs only the routed student per input
   (``RoutedPair.forward_routed``, data-dependent control flow) is what the cost figures assume.

Metrics (:func:`measure_pair`): ``accuracy`` is the routed accuracy; ``params`` and
``size_bytes`` count selector + both students (what ships); ``macs`` and ``latency_ms`` are the
selector's plus each student's weighted by the share of test inputs routed to it (the average
cost per input as routed). Also stored: oracle accuracy (either student right), each student's
accuracy and per-class accuracy, selector accuracy (on test inputs where exactly one student is
right, the share sent to that one), routing shares and the routed per-class accuracy.

Reuse: a search space with ``pairs: {reuse: true}`` (or a choice) builds pair trials from the
``pool`` best finished, uncompressed single trials of the study (Pareto-optimal ones first, then
by accuracy); two ranks are suggested and resolved to trial numbers when the trial starts, and
the resolved numbers and weight files are stored in the trial's config (``selector.from_trial1``,
``selector.from_weights1``, ...), so the trial can be rebuilt from its stored config.
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
from autokd.config import TrialConfig
from autokd.context import build_student, distill_student
from autokd.errors import AutokdError
from autokd.measure import accuracy, count_macs, count_params, environment, latency_stats, per_class_accuracy, \
    serialized_size_bytes
from autokd.models import build_model
from autokd.train import AugmentPolicy, augmented_batch, epoch_views, predict, predict_views

#: Keys of ``TrialConfig.selector`` that are the selector's own knobs (the rest record reuse).
SELECTOR_KNOBS = ("layers", "width", "epochs", "lr")
#: Keys of ``TrialConfig.selector`` that record where a reuse pair's students came from.
REUSE_KEYS = ("from_trial1", "from_trial2", "from_weights1", "from_weights2")


# --------------------------------------------------------------------------- selector


@dataclass(frozen=True)
class SelectorSpec:
    """The selector's size and training budget (``epochs=None``: the trial's ``train.epochs``)."""

    layers: int = 3
    width: int = 16
    epochs: int | None = None
    lr: float = 3e-3
    batch_size: int = 128
    weight_decay: float = 5e-4
    both_weight: float = 0.5
    neither_weight: float = 0.0
    seed: int = 0

    @staticmethod
    def from_config(config: TrialConfig) -> "SelectorSpec":
        knobs = {k: v for k, v in config.selector if k in SELECTOR_KNOBS}
        knobs.setdefault("epochs", config.train.epochs)
        return SelectorSpec(batch_size=config.train.batch_size, seed=config.train.seed, **knobs)

    def __post_init__(self) -> None:
        if not 2 <= int(self.layers) <= 4:
            raise AutokdError(f"selector layers={self.layers} is invalid", "use 2, 3 or 4 conv layers")
        if not 1 <= int(self.width) <= 512:
            raise AutokdError(f"selector width={self.width} is invalid", "use an integer channel count in 1..512")


class Selector(nn.Module):
    """Which student to trust for this input: conv-BN-ReLU blocks, global pool, 2 logits.

    Expects normalised input (wrap with :func:`autokd.checkpoint.deployable`). A 2x2 max pool
    follows each block while the map is at least 4 px, so 8 px digits keep a 2x2 map.
    """

    def __init__(self, *, in_channels: int, image_size: int, layers: int, width: int, n_students: int = 2):
        super().__init__()
        blocks, channels, size = [], in_channels, image_size
        for i in range(int(layers)):
            out = int(width) * 2 ** min(i, 2)
            block: list[nn.Module] = [nn.Conv2d(channels, out, 3, padding=1, bias=False), nn.BatchNorm2d(out),
                                      nn.ReLU()]
            if size >= 4:
                block.append(nn.MaxPool2d(2))
                size //= 2
            blocks.append(nn.Sequential(*block))
            channels = out
        self.features = nn.Sequential(*blocks)
        self.head = nn.Linear(channels, n_students)
        self.knobs = {"layers": int(layers), "width": int(width)}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean((2, 3)))  # (B, C, h, w) -> (B, C) -> (B, 2)


def build_selector(spec: SelectorSpec, *, in_channels: int, image_size: int, mean: Sequence[float],
                   std: Sequence[float]) -> nn.Sequential:
    torch.manual_seed(spec.seed)
    net = Selector(in_channels=in_channels, image_size=image_size, layers=spec.layers, width=spec.width)
    return deployable(net, tuple(mean), tuple(std))


def routing_targets(logits1: torch.Tensor, logits2: torch.Tensor, labels: torch.Tensor, *,
                    both_weight: float = 0.5, neither_weight: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Soft target ``P(use the first student)`` and a weight per input.

    One right: 1 or 0 (weight 1). Both right: ``c1 / (c1 + c2)`` with ``c`` the probability each
    gives the true label (weight ``both_weight``). Neither right: the same soft target, weight
    ``neither_weight`` (0 excludes them).

    Example:
        >>> l1 = torch.tensor([[2., 0.], [2., 0.], [0., 2.]]); l2 = torch.tensor([[0., 2.], [2., 0.], [0., 2.]])
        >>> t, w = routing_targets(l1, l2, torch.tensor([0, 0, 0]))
        >>> t.tolist(), w.tolist()
        ([1.0, 0.5, 0.5], [1.0, 0.5, 0.0])
    """
    right1 = logits1.argmax(1) == labels  # (N,)
    right2 = logits2.argmax(1) == labels
    conf1 = F.softmax(logits1.float(), 1).gather(1, labels[:, None]).squeeze(1)  # (N,)
    conf2 = F.softmax(logits2.float(), 1).gather(1, labels[:, None]).squeeze(1)
    soft = conf1 / (conf1 + conf2).clamp_min(1e-12)
    target = torch.where(right1 & ~right2, torch.ones_like(soft), torch.where(right2 & ~right1, torch.zeros_like(soft),
                                                                               soft))
    weight = torch.where(right1 ^ right2, torch.ones_like(soft),
                         torch.where(right1 & right2, torch.full_like(soft, both_weight),
                                     torch.full_like(soft, neither_weight)))
    return target, weight


def selector_loss(selector_logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Weighted soft-target cross-entropy; ``target`` is P(first student), logits are (B, 2)."""
    logp = F.log_softmax(selector_logits.float(), 1)  # (B, 2)
    per_input = -(target * logp[:, 0] + (1.0 - target) * logp[:, 1])  # (B,)
    return (weight * per_input).sum() / weight.sum().clamp_min(1e-12)


def train_selector(selector: nn.Module, students: Sequence[nn.Module], images: torch.Tensor, labels: torch.Tensor,
                   *, spec: SelectorSpec, policy: AugmentPolicy) -> dict[str, Any]:
    """Train ``selector`` (taking [0, 1] input) to pick the student that is right on ``images``.

    Targets are recomputed every epoch from the students' outputs on that epoch's augmented
    views, so the selector sees the students err on views, not only on the (often memorised)
    clean training images. Returns the target statistics and the loss history.
    """
    device = images.device
    epochs = int(spec.epochs or 1)
    steps = max(1, len(images) // spec.batch_size)
    optimizer = torch.optim.AdamW(selector.parameters(), lr=spec.lr, weight_decay=spec.weight_decay)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=spec.lr, total_steps=epochs * steps,
                                                    pct_start=0.25)
    order_gen = torch.Generator().manual_seed(spec.seed)
    history, started = [], time.perf_counter()
    for m in students:
        m.eval()
    for epoch in range(epochs):
        views = epoch_views(policy, len(images), epoch).to(device)
        logits = [predict_views(m, images, views, policy) for m in students]  # 2 x (N, K)
        target, weight = routing_targets(logits[0], logits[1], labels, both_weight=spec.both_weight,
                                         neither_weight=spec.neither_weight)
        selector.train()
        order = torch.randperm(len(images), generator=order_gen).to(device)
        total = torch.zeros((), device=device)
        for step in range(steps):
            index = order[step * spec.batch_size:(step + 1) * spec.batch_size]
            if weight[index].sum() == 0:
                continue
            loss = selector_loss(selector(augmented_batch(images, index, views, policy)), target[index], weight[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            total += loss.detach()
        right = [lg.argmax(1) == labels for lg in logits]
        history.append({"epoch": epoch + 1, "loss": float(total) / steps,
                        "one_right": float((right[0] ^ right[1]).float().mean()),
                        "both_right": float((right[0] & right[1]).float().mean()),
                        "neither_right": float((~right[0] & ~right[1]).float().mean())})
    selector.eval()
    return {"selector_seconds": time.perf_counter() - started, "selector_history": history,
            "selector_targets": {k: history[-1][k] for k in ("one_right", "both_right", "neither_right")}}


# --------------------------------------------------------------------------- routed model


class RoutedPair(nn.Module):
    """Two students and a selector; takes [0, 1] floats, returns the routed student's logits.

    ``forward`` computes both students and keeps each row of the routed one (``torch.where``),
    which exports as one ONNX graph with the routing inside. ``forward_routed`` runs each
    student only on the inputs routed to it (what a deployment that branches per input pays).
    """

    def __init__(self, first: nn.Module, second: nn.Module, selector: nn.Module):
        super().__init__()
        self.students = nn.ModuleList([first, second])
        self.selector = selector

    def route(self, x01: torch.Tensor) -> torch.Tensor:
        """Index of the student each input goes to. (B,) int64"""
        return self.selector(x01).argmax(1)

    def forward(self, x01: torch.Tensor) -> torch.Tensor:
        choice = self.route(x01)  # (B,)
        first, second = self.students[0](x01), self.students[1](x01)  # (B, K) each
        return torch.where((choice == 0)[:, None], first, second)

    @torch.no_grad()
    def forward_routed(self, x01: torch.Tensor) -> torch.Tensor:
        choice = self.route(x01)
        out = None
        for i, student in enumerate(self.students):
            rows = (choice == i).nonzero().flatten()
            if len(rows):
                logits = student(x01[rows])
                out = out if out is not None else logits.new_zeros(len(x01), logits.shape[1])
                out[rows] = logits
        return out


def pair_payload(routed: RoutedPair) -> dict[str, Any]:
    """The architecture of a routed pair (families, knobs, selector size) for its checkpoint."""
    nets = [s[-1] if isinstance(s, nn.Sequential) else s for s in routed.students]
    selector = routed.selector[-1] if isinstance(routed.selector, nn.Sequential) else routed.selector
    return {"students": [{"family": n.family, "knobs": dict(n.knobs)} for n in nets],
            "selector": dict(selector.knobs)}


def load_pair(payload: dict[str, Any]) -> RoutedPair:
    """Rebuild a routed pair from its (weights-only) checkpoint payload, in eval mode."""
    shape = {"num_classes": int(payload["num_classes"]), "in_channels": int(payload["in_channels"]),
             "image_size": int(payload["image_size"])}
    mean, std = tuple(payload["mean"]), tuple(payload["std"])
    students = [deployable(build_model(s["family"], **shape, **s["knobs"]), mean, std)
                for s in payload["pair"]["students"]]
    sel = payload["pair"]["selector"]
    selector = deployable(Selector(in_channels=shape["in_channels"], image_size=shape["image_size"],
                                   layers=sel["layers"], width=sel["width"]), mean, std)
    routed = RoutedPair(students[0], students[1], selector)
    try:
        routed.load_state_dict(payload["state_dict"])
    except RuntimeError as err:
        raise AutokdError(f"pair weights do not fit their architecture: {str(err).splitlines()[0][:160]}",
                          "re-create the checkpoint with this version of autokd") from None
    return routed.eval()


# --------------------------------------------------------------------------- measurement


def routing_figures(logits: Sequence[torch.Tensor], choice: torch.Tensor, labels: torch.Tensor,
                    num_classes: int) -> dict[str, Any]:
    """A routed pair's figures on one split, from both students' logits and the selector's choice. Pure."""
    routed_logits = torch.where((choice == 0)[:, None], logits[0], logits[1])  # (N, K)
    right = [lg.argmax(1) == labels for lg in logits]
    oracle = right[0] | right[1]
    one = right[0] ^ right[1]
    picked_right = torch.where(choice == 0, right[0], right[1])
    oracle_logits = torch.where((right[0] | ~right[1])[:, None], logits[0], logits[1])
    return {
        "accuracy": accuracy(routed_logits, labels),
        "oracle_accuracy": float(oracle.float().mean()),
        "student_accuracy": [accuracy(lg, labels) for lg in logits],
        "selector_accuracy": float(picked_right[one].float().mean()) if one.any() else float("nan"),
        "disagreement": float(one.float().mean()),
        "routing_share": [float((choice == i).float().mean()) for i in range(2)],
        "per_class_accuracy": per_class_accuracy(routed_logits, labels, num_classes),
        "oracle_per_class_accuracy": per_class_accuracy(oracle_logits, labels, num_classes),
        "student_per_class_accuracy": [per_class_accuracy(lg, labels, num_classes) for lg in logits],
    }


def measure_pair(routed: RoutedPair, context: Any) -> dict[str, Any]:
    """Every figure of a pair; costs as deployed (see the module docstring).

    Accuracy figures come from the validation split (``accuracy`` is the objective) and again,
    with a ``test_`` prefix, from the test split for the report; ``validation_accuracy`` and
    ``test_accuracy`` name the routed accuracies as for single students.
    """
    splits = {}
    for split, images, labels in (("validation", context.val_images, context.val_labels),
                                  ("test", context.test_images, context.test_labels)):
        logits = [predict(s, images) for s in routed.students]  # 2 x (N, K)
        choice = predict(routed.selector, images).argmax(1)  # (N,)
        splits[split] = routing_figures(logits, choice, labels, context.data.num_classes)
    metrics: dict[str, Any] = {**splits["validation"], **{f"test_{k}": v for k, v in splits["test"].items()}}
    share = metrics["routing_share"]
    metrics.update(validation_accuracy=metrics["accuracy"],
                   per_class_validation_accuracy=metrics["per_class_accuracy"],
                   per_class_test_accuracy=metrics["test_per_class_accuracy"])
    example = context.data.test_images[:1].float() / 255.0
    cpu = copy.deepcopy(routed).cpu().eval()
    parts = [cpu.selector, *cpu.students]
    weights = [1.0, *share]  # the selector runs on every input, a student on its share
    macs = [count_macs(p, example) for p in parts]
    # each part timed alone (autokd.hostlock); latency_spread_ms: the weighted sum of the parts' p90 - p10
    stats = [latency_stats(p, example, context.latency) for p in parts]
    lat = [s.median_ms for s in stats]
    metrics.update(
        params=count_params(cpu),
        size_bytes=serialized_size_bytes(cpu),
        macs=int(round(sum(w * m for w, m in zip(weights, macs)))),
        latency_ms=sum(w * t for w, t in zip(weights, lat)),
        latency_spread_ms=sum(w * s.spread_ms for w, s in zip(weights, stats)),
        latency_wait_s=sum(s.waited_s for s in stats),
        latency_alone=all(s.alone for s in stats),
        latency_threads=context.latency.threads,
        selector_params=count_params(cpu.selector),
        student_params=[count_params(s) for s in cpu.students],
        student_macs=macs[1:],
        student_latency_ms=lat[1:],
        selector_macs=macs[0],
        selector_latency_ms=lat[0],
    )
    return metrics


# --------------------------------------------------------------------------- the pair trial


def second_config(config: TrialConfig) -> TrialConfig:
    """The second student's own single-student config (another init seed, same recipe)."""
    train = dataclasses.replace(config.train, seed=config.train.seed + 1)
    return dataclasses.replace(config, student=config.second, second=None, selector=(), kind="single", train=train)


def reuse_sources(config: TrialConfig) -> list[str] | None:
    """Weight files of a reuse pair's two students, or None when the pair trains its own."""
    knobs = dict(config.selector)
    if "from_weights1" not in knobs:
        return None
    return [knobs["from_weights1"], knobs["from_weights2"]]


def run_pair_trial(config: TrialConfig, context: Any, *, work_dir: Path,
                   on_epoch: Callable[[int, dict], None] | None = None) -> dict[str, Any]:
    """Distill (or load) two students, train the selector, measure and save the routed pair.

    ``on_epoch`` sees the first student's epochs as 0..E-1 and the second's as E..2E-1. A pair
    has no epoch checkpoints: an interrupted pair trial starts over.
    """
    if config.second is None:
        raise ValueError("a pair trial needs a second student (TrialConfig.second)")
    started = time.perf_counter()
    metrics: dict[str, Any] = {"kind": "pair"}
    sources = reuse_sources(config)
    if sources is not None:
        students = [_load_student(Path(p), context) for p in sources]
        knobs = dict(config.selector)
        metrics.update(reused_from=[knobs["from_trial1"], knobs["from_trial2"]], train_seconds=0.0)
    else:
        students, seconds = [], 0.0
        for i, cfg in enumerate((config, second_config(config))):
            model = build_student(cfg, context.data).to(context.device)
            offset = i * config.train.epochs
            hook = None if on_epoch is None else (lambda e, m, offset=offset: on_epoch(e + offset, m))
            seconds += distill_student(model, cfg, context, hook)["train_seconds"]
            students.append(model.eval())
        metrics.update(train_seconds=seconds, teacher_path="cache" if context.teacher is not None else "none")
    spec = SelectorSpec.from_config(config)
    data = context.data
    selector = build_selector(spec, in_channels=data.channels, image_size=data.image_size, mean=data.mean,
                              std=data.std).to(context.device)
    metrics.update(train_selector(selector, students, context.train_images, context.train_labels, spec=spec,
                                  policy=context.policy))
    routed = RoutedPair(students[0], students[1], selector).eval()
    metrics.update(measure_pair(routed, context))
    metrics["students"] = [_describe(s) for s in routed.students]
    weights = save_checkpoint(work_dir / "student.pt", routed, family="pair", knobs={}, kind="pair",
                              num_classes=data.num_classes, in_channels=data.channels, image_size=data.image_size,
                              mean=data.mean, std=data.std, pair=pair_payload(routed), config=config.to_json(),
                              accuracy=metrics["test_accuracy"], validation_accuracy=metrics["accuracy"])
    metrics.update(weights_path=str(weights), trial_seconds=time.perf_counter() - started,
                   device=str(context.device), compression="none", **environment(context.device))
    return metrics


def _load_student(path: Path, context: Any) -> nn.Module:
    payload = load_checkpoint(path)
    if payload.get("compressed_module") is not None or payload.get("pair") is not None:
        raise AutokdError(f"student {path} is compressed or a pair; a reuse pair takes plain students",
                          "reuse only uncompressed single trials")
    net = network_from_checkpoint(payload, source=f"student {path}")
    return deployable(net, tuple(payload["mean"]), tuple(payload["std"])).to(context.device).eval()


def _describe(model: nn.Module) -> str:
    net = model[-1] if isinstance(model, nn.Sequential) else model
    knobs = ",".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in net.knobs.items())
    return f"{net.family}({knobs})"
