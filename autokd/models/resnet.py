"""ResNets for small images.

* ``resnet``: the CIFAR ResNet of He et al. 2016 ("Deep Residual Learning", section 4.2):
  a 3x3 stem, three stages of n BasicBlocks at widths w, 2w, 4w, 6n+2 layers. Shortcuts are
  1x1 conv + BN where the shape changes (option B; at width 16 that gives the widely quoted
  counts, e.g. ResNet-20 272,474 and ResNet-110 1,730,714 params at 10 classes).
* ``resnet18`` / ``resnet34`` / ``resnet50``: kuangliu/pytorch-cifar's ResNet-18/34/50: 3x3 stem
  with stride 1, no max-pool, stages at widths w, 2w, 4w, 8w of BasicBlocks [2, 2, 2, 2] /
  [3, 4, 6, 3], or of Bottlenecks [3, 4, 6, 3] (expansion 4) for ResNet-50.

A stride-2 stage keeps stride 1 when the feature map is already 1x1 (decided at build time).
"""

from __future__ import annotations

import torch
from torch import nn

from autokd.models.registry import pooled


def _shortcut(in_planes: int, out_planes: int, stride: int) -> nn.Sequential:
    """Identity, or a 1x1 conv + BN where the block changes the shape (option B)."""
    if stride == 1 and in_planes == out_planes:
        return nn.Sequential()
    return nn.Sequential(nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False), nn.BatchNorm2d(out_planes))


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU()
        self.shortcut = _shortcut(in_planes, planes, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class Bottleneck(nn.Module):
    """1x1 reduce to ``planes``, 3x3 (carrying the stride), 1x1 expand to 4 * ``planes``."""

    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride: int):
        super().__init__()
        out_planes = self.expansion * planes
        self.conv1 = nn.Conv2d(in_planes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out_planes, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_planes)
        self.relu = nn.ReLU()
        self.shortcut = _shortcut(in_planes, out_planes, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))  # (N, 4 * planes, H', W')
        return self.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    """Stem conv, stages of ``block`` (first stage stride 1, the rest stride 2), pool, linear."""

    def __init__(
        self, blocks: list[int], widths: list[int], *, num_classes: int, in_channels: int, image_size: int,
        block: type[BasicBlock] | type[Bottleneck] = BasicBlock,
    ):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU()
        stages, in_planes, size = [], widths[0], image_size
        for i, (n, planes) in enumerate(zip(blocks, widths)):
            stride = 2 if i > 0 and size > 1 else 1
            size = pooled(size, kernel=3, stride=stride, padding=1)
            layers = [block(in_planes, planes, stride)]
            in_planes = block.expansion * planes
            layers += [block(in_planes, planes, 1) for _ in range(n - 1)]
            stages.append(nn.Sequential(*layers))
        self.layers = nn.ModuleList(stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(in_planes, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))  # (N, w, H, W)
        for stage in self.layers:
            out = stage(out)
        out = self.pool(out).flatten(1)  # (N, C)
        return self.linear(out)


def hint_layer(net: ResNet) -> nn.Module:
    """FitNets hint: the output of the second stage, i.e. the middle of the network."""
    return net.layers[1]


def last_blocks(net: ResNet) -> list[nn.Module]:
    """The last residual block and the classifier."""
    return [net.layers[-1][-1], net.linear]


# 6n+2 for n = 1..9, plus He et al.'s ResNet-110 (n = 18), a common teacher in published KD work.
CIFAR_DEPTHS = [*range(8, 57, 6), 110]


def build_resnet(*, num_classes: int, in_channels: int, image_size: int, depth: int, width: int) -> nn.Module:
    n = (depth - 2) // 6
    return ResNet(
        [n, n, n], [width, 2 * width, 4 * width],
        num_classes=num_classes, in_channels=in_channels, image_size=image_size,
    )


def _kuangliu(name: str, blocks: list[int], block: type[BasicBlock] | type[Bottleneck] = BasicBlock):
    def build(*, num_classes: int, in_channels: int, image_size: int, width: int) -> nn.Module:
        return ResNet(
            blocks, [width, 2 * width, 4 * width, 8 * width],
            num_classes=num_classes, in_channels=in_channels, image_size=image_size, block=block,
        )

    build.__name__ = f"build_{name}"
    return build


build_resnet18 = _kuangliu("resnet18", [2, 2, 2, 2])
build_resnet34 = _kuangliu("resnet34", [3, 4, 6, 3])
build_resnet50 = _kuangliu("resnet50", [3, 4, 6, 3], Bottleneck)
