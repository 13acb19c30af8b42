"""Training: device-resident uint8 data, a seeded augmentation schedule, the distillation loop.

Augmentation follows a schedule that depends only on (policy seed, epoch, image index), never on
the trial, so the teacher's outputs for an epoch are the same for every trial of a study and can
be computed once (:class:`TeacherLogitCache`). The order in which a trial visits images is its
own (``TrainSpec.seed``). Everything runs on whatever device the tensors live on: CUDA when
present, else CPU.

One loop trains everything (:func:`run_epochs`): students (:func:`train_model`), FitNets' hint
stage (:func:`fit_hint_stage`) and JointNet (:func:`autokd.teacher.train_jointnet`). Training and
prediction call a ``pace`` hook before each step or batch (default: nothing); callers that must
give way to a timed measurement pass one (:func:`autokd.hostlock.paced`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Protocol

import torch
import torch.nn.functional as F
from torch import nn

from autokd.config import DistillSpec, TrainSpec
from autokd.distill import Teacher, ce_loss, distiller_kd_loss, fm_loss, hint_loss, kd_loss, make_hint_adapter


def pick_device(prefer: str | None = None) -> torch.device:
    """CUDA when present (or asked for and present), else CPU: GPU paths fall back cleanly."""
    if prefer == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda")


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Torch intra-op threads set to ``threads`` for the duration (``None``: left as they are), then restored."""
    before = torch.get_num_threads()
    if threads is not None and threads != before:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


#: A step hook: training and prediction call it before every step or batch (to give way to a
#: measurement of the same study elsewhere on the host, :func:`autokd.hostlock.paced`).
Pace = Callable[[], None]


def no_pace() -> None:
    """The default :data:`Pace`: nothing to give way to."""


# --------------------------------------------------------------------------- augmentation


@dataclass(frozen=True)
class AugmentPolicy:
    """Random crop with zero padding, optional horizontal flip, optional per-sample mixup.

    ``inception`` replaces the padded crop by Inception's random-resized crop (Szegedy et al.
    2015, as function matching uses it, Beyer et al. 2022): a box of 8-100% of the image's area
    and aspect ratio 3/4 to 4/3 (each side at most the image's), resized back to the full size.
    """

    crop_pad: int = 0
    flip: bool = False
    mixup: bool = False
    seed: int = 0
    inception: bool = False

    def key(self) -> str:
        key = f"pad{self.crop_pad}-flip{int(self.flip)}-mix{int(self.mixup)}-seed{self.seed}"
        return key + "-inception" if self.inception else key  # unchanged keys for existing caches


@dataclass(frozen=True)
class EpochViews:
    """The random choices of one epoch, per image index."""

    shifts: torch.Tensor  # (N, 2) int64 in [-pad, pad]
    flips: torch.Tensor  # (N,) bool
    partner: torch.Tensor | None  # (N,) int64 mixup partner
    lam: torch.Tensor | None  # (N,) float mixup weight of the image itself
    boxes: torch.Tensor | None = None  # (N, 4) inception crop: centre x, y and width, height as fractions

    def to(self, device: torch.device) -> "EpochViews":
        move = lambda t: None if t is None else t.to(device)  # noqa: E731
        return EpochViews(move(self.shifts), move(self.flips), move(self.partner), move(self.lam), move(self.boxes))


def epoch_views(policy: AugmentPolicy, n_images: int, epoch: int) -> EpochViews:
    gen = torch.Generator().manual_seed(policy.seed * 1_000_003 + epoch)
    p = policy.crop_pad
    shifts = torch.randint(-p, p + 1, (n_images, 2), generator=gen)
    flips = torch.rand(n_images, generator=gen) < 0.5 if policy.flip else torch.zeros(n_images, dtype=torch.bool)
    partner = lam = None
    if policy.mixup:
        partner = torch.randperm(n_images, generator=gen)
        lam = torch.rand(n_images, generator=gen)  # Beta(1, 1)
    boxes = None
    if policy.inception:  # drawn last, so the other choices match a policy without it
        area = 0.08 + 0.92 * torch.rand(n_images, generator=gen)
        ratio = torch.exp(math.log(3 / 4) + math.log(16 / 9) * torch.rand(n_images, generator=gen))
        w, h = (area * ratio).sqrt().clamp(max=1.0), (area / ratio).sqrt().clamp(max=1.0)
        cx = w / 2 + (1 - w) * torch.rand(n_images, generator=gen)
        cy = h / 2 + (1 - h) * torch.rand(n_images, generator=gen)
        boxes = torch.stack([cx, cy, w, h], 1)  # (N, 4)
    return EpochViews(shifts, flips, partner, lam, boxes)


def _resized_crop(x: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """Per-sample crop of ``boxes`` (centre x, y, width, height in [0, 1]) resized to x's size, bilinear."""
    theta = torch.zeros(len(x), 2, 3, device=x.device, dtype=x.dtype)  # (B, 2, 3) output -> input coords
    theta[:, 0, 0], theta[:, 1, 1] = boxes[:, 2], boxes[:, 3]
    theta[:, 0, 2], theta[:, 1, 2] = 2 * boxes[:, 0] - 1, 2 * boxes[:, 1] - 1
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)  # (B, H, W, 2)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def _crop_flip(x: torch.Tensor, shifts: torch.Tensor, flips: torch.Tensor | None, pad: int) -> torch.Tensor:
    """Per-sample translated crop of a zero-padded batch, then per-sample flip. x: (B, C, H, W).

    Whether to flip is decided by the policy (``flips=None``: never), not by looking at the
    tensor, so a training step never waits on the device.
    """
    if pad > 0:
        b, c, h, w = x.shape
        padded = F.pad(x, (pad, pad, pad, pad))  # (B, C, H+2p, W+2p)
        rows = torch.arange(h, device=x.device)[None, :] + (shifts[:, 0:1] + pad)  # (B, H)
        cols = torch.arange(w, device=x.device)[None, :] + (shifts[:, 1:2] + pad)  # (B, W)
        padded = padded.gather(2, rows[:, None, :, None].expand(b, c, h, w + 2 * pad))
        x = padded.gather(3, cols[:, None, None, :].expand(b, c, h, w))
    if flips is not None:
        x = torch.where(flips[:, None, None, None], x.flip(3), x)
    return x


def augmented_batch(images: torch.Tensor, index: torch.Tensor, views: EpochViews, policy: AugmentPolicy) -> torch.Tensor:
    """Floats in [0, 1] of the images at ``index`` as the epoch's schedule views them. (B, C, H, W)

    Teacher and student are always given this same batch (mixup and crops included), which is
    what function matching's "consistent" teaching asks for.
    """
    def view(i: torch.Tensor) -> torch.Tensor:
        x = images[i].float() / 255.0
        flips = views.flips[i] if policy.flip else None
        if views.boxes is not None:
            return _crop_flip(_resized_crop(x, views.boxes[i]), views.shifts[i], flips, 0)
        return _crop_flip(x, views.shifts[i], flips, policy.crop_pad)

    x = view(index)
    if views.partner is not None:
        lam = views.lam[index][:, None, None, None]
        x = lam * x + (1.0 - lam) * view(views.partner[index])
    return x


# --------------------------------------------------------------------------- teacher cache


class TeacherLogitCache:
    """Teacher logits for (epoch, image) under a shared augmentation schedule, computed once.

    Stored as fp16 files beside the study (``{dir}/{teacher_id}-{policy}-e{epoch}.pt``) so every
    trial, in any process, reuses them; a trial that runs more epochs extends the cache.
    """

    def __init__(self, teacher: Teacher, images: torch.Tensor, policy: AugmentPolicy, teacher_id: str,
                 directory: Path | None):
        self.teacher = teacher
        self.images = images
        self.policy = policy
        self.teacher_id = teacher_id
        self.directory = directory
        self.hits = 0
        self.misses = 0
        self._memory: dict[int, torch.Tensor] = {}

    def _path(self, epoch: int) -> Path | None:
        if self.directory is None:
            return None
        return self.directory / f"{self.teacher_id}-{self.policy.key()}-n{len(self.images)}-e{epoch}.pt"

    def epoch_logits(self, epoch: int, views: EpochViews, pace: Pace = no_pace) -> torch.Tensor:
        if epoch in self._memory:
            self.hits += 1
            return self._memory[epoch]
        path = self._path(epoch)
        logits = None
        if path is not None and path.exists():
            try:
                logits = torch.load(path, weights_only=True, map_location=self.images.device)
                self.hits += 1
            except Exception:  # a torn or corrupt cache file is recomputed, never trusted
                logits = None
        if logits is None or logits.shape[0] != len(self.images):
            self.misses += 1
            logits = predict_views(self.teacher, self.images, views, self.policy, pace=pace).half()
            if path is not None:
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_suffix(f".tmp{os.getpid()}")
                torch.save(logits.cpu(), tmp)
                os.replace(tmp, path)
        self._memory = {epoch: logits}  # keep one epoch resident
        return logits


@torch.inference_mode()
def predict_views(model: nn.Module, images: torch.Tensor, views: EpochViews, policy: AugmentPolicy,
                  batch_size: int = 512, pace: Pace = no_pace) -> torch.Tensor:
    """Outputs of ``model`` (taking [0, 1] input) on every image as the schedule views it. (N, K)"""
    outs = []
    for start in range(0, len(images), batch_size):
        pace()
        index = torch.arange(start, min(start + batch_size, len(images)), device=images.device)
        with autocast(images.device):
            outs.append(model(augmented_batch(images, index, views, policy)).float())
    return torch.cat(outs)


@torch.inference_mode()
def predict(model: nn.Module, images: torch.Tensor, batch_size: int = 512, pace: Pace = no_pace) -> torch.Tensor:
    """Logits of ``model`` (taking [0, 1] input) on un-augmented uint8 images. (N, K)"""
    model.eval()
    outs = []
    for start in range(0, len(images), batch_size):
        pace()
        x = images[start:start + batch_size].float() / 255.0
        with autocast(images.device):
            outs.append(model(x).float())
    return torch.cat(outs)


def autocast(device: torch.device):
    """bf16 autocast on CUDA; on CPU a disabled autocast (fp32)."""
    return torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else torch.autocast("cpu", enabled=False)


# --------------------------------------------------------------------------- the training loop


#: The loss of one batch, given the indices of its images in the training set.
BatchLoss = Callable[[torch.Tensor], torch.Tensor]
#: An epoch's setup: ``(epoch, views) -> BatchLoss`` (train modes, teacher logits of the epoch).
EpochLoss = Callable[[int, EpochViews], BatchLoss]


def _optimizer(params: list[nn.Parameter], train: TrainSpec) -> torch.optim.Optimizer:
    """``train.optimizer`` over ``params``: AdamW, or SGD with Nesterov momentum; fused on CUDA."""
    fused = {"fused": True} if params and params[0].is_cuda else {}
    if train.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=train.lr, weight_decay=train.weight_decay, **fused)
    if train.optimizer == "sgd":
        return torch.optim.SGD(params, lr=train.lr, momentum=0.9, nesterov=True, weight_decay=train.weight_decay,
                               **fused)
    raise ValueError(f"unknown optimizer {train.optimizer!r}; use sgd or adamw")


def _scheduler(optimizer: torch.optim.Optimizer, train: TrainSpec, epoch_steps: int):
    """``train.schedule`` over ``train.epochs`` epochs of ``epoch_steps`` steps, stepped every step."""
    total = max(1, train.epochs * epoch_steps)
    if train.schedule == "onecycle" and total < 5:  # OneCycleLR divides by zero when its warm-up is < 2 steps
        return torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0)
    if train.schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=train.lr, total_steps=total, pct_start=0.25)
    if train.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total)
    if train.schedule == "step":  # the classic CIFAR schedule: lr / 10 at 50% and again at 75% of training
        return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=[total // 2, 3 * total // 4], gamma=0.1)
    raise ValueError(f"unknown schedule {train.schedule!r}; use onecycle, cosine or step")


def steps_per_epoch(n_images: int, batch_size: int) -> int:
    """Full batches per epoch (at least one); the last partial batch is dropped."""
    return max(1, n_images // batch_size)


def optimization(params: list[nn.Parameter], train: TrainSpec, n_images: int):
    """``(optimizer, scheduler)`` from ``train`` for a run over ``n_images`` training images."""
    optimizer = _optimizer(params, train)
    return optimizer, _scheduler(optimizer, train, steps_per_epoch(n_images, train.batch_size))


def run_epochs(images: torch.Tensor, epoch_loss: EpochLoss, *, optimizer: torch.optim.Optimizer, scheduler: Any,
               batch_size: int, policy: AugmentPolicy, order_gen: torch.Generator, epochs: range,
               end_epoch: Callable[[int, float], None] | None = None, pace: Pace = no_pace,
               diverged: str = "training diverged at epoch {epoch} (loss {loss})") -> list[float]:
    """The training loop: ``epochs`` of steps over ``images`` in the order ``order_gen`` draws.

    Each epoch draws the policy's augmentation views, asks ``epoch_loss(epoch, views)`` for the
    epoch's batch loss, visits the images in a fresh permutation and steps ``optimizer`` and
    ``scheduler`` once per full batch, calling ``pace()`` before each step. Then
    ``end_epoch(epoch, mean loss)``; a mean loss that is not finite raises ``FloatingPointError``
    (``diverged`` formatted with the 1-based epoch and the loss). An ``epochs`` range starting
    later (a resumed run) draws the permutations of the skipped epochs first, so the visiting
    order is the same. Returns each epoch's mean loss.
    """
    device, n = images.device, len(images)
    steps = steps_per_epoch(n, batch_size)
    for _ in range(epochs.start):  # keep the visiting order identical on resume
        torch.randperm(n, generator=order_gen)
    means = []
    for epoch in epochs:
        views = epoch_views(policy, n, epoch).to(device)
        batch_loss = epoch_loss(epoch, views)
        order = torch.randperm(n, generator=order_gen).to(device)
        total = torch.zeros((), device=device)
        for step in range(steps):
            pace()
            loss = batch_loss(order[step * batch_size:(step + 1) * batch_size])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            total += loss.detach()
        means.append(float(total) / steps)
        if not math.isfinite(means[-1]):
            raise FloatingPointError(diverged.format(epoch=epoch + 1, loss=means[-1]))
        if end_epoch is not None:
            end_epoch(epoch, means[-1])
    return means


# --------------------------------------------------------------------------- students


@dataclass
class TrainResult:
    history: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0
    teacher_path: str = "none"  # "cache" | "live" | "none": how teacher outputs were obtained
    hint_history: list[float] = field(default_factory=list)  # fitnets stage 1: mean hint MSE per epoch
    compile_seconds: float = 0.0  # first compiled step, excluded from ``seconds``


EpochCallback = Callable[[int, dict[str, float]], None]


class Checkpointer(Protocol):
    """Keeps the last finished epoch (``autokd.checkpoint.EpochCheckpointer``)."""

    def save(self, epoch: int, model: nn.Module, optimizer: Any, scheduler: Any) -> Any: ...


@contextlib.contextmanager
def channels_last_training(model: nn.Module) -> Iterator[Callable[[torch.Tensor], torch.Tensor]]:
    """``model``'s 4-D weights in channels_last for the scope (yields its forward), contiguous after it.

    oneDNN's convolution, pooling and batch-norm kernels run faster on channels-last tensors: the
    zoo's training steps ran 1.03-1.85x faster on one CPU thread, 0.96-1.57x on two
    (``bench/channels_last.py``), and CUDA's tensor cores want the layout too. The model leaves
    contiguous, which safetensors, exports and a fresh model loading its state dict expect.

    A network whose forward cannot take the layout (a ``.view`` of a conv output, say) fails its
    first forward; that forward then runs again with the model contiguous, which it stays (its
    batch-norm statistics have seen that batch twice).
    """
    model.to(memory_format=torch.channels_last)
    checked = False

    def forward(x: torch.Tensor) -> torch.Tensor:
        nonlocal checked
        if checked:
            return model(x)
        try:
            out = model(x)
        except RuntimeError:
            model.to(memory_format=torch.contiguous_format)
            out = model(x)
        checked = True
        return out

    try:
        yield forward
    finally:
        model.to(memory_format=torch.contiguous_format)


def train_model(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, *, train: TrainSpec,
                distill: DistillSpec, policy: AugmentPolicy, teacher: Teacher | None = None,
                logit_cache: TeacherLogitCache | None = None,
                evaluate: Callable[[nn.Module], float] | None = None,
                on_epoch: EpochCallback | None = None, checkpointer: Checkpointer | None = None,
                resume: dict | None = None, compile_model: bool = False, pace: Pace = no_pace) -> TrainResult:
    """Train ``model`` (which takes [0, 1] input) on device-resident uint8 ``images``.

    With ``distill.loss`` in kd/fm/hint/fitnets a ``teacher`` is required. Teacher outputs come from
    ``logit_cache`` when given and the loss needs logits only (kd, fm, fitnets' stage 2), else the
    teacher runs live. ``fitnets`` first runs ``distill.hint_epochs`` epochs of hint regression
    (:func:`fit_hint_stage`; not counted in ``train.epochs``, not reported to ``on_epoch``).
    ``on_epoch(epoch, metrics)`` is called after each epoch (metrics: loss, accuracy if ``evaluate``);
    it may raise to stop the trial (pruning, Ctrl-C). ``checkpointer.save`` runs after each epoch,
    before ``on_epoch``; ``resume`` (what it saved) continues a run at its next epoch with the
    same optimizer, schedule and visiting order. ``pace()`` runs before every step (and every
    batch of teacher logits). The model trains in channels_last (:func:`channels_last_training`),
    on CUDA with bf16 autocast and a fused optimizer; ``compile_model`` wraps it in ``torch.compile``
    and reports the first (compiling) step separately as ``compile_seconds``.
    """
    with channels_last_training(model) as forward:
        use_cache = _teacher_source(distill, teacher, logit_cache)
        result = TrainResult(teacher_path="cache" if use_cache else ("live" if distill.loss != "none" else "none"))
        if distill.loss == "fitnets" and distill.hint_epochs > 0 and not resume:
            result.hint_history = fit_hint_stage(model, images, teacher, train=train, policy=policy,
                                                 epochs=distill.hint_epochs, pace=pace)
        params = list(model.parameters())
        adapter, features, hooks = None, {}, []
        if distill.loss == "hint":
            adapter, hooks = _attach_hint(model, teacher, images[:2].float() / 255.0, features)
            params += list(adapter.parameters())
        optimizer, scheduler = optimization(params, train, len(images))
        if resume:
            optimizer.load_state_dict(resume["optimizer"])
            scheduler.load_state_dict(resume["scheduler"])
        if compile_model:
            forward, result.compile_seconds = _compiled(model, images[:train.batch_size], optimizer)

        def epoch_loss(epoch: int, views: EpochViews) -> BatchLoss:
            model.train()
            teacher_epoch = logit_cache.epoch_logits(epoch, views, pace) if use_cache else None

            def batch_loss(index: torch.Tensor) -> torch.Tensor:
                x = augmented_batch(images, index, views, policy)
                with autocast(images.device):
                    logits = forward(x)
                    t_logits = None
                    if distill.loss != "none":
                        t_logits = teacher_epoch[index].float() if use_cache else teacher(x)
                    return _loss(distill, train, logits, t_logits, labels[index], adapter, features)
            return batch_loss

        def end_epoch(epoch: int, loss: float) -> None:
            metrics = {"epoch": epoch + 1, "loss": loss}
            if evaluate is not None:
                metrics["accuracy"] = evaluate(model)
            result.history.append(metrics)
            if checkpointer is not None:
                checkpointer.save(epoch, model, optimizer, scheduler)
            if on_epoch is not None:
                on_epoch(epoch, metrics)

        started = time.perf_counter()
        run_epochs(images, epoch_loss, optimizer=optimizer, scheduler=scheduler, batch_size=train.batch_size,
                   policy=policy, order_gen=torch.Generator().manual_seed(train.seed),
                   epochs=range(int(resume["epoch"]) if resume else 0, train.epochs), end_epoch=end_epoch, pace=pace)
        result.seconds = time.perf_counter() - started
        for h in hooks:
            h.remove()
        return result


def _teacher_source(distill: DistillSpec, teacher: Teacher | None, logit_cache: TeacherLogitCache | None) -> bool:
    """Whether the teacher's outputs come from ``logit_cache`` (the loss needs logits only); checks a teacher is given."""
    needs_teacher = distill.loss != "none"
    if needs_teacher and teacher is None:
        raise ValueError(f"loss {distill.loss!r} needs a teacher")
    return needs_teacher and logit_cache is not None and distill.loss in ("kd", "fm", "fitnets")


def _compiled(model: nn.Module, first_batch: torch.Tensor, optimizer: torch.optim.Optimizer) -> tuple[nn.Module, float]:
    """``torch.compile(model)`` after one compiling forward/backward step; returns it and that step's seconds."""
    forward = torch.compile(model)
    started = time.perf_counter()
    with autocast(first_batch.device):
        forward(first_batch.float() / 255.0).float().sum().backward()
    optimizer.zero_grad(set_to_none=True)
    return forward, time.perf_counter() - started


def _loss(distill: DistillSpec, train: TrainSpec, logits: torch.Tensor, t_logits: torch.Tensor | None,
          labels: torch.Tensor, adapter: nn.Module | None, features: dict) -> torch.Tensor:
    if distill.loss == "none":
        return ce_loss(logits, labels, label_smoothing=train.label_smoothing)
    if distill.loss == "fm":
        return fm_loss(logits, t_logits, temperature=distill.temperature)
    if distill.weighting == "distiller":
        loss = distiller_kd_loss(logits, t_logits, labels, student_weight=distill.student_weight,
                                 distill_weight=distill.distill_weight, temperature=distill.temperature,
                                 label_smoothing=train.label_smoothing)
    else:
        loss = kd_loss(logits, t_logits, labels, alpha=distill.alpha, temperature=distill.temperature,
                       label_smoothing=train.label_smoothing)
    if distill.loss == "hint":
        loss = loss + distill.hint_weight * hint_loss(features["student"], features["teacher"], adapter)
    return loss


def _attach_hint(model: nn.Module, teacher: Teacher, probe: torch.Tensor, features: dict):
    """Hooks that store the student's and teacher's hint feature maps; a 1x1 adapter between them."""
    net = model[-1] if isinstance(model, nn.Sequential) else model
    hooks = [net.hint_layer.register_forward_hook(lambda m, i, o: features.__setitem__("student", o)),
             teacher.hint_layer.register_forward_hook(lambda m, i, o: features.__setitem__("teacher", o))]
    was_training = model.training
    model.eval()
    with torch.no_grad():
        model(probe)
        teacher(probe)
    model.train(was_training)
    adapter = make_hint_adapter(features["student"].shape[1], features["teacher"].shape[1]).to(probe.device)
    return adapter, hooks


class _HintReached(Exception):
    """Raised by a forward hook at the hint layer: stage 1 never runs the layers after it."""


def fit_hint_stage(model: nn.Module, images: torch.Tensor, teacher: Teacher, *, train: TrainSpec,
                   policy: AugmentPolicy, epochs: int, pace: Pace = no_pace) -> list[float]:
    """FitNets stage 1 (Romero et al. 2015): regress the teacher's hint layer from the student's.

    Trains the student's layers up to and including its ``hint_layer`` (the "guided" layers)
    and a fresh 1x1 regressor on ``MSE(regressor(f_s), f_t)``; both forward passes stop at the
    hint layer, so later layers, their weights and their batch-norm statistics are untouched.
    Same optimizer, learning rate and visiting order rules as :func:`train_model`; the
    augmentation schedule is the policy's for epochs ``0..epochs-1``. Returns the mean hint
    MSE of each epoch.
    """
    features: dict[str, torch.Tensor] = {}

    def stop(key: str):
        def hook(module, inputs, output):
            features[key] = output
            raise _HintReached
        return hook

    def run_to_hint(net: nn.Module, x: torch.Tensor, key: str) -> torch.Tensor:
        try:
            net(x)
        except _HintReached:
            pass
        return features.pop(key)

    net = model[-1] if isinstance(model, nn.Sequential) else model
    hooks = [net.hint_layer.register_forward_hook(stop("student")),
             teacher.hint_layer.register_forward_hook(stop("teacher"))]
    try:
        probe = images[:2].float() / 255.0
        model.eval()
        with torch.no_grad():
            s_channels = run_to_hint(model, probe, "student").shape[1]
            t_channels = run_to_hint(teacher, probe, "teacher").shape[1]
        regressor = make_hint_adapter(s_channels, t_channels).to(images.device)
        # Parameters after the hint layer get no gradient, and SGD/AdamW leave grad-less ones alone.
        params = list(model.parameters()) + list(regressor.parameters())
        optimizer, scheduler = optimization(params, dataclasses.replace(train, epochs=epochs), len(images))

        def epoch_loss(epoch: int, views: EpochViews) -> BatchLoss:
            model.train()

            def batch_loss(index: torch.Tensor) -> torch.Tensor:
                x = augmented_batch(images, index, views, policy)
                with autocast(images.device):
                    with torch.no_grad():
                        t_features = run_to_hint(teacher, x, "teacher")
                    return hint_loss(run_to_hint(model, x, "student"), t_features, regressor)
            return batch_loss

        return run_epochs(images, epoch_loss, optimizer=optimizer, scheduler=scheduler, batch_size=train.batch_size,
                          policy=policy, order_gen=torch.Generator().manual_seed(train.seed + 1),  # not stage 2's order
                          epochs=range(epochs), pace=pace, diverged="hint regression diverged at epoch {epoch} (MSE {loss})")
    finally:
        for h in hooks:
            h.remove()


def tensor_digest(*tensors: torch.Tensor) -> str:
    """A short content hash, to key caches by what the data is rather than where it came from."""
    h = hashlib.sha1()
    for t in tensors:
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:12]
