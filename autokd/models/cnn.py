"""The 5-layer CNN: three conv blocks and a two-layer MLP head.

Block: Conv3x3(pad 1, bias) -> BN -> ReLU -> MaxPool2d(2), channels 32, 64, 128 (times width).
Head: Flatten -> Linear(C*s*s -> hidden) -> BatchNorm1d -> ReLU -> Linear(hidden -> classes), where
s is the spatial size after the pools (4 for 32px). A pool that would shrink a 1x1 map is left out.
"""

from __future__ import annotations

import torch
from torch import nn

from autokd.models.registry import scaled


class CNN5(nn.Module):
    def __init__(self, *, width: float, hidden: int, num_classes: int, in_channels: int, image_size: int):
        super().__init__()
        blocks, channels, size = [], in_channels, image_size
        for base in (32, 64, 128):
            out = scaled(base, width)
            layers: list[nn.Module] = [nn.Conv2d(channels, out, 3, padding=1), nn.BatchNorm2d(out), nn.ReLU()]
            if size >= 2:
                layers.append(nn.MaxPool2d(2, 2))
                size //= 2
            blocks.append(nn.Sequential(*layers))
            channels = out
        self.features = nn.Sequential(*blocks)
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(channels * size * size, hidden),
            nn.BatchNorm1d(hidden),
            nn.ReLU(),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))  # (N, C, s, s) -> (N, classes)


def hint_layer(net: CNN5) -> nn.Module:
    """FitNets hint: the output of the second conv block."""
    return net.features[1]


def last_blocks(net: CNN5) -> list[nn.Module]:
    """The last conv block and the MLP head."""
    return [net.features[-1], net.classifier]


def build_cnn5(*, num_classes: int, in_channels: int, image_size: int, width: float, hidden: int) -> nn.Module:
    return CNN5(width=width, hidden=hidden, num_classes=num_classes, in_channels=in_channels, image_size=image_size)
