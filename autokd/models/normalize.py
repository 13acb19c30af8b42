"""Input normalisation as a module, so a deployed model (``autokd.checkpoint.deployable``) takes [0, 1] floats."""

from __future__ import annotations

import torch
from torch import nn


class Normalize(nn.Module):
    """``(x01 - mean) / std`` as a module, so exported models take [0, 1] floats."""

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x01: torch.Tensor) -> torch.Tensor:
        return (x01 - self.mean) / self.std
