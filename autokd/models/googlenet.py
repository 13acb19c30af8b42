"""A small GoogLeNet (kuangliu/pytorch-cifar): a 3x3 stem, inception a3, b3, max-pool, a4..e4,
max-pool, a5, b5, global average pool, linear.

``width`` multiplies every branch's channel count (and the stem's 192), each rounded and at least
8; at the default 0.25 the network has about 1/16 of the full model's 6.2M parameters. A max-pool
between stages is left out when the map is already 1x1.
"""

from __future__ import annotations

import torch
from torch import nn

from autokd.models.registry import pooled, scaled

# name -> (n1x1, n3x3red, n3x3, n5x5red, n5x5, pool_planes); "M" is MaxPool2d(3, 2, 1).
CONFIG: list[tuple[str, tuple[int, ...]] | str] = [
    ("a3", (64, 96, 128, 16, 32, 32)),
    ("b3", (128, 128, 192, 32, 96, 64)),
    "M",
    ("a4", (192, 96, 208, 16, 48, 64)),
    ("b4", (160, 112, 224, 24, 64, 64)),
    ("c4", (128, 128, 256, 24, 64, 64)),
    ("d4", (112, 144, 288, 32, 64, 64)),
    ("e4", (256, 160, 320, 32, 128, 128)),
    "M",
    ("a5", (256, 160, 320, 32, 128, 128)),
    ("b5", (384, 192, 384, 48, 128, 128)),
]


def _conv(in_planes: int, out_planes: int, kernel: int) -> list[nn.Module]:
    return [nn.Conv2d(in_planes, out_planes, kernel, padding=kernel // 2), nn.BatchNorm2d(out_planes), nn.ReLU()]


class Inception(nn.Module):
    def __init__(self, in_planes: int, n1x1: int, n3x3red: int, n3x3: int, n5x5red: int, n5x5: int, pool_planes: int):
        super().__init__()
        self.b1 = nn.Sequential(*_conv(in_planes, n1x1, 1))
        self.b2 = nn.Sequential(*_conv(in_planes, n3x3red, 1), *_conv(n3x3red, n3x3, 3))
        # kuangliu's "5x5" branch is two stacked 3x3 convs.
        self.b3 = nn.Sequential(*_conv(in_planes, n5x5red, 1), *_conv(n5x5red, n5x5, 3), *_conv(n5x5, n5x5, 3))
        self.b4 = nn.Sequential(nn.MaxPool2d(3, stride=1, padding=1), *_conv(in_planes, pool_planes, 1))
        self.out_planes = n1x1 + n3x3 + n5x5 + pool_planes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.b1(x), self.b2(x), self.b3(x), self.b4(x)], 1)


class GoogLeNet(nn.Module):
    def __init__(self, *, width: float, num_classes: int, in_channels: int, image_size: int):
        super().__init__()
        stem = scaled(192, width)
        self.pre_layers = nn.Sequential(*_conv(in_channels, stem, 3))
        layers: list[nn.Module] = []
        planes, size = stem, image_size
        for item in CONFIG:
            if item == "M":
                if size >= 2:
                    layers.append(nn.MaxPool2d(3, stride=2, padding=1))
                    size = pooled(size, kernel=3, stride=2, padding=1)
                continue
            _, channels = item
            block = Inception(planes, *(scaled(c, width) for c in channels))
            layers.append(block)
            planes = block.out_planes
        self.layers = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(planes, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.layers(self.pre_layers(x))  # (N, C, h, w)
        out = self.pool(out).flatten(1)  # (N, C)
        return self.linear(out)


def _inceptions(net: GoogLeNet) -> dict[str, Inception]:
    """The inception modules by their name in ``CONFIG``."""
    names = [item[0] for item in CONFIG if item != "M"]
    return dict(zip(names, (m for m in net.layers if isinstance(m, Inception))))


def hint_layer(net: GoogLeNet) -> nn.Module:
    """FitNets hint: inception c4, the middle of the nine modules."""
    return _inceptions(net)["c4"]


def last_blocks(net: GoogLeNet) -> list[nn.Module]:
    """The last inception module and the classifier."""
    return [_inceptions(net)["b5"], net.linear]


def build_googlenet(*, num_classes: int, in_channels: int, image_size: int, width: float) -> nn.Module:
    return GoogLeNet(width=width, num_classes=num_classes, in_channels=in_channels, image_size=image_size)
