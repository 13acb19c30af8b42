"""ResNets for small images.

* ``resnet``: the CIFAR ResNet of He et al. 2016 ("Deep Residual Learning", section 4.2):
  a 3x3 stem, three stages of n BasicBlocks at widths w, 2w, 4w, 6n+2 layers. Shortcuts are
  1x1 conv + BN where the shape changes (option B).
* ``resnet18`` / ``resnet34``: kuangliu/pytorch-cifar's ResNet-18/34: 3x3 stem with stride 1,
  no max-pool, BasicBlocks [2, 2, 2, 2] / [3, 4, 6, 3] at widths w, 2w, 4w, 8w.

A stride-2 stage keeps stride 1 when the feature map is already 1x1 (decided at build time).
"""

from __future__ import annotations

import torch
from torch import nn

from autokd.models.registry import pooled


class BasicBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU()
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    """Stem conv, stages of BasicBlocks (first stage stride 1, the rest stride 2), pool, linear."""

    def __init__(self, blocks: list[int], widths: list[int], *, num_classes: int, in_channels: int, image_size: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU()
        stages, in_planes, size = [], widths[0], image_size
        for i, (n, planes) in enumerate(zip(blocks, widths)):
            stride = 2 if i > 0 and size > 1 else 1
            size = pooled(size, kernel=3, stride=stride, padding=1)
            layers = [BasicBlock(in_planes, planes, stride)]
            layers += [BasicBlock(planes, planes, 1) for _ in range(n - 1)]
            stages.append(nn.Sequential(*layers))
            in_planes = planes
        self.layers = nn.ModuleList(stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(in_planes, num_classes)
        # FitNets hint: the output of the second stage, i.e. the middle of the network.
        self.hint_layer = self.layers[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))  # (N, w, H, W)
        for stage in self.layers:
            out = stage(out)
        out = self.pool(out).flatten(1)  # (N, C)
        return self.linear(out)


CIFAR_DEPTHS = list(range(8, 57, 6))  # 6n+2 for n = 1..9


def build_resnet(*, num_classes: int, in_channels: int, image_size: int, depth: int, width: int) -> nn.Module:
    n = (depth - 2) // 6
    return ResNet(
        [n, n, n], [width, 2 * width, 4 * width],
        num_classes=num_classes, in_channels=in_channels, image_size=image_size,
    )


def _kuangliu(name: str, blocks: list[int]):
    def build(*, num_classes: int, in_channels: int, image_size: int, width: int) -> nn.Module:
        return ResNet(
            blocks, [width, 2 * width, 4 * width, 8 * width],
            num_classes=num_classes, in_channels=in_channels, image_size=image_size,
        )

    build.__name__ = f"build_{name}"
    return build


build_resnet18 = _kuangliu("resnet18", [2, 2, 2, 2])
build_resnet34 = _kuangliu("resnet34", [3, 4, 6, 3])
