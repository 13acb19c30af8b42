"""MobileNetV2 for CIFAR (kuangliu/pytorch-cifar): first conv stride 1, the second stage stride 1.

Width: every channel count (stem 32, the blocks, the last 1x1 conv) is multiplied by ``width``
and rounded to the nearest multiple of 8 (never below 8, never more than 10% under the scaled
value), as in the MobileNetV2 paper's reference code. The last conv follows torchvision: it stays
at 1280 for width <= 1 (a thinner head costs accuracy for little size) and grows for width > 1.
A stride-2 stage keeps stride 1 when the feature map is already 1x1.
"""

from __future__ import annotations

import torch
from torch import nn

from autokd.models.registry import pooled

# (expansion, out_planes, num_blocks, stride)
CONFIG = [(1, 16, 1, 1), (6, 24, 2, 1), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]


def make_divisible(value: float, divisor: int = 8) -> int:
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


class Block(nn.Module):
    """Inverted residual: expand 1x1 -> depthwise 3x3 -> project 1x1; shortcut when stride is 1."""

    def __init__(self, in_planes: int, out_planes: int, expansion: int, stride: int):
        super().__init__()
        self.stride = stride
        planes = expansion * in_planes
        self.conv1 = nn.Conv2d(in_planes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, groups=planes, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out_planes, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_planes)
        self.relu = nn.ReLU()
        self.shortcut = None
        if stride == 1:
            self.shortcut = nn.Sequential()
            if in_planes != out_planes:
                self.shortcut = nn.Sequential(nn.Conv2d(in_planes, out_planes, 1, bias=False), nn.BatchNorm2d(out_planes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.shortcut is not None:  # fixed at build time, so tracing sees one path
            out = out + self.shortcut(x)
        return out


class MobileNetV2(nn.Module):
    def __init__(self, *, width: float, num_classes: int, in_channels: int, image_size: int):
        super().__init__()
        stem = make_divisible(32 * width)
        self.conv1 = nn.Conv2d(in_channels, stem, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(stem)
        self.relu = nn.ReLU()
        blocks, in_planes, size = [], stem, image_size
        for expansion, out, n, stage_stride in CONFIG:
            out_planes = make_divisible(out * width)
            for i in range(n):
                stride = stage_stride if i == 0 and size > 1 else 1
                size = pooled(size, kernel=3, stride=stride, padding=1)
                blocks.append(Block(in_planes, out_planes, expansion, stride))
                in_planes = out_planes
        self.layers = nn.Sequential(*blocks)
        last = make_divisible(1280 * max(1.0, width))
        self.conv2 = nn.Conv2d(in_planes, last, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(last)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(last, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.layers(out)
        out = self.relu(self.bn2(self.conv2(out)))  # (N, 1280, h, w)
        out = self.pool(out).flatten(1)  # (N, 1280)
        return self.linear(out)


def hint_layer(net: MobileNetV2) -> nn.Module:
    """FitNets hint: the end of the 64-channel stage, mid-network."""
    end = 0
    for _, out, n, _ in CONFIG:
        end += n
        if out == 64:
            return net.layers[end - 1]
    raise ValueError("MobileNetV2's CONFIG has no 64-channel stage")


def last_blocks(net: MobileNetV2) -> list[nn.Module]:
    """The final 1x1 conv + BN and the classifier."""
    return [net.conv2, net.bn2, net.linear]


def build_mobilenetv2(*, num_classes: int, in_channels: int, image_size: int, width: float) -> nn.Module:
    return MobileNetV2(width=width, num_classes=num_classes, in_channels=in_channels, image_size=image_size)
