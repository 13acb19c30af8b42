"""Distillation losses as pure functions, and the teacher (single network or weighted ensemble).

Losses (all return a scalar mean over the batch):

- ``kd``: Hinton, Vinyals & Dean 2015, "Distilling the Knowledge in a Neural Network".
  ``alpha * T^2 * KL(softmax(t/T) || softmax(s/T)) + (1 - alpha) * CE(s, y)``.
  The ``T^2`` keeps the soft-target gradients on the scale of the hard-label ones. With
  ``weighting='distiller'`` the same losses are weighted as Intel's Distiller does
  (``KnowledgeDistillationPolicy``): ``student_weight * CE(s, y) + distill_weight * KL`` with no
  ``T^2`` anywhere, so "alpha 0.5, T 1.5" from a Distiller paper means
  ``student_weight = distill_weight = 0.5, temperature = 1.5`` (:func:`distiller_kd_loss`).
- ``fm``: function matching, Beyer et al. 2022, "Knowledge distillation: A good teacher is
  patient and consistent". KL only, no labels; teacher and student see the same (mixed-up,
  augmented) batch.
- ``hint``: FitNets, Romero et al. 2015. ``kd`` plus ``hint_weight * MSE(adapter(f_s), f_t)`` on one
  intermediate feature map, through a learned 1x1 adapter.
- ``fitnets``: FitNets as published, in two stages: ``hint_epochs`` epochs of ``hint_loss`` alone,
  training only the student's layers up to its hint layer and the adapter (the regressor), then
  ``kd`` on the whole student (:func:`autokd.train.train_model`).
- ``none``: cross-entropy on labels only: the baseline every study can compare against.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn


def tempered_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """``KL(softmax(t/T) || softmax(s/T))``, summed over classes and averaged over the batch."""
    log_p_student = F.log_softmax(student_logits.float() / temperature, dim=1)  # (B, K)
    log_p_teacher = F.log_softmax(teacher_logits.float() / temperature, dim=1)  # (B, K)
    return F.kl_div(log_p_student, log_p_teacher, reduction="batchmean", log_target=True)


def soft_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """``T^2 * KL(softmax(t/T) || softmax(s/T))``, averaged over the batch."""
    return tempered_kl(student_logits, teacher_logits, temperature) * temperature**2


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor, *,
            alpha: float, temperature: float, label_smoothing: float = 0.0) -> torch.Tensor:
    """Hinton KD: ``alpha * T^2 * KL + (1 - alpha) * CE``.

    Example:
        >>> s = torch.tensor([[1.0, 0.0]]); t = torch.tensor([[0.0, 1.0]]); y = torch.tensor([0])
        >>> round(kd_loss(s, t, y, alpha=0.0, temperature=1.0).item(), 4)  # plain CE
        0.3133
    """
    hard = F.cross_entropy(student_logits.float(), labels, label_smoothing=label_smoothing)
    if alpha == 0.0:
        return hard
    return alpha * soft_kl(student_logits, teacher_logits, temperature) + (1.0 - alpha) * hard


def distiller_kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor, *,
                      student_weight: float, distill_weight: float, temperature: float,
                      label_smoothing: float = 0.0) -> torch.Tensor:
    """KD weighted as Distiller's ``KnowledgeDistillationPolicy``: ``sw * CE + dw * KL`` (no ``T^2``).

    Distiller (IntelLabs/distiller, ``distiller/knowledge_distillation.py``) adds
    ``distill_weight * KL(softmax(t/T) || softmax(s/T))`` (batch mean) to ``student_weight`` times
    the script's own cross-entropy at ``T = 1``; neither weight need sum to 1 with the other. One
    difference is deliberate: Distiller computes the KL on a detached copy of the student's logits
    (``out.new_tensor(out, requires_grad=True)``, its issue #234), so there no gradient reaches the
    student from it; here it does, as in the papers that report Distiller's settings.

    Example:
        >>> s = torch.tensor([[1.0, 0.0]]); t = torch.tensor([[0.0, 1.0]]); y = torch.tensor([0])
        >>> round(distiller_kd_loss(s, t, y, student_weight=1.0, distill_weight=0.0, temperature=2.0).item(), 4)
        0.3133
    """
    hard = F.cross_entropy(student_logits.float(), labels, label_smoothing=label_smoothing)
    if distill_weight == 0.0:
        return student_weight * hard
    return student_weight * hard + distill_weight * tempered_kl(student_logits, teacher_logits, temperature)


def fm_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, *, temperature: float = 1.0) -> torch.Tensor:
    """Function matching: KL between teacher and student on the same view, no labels."""
    return soft_kl(student_logits, teacher_logits, temperature)


def hint_loss(student_features: torch.Tensor, teacher_features: torch.Tensor, adapter: nn.Module) -> torch.Tensor:
    """FitNets hint: MSE between the adapted student feature map and the teacher's.

    The adapter is a 1x1 conv from the student's channels to the teacher's; spatial sizes are
    matched by adaptive average pooling to the teacher's map.
    """
    adapted = adapter(student_features)  # (B, C_t, H_s, W_s)
    if adapted.shape[-2:] != teacher_features.shape[-2:]:
        adapted = F.adaptive_avg_pool2d(adapted, teacher_features.shape[-2:])
    return F.mse_loss(adapted.float(), teacher_features.float())


def ce_loss(student_logits: torch.Tensor, labels: torch.Tensor, *, label_smoothing: float = 0.0) -> torch.Tensor:
    return F.cross_entropy(student_logits.float(), labels, label_smoothing=label_smoothing)


def make_hint_adapter(student_channels: int, teacher_channels: int) -> nn.Module:
    return nn.Conv2d(student_channels, teacher_channels, kernel_size=1, bias=False)


# --------------------------------------------------------------------------- teacher


@dataclass
class TeacherMember:
    """One trained network with the input it takes: its normalisation and, where it is not the data's, its side."""

    model: nn.Module
    mean: tuple[float, ...]
    std: tuple[float, ...]
    accuracy: float | None = None
    description: str = ""
    image_size: int | None = None  # None: the data's own


class TeacherInput(nn.Module):
    """A teacher network's own input from the batch the student sees (the same augmented view).

    ``(B, C, H, W)`` floats in [0, 1] become what the network reads: grey copied to the three
    channels of an RGB network, resized (bilinear, antialiased when shrinking) to ``image_size``,
    then normalised by the network's ``mean`` and ``std``.
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float], image_size: int | None = None):
        super().__init__()
        self.register_buffer("mean", torch.tensor(tuple(mean), dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(tuple(std), dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.image_size = image_size

    def forward(self, x01: torch.Tensor) -> torch.Tensor:
        if x01.shape[1] == 1 and self.mean.shape[1] == 3:
            x01 = x01.expand(-1, 3, -1, -1)  # (B, 3, H, W)
        side = self.image_size
        if side and tuple(x01.shape[-2:]) != (side, side):
            x01 = F.interpolate(x01, size=(side, side), mode="bilinear", align_corners=False,
                                antialias=side < x01.shape[-1])  # (B, C, side, side)
        return (x01 - self.mean) / self.std


class ClassOrder(nn.Module):
    """A network whose outputs are reordered to the data's classes: ``logits[:, index]``."""

    def __init__(self, net: nn.Module, index: Sequence[int]):
        super().__init__()
        self.net = net
        self.register_buffer("index", torch.tensor(list(index), dtype=torch.long), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)[:, self.index]  # (B, K)

    @property
    def hint_layer(self) -> nn.Module:
        return self.net.hint_layer


class Teacher(nn.Module):
    """A teacher: one network, or an ensemble of several combined in one of three ways.

    - AvNet: a weighted average of the members' logits (equal weights unless given or fitted);
    - ``head``: a linear layer over the members' concatenated logits (:func:`fit_joint_head`);
    - JointNet (``joint``): a linear layer over the members' concatenated penultimate features,
      the inputs of their classifiers, trained with the members' last blocks by
      :func:`jointnet_loss` (:func:`autokd.teacher.train_jointnet`).

    Inputs are uint8 images scaled to [0, 1] floats (``x / 255``); each member applies its own
    normalisation, so members trained with different statistics still mix correctly.
    """

    def __init__(self, members: Sequence[TeacherMember], weights: Sequence[float] | None = None,
                 head: nn.Linear | None = None, joint: nn.Linear | None = None):
        super().__init__()
        if head is not None and joint is not None:
            raise ValueError("a teacher combines its members with a logit head or a JointNet head, not both")
        self.members = nn.ModuleList(m.model for m in members)
        self.head = head
        self.joint = joint
        self.info = list(members)
        weights = list(weights) if weights is not None else [1.0 / len(members)] * len(members)
        total = sum(weights)
        self.weights = [w / total for w in weights]
        self.inputs = nn.ModuleList(TeacherInput(m.mean, m.std, m.image_size) for m in members)
        self.heads = [_classifier_or_none(m.model) for m in members]  # None: a file network, no features
        self.eval()

    def train(self, mode: bool = True) -> "Teacher":
        return super().train(False)  # distilling never updates a teacher's batch-norm statistics

    def member_logits(self, x01: torch.Tensor) -> list[torch.Tensor]:
        return self.member_outputs(x01)[0]

    def member_outputs(self, x01: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Each member's logits (B, K) and the features its classifier reads (B, D_i); with grad."""
        logits, features = [], []
        for model, given, head in zip(self.members, self.inputs, self.heads):
            seen: list[torch.Tensor] = []
            hook = head.register_forward_pre_hook(lambda m, inputs: seen.append(inputs[0])) if head else None
            try:
                logits.append(model(given(x01)).float())
            finally:
                if hook is not None:
                    hook.remove()
            features.append(seen[-1].float() if seen else None)
        return logits, features

    def combine(self, logits: Sequence[torch.Tensor], features: Sequence[torch.Tensor]) -> torch.Tensor:
        """The teacher's logits from its members' outputs. (B, K)"""
        if self.joint is not None:
            return self.joint(torch.cat(list(features), 1))  # (B, sum D_i) -> (B, K)
        if self.head is not None:
            return self.head(torch.cat(list(logits), 1))  # (B, M*K) -> (B, K)
        return sum(w * z for w, z in zip(self.weights, logits))

    @torch.no_grad()
    def forward(self, x01: torch.Tensor) -> torch.Tensor:
        return self.combine(*self.member_outputs(x01))

    @property
    def hint_layer(self) -> nn.Module:
        return self.members[0].hint_layer


def _classifier_or_none(net: nn.Module) -> nn.Linear | None:
    try:
        return final_linear(net)
    except ValueError:
        return None


def final_linear(net: nn.Module) -> nn.Linear:
    """A network's classifier: its last ``nn.Linear``, whose input is the network's penultimate features."""
    linears = [m for m in net.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError(f"{type(net).__name__} has no linear classifier")
    return linears[-1]


def jointnet_loss(member_logits: Sequence[torch.Tensor], joint_logits: torch.Tensor, labels: torch.Tensor, *,
                  label_smoothing: float = 0.0) -> torch.Tensor:
    """JointNet's training loss: ``CE(member 1) + ... + CE(member M) + CE(joint)``, each a batch mean.

    Example:
        >>> z = torch.tensor([[1.0, 0.0]]); y = torch.tensor([0])
        >>> round(jointnet_loss([z, z], z, y).item(), 4)  # three times plain CE
        0.9398
    """
    return sum(ce_loss(z, labels, label_smoothing=label_smoothing) for z in [*member_logits, joint_logits])


def fit_ensemble_weights(member_logits: Sequence[torch.Tensor], labels: torch.Tensor, *, steps: int = 200,
                         seed: int = 0) -> list[float]:
    """Weights (summing to 1) that maximise validation accuracy of the averaged logits.

    Optimises the cross-entropy of the softmax-weighted average (a smooth proxy of accuracy)
    with Adam, from a seeded start; deterministic for a given seed.
    """
    gen = torch.Generator().manual_seed(seed)
    stacked = torch.stack([z.float() for z in member_logits])  # (M, N, K)
    raw = (0.01 * torch.randn(len(member_logits), generator=gen)).requires_grad_()
    opt = torch.optim.Adam([raw], lr=0.05)
    for _ in range(steps):
        opt.zero_grad()
        w = torch.softmax(raw, 0)
        loss = F.cross_entropy((w[:, None, None] * stacked).sum(0), labels)
        loss.backward()
        opt.step()
    return [float(v) for v in torch.softmax(raw.detach(), 0)]


def fit_joint_head(member_logits: Sequence[torch.Tensor], labels: torch.Tensor, *, steps: int = 300,
                   lr: float = 0.01, weight_decay: float = 1e-3, seed: int = 0) -> nn.Linear:
    """A linear layer over the members' concatenated logits, fitted by cross-entropy (members frozen).

    Starts from the plain average (weight ``[I/M, ..., I/M]``, bias 0), so it begins where the
    equal-weight ensemble is and full-batch Adam only moves it as far as the data asks;
    deterministic for a given seed.

    Example:
        >>> head = fit_joint_head([torch.randn(50, 3), torch.randn(50, 3)], torch.randint(0, 3, (50,)))
        >>> head.weight.shape
        torch.Size([3, 6])
    """
    torch.manual_seed(seed)
    m, k = len(member_logits), member_logits[0].shape[1]
    x = torch.cat([z.float() for z in member_logits], 1)  # (N, M*K)
    head = nn.Linear(m * k, k)
    with torch.no_grad():
        head.weight.copy_(torch.eye(k).repeat(1, m) / m)
        head.bias.zero_()
    opt = torch.optim.Adam(head.parameters(), lr=lr, weight_decay=weight_decay)
    for _ in range(steps):
        opt.zero_grad()
        F.cross_entropy(head(x), labels).backward()
        opt.step()
    return head.requires_grad_(False).eval()
