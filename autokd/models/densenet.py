"""DenseNet-BC for CIFAR (Huang et al. 2017, section 3 "Implementation Details").

A 3x3 stem to 2*growth channels, dense blocks of bottleneck layers (BN-ReLU-Conv1x1 to 4*growth,
BN-ReLU-Conv3x3 to growth, concatenated to the input), transitions (BN-ReLU-Conv1x1 with
compression 0.5, AvgPool2d(2)) between blocks, then BN-ReLU, global average pool, linear. The
transition's pool is left out when the map is already 1x1.

* ``densenet``: three blocks of ``block_layers`` layers; depth 6*block_layers + 4 (40 at the
  defaults).
* ``densenet121``: kuangliu/pytorch-cifar's DenseNet-121, blocks of 6, 12, 24, 16 layers
  (6,956,298 params at growth 32 and 10 classes).
"""

from __future__ import annotations

import torch
from torch import nn


class Bottleneck(nn.Module):
    def __init__(self, in_planes: int, growth: int):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, 4 * growth, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(4 * growth)
        self.conv2 = nn.Conv2d(4 * growth, growth, 3, padding=1, bias=False)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(self.relu(self.bn1(x)))
        out = self.conv2(self.relu(self.bn2(out)))  # (N, growth, H, W)
        return torch.cat([out, x], 1)


class Transition(nn.Module):
    def __init__(self, in_planes: int, out_planes: int, pool: bool):
        super().__init__()
        self.bn = nn.BatchNorm2d(in_planes)
        self.conv = nn.Conv2d(in_planes, out_planes, 1, bias=False)
        self.relu = nn.ReLU()
        self.pool = nn.AvgPool2d(2) if pool else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.conv(self.relu(self.bn(x))))


class DenseNet(nn.Module):
    """Stem conv, one dense block per entry of ``block_layers`` (its layer count), pool, linear."""

    def __init__(
        self, *, growth_rate: int, block_layers: list[int], num_classes: int, in_channels: int, image_size: int,
    ):
        super().__init__()
        planes, size = 2 * growth_rate, image_size
        self.conv1 = nn.Conv2d(in_channels, planes, 3, padding=1, bias=False)
        blocks: list[nn.Module] = []
        for i, n in enumerate(block_layers):
            layers = []
            for _ in range(n):
                layers.append(Bottleneck(planes, growth_rate))
                planes += growth_rate
            blocks.append(nn.Sequential(*layers))
            if i < len(block_layers) - 1:
                out_planes = planes // 2
                blocks.append(Transition(planes, out_planes, pool=size >= 2))
                size = size // 2 if size >= 2 else size
                planes = out_planes
        self.features = nn.Sequential(*blocks)
        self.bn = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(planes, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.features(self.conv1(x))
        out = self.relu(self.bn(out))  # (N, C, h, w)
        out = self.pool(out).flatten(1)  # (N, C)
        return self.linear(out)


def hint_layer(net: DenseNet) -> nn.Module:
    """FitNets hint: the output of the second dense block."""
    return net.features[2]


def last_blocks(net: DenseNet) -> list[nn.Module]:
    """The last dense layer and the final BN, then the classifier."""
    return [net.features[-1][-1], net.bn, net.linear]


def build_densenet(*, num_classes: int, in_channels: int, image_size: int, growth_rate: int, block_layers: int) -> nn.Module:
    return DenseNet(
        growth_rate=growth_rate, block_layers=[block_layers] * 3,
        num_classes=num_classes, in_channels=in_channels, image_size=image_size,
    )


def build_densenet121(*, num_classes: int, in_channels: int, image_size: int, growth_rate: int) -> nn.Module:
    return DenseNet(
        growth_rate=growth_rate, block_layers=[6, 12, 24, 16],
        num_classes=num_classes, in_channels=in_channels, image_size=image_size,
    )
