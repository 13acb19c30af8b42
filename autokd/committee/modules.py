"""The deployed committees and the routed pair's selector: modules that take [0, 1] images.

:class:`Cascade` and :class:`RoutedPair` return log-probabilities; ``forward_with_route`` also
returns whether each input was deferred. Both run each member only on the rows routed to it, and
export as such to ONNX and TorchScript (:class:`WithRoute` outputs both).
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from autokd.checkpoint import deployable
from autokd.committee.spec import SelectorSpec
from autokd.routing import combined_log_probs, defer_score

# --------------------------------------------------------------------------- selector


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

