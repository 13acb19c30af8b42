"""VGG with BatchNorm and one linear classifier (kuangliu/pytorch-cifar style).

Each number in a config is Conv3x3(pad 1, bias) -> BN -> ReLU; "M" is MaxPool2d(2). A max-pool
that would shrink a 1x1 map is left out (decided from ``image_size`` at build time), and an
AdaptiveAvgPool2d(1) before the classifier makes the head independent of image size.
"""

from __future__ import annotations

import torch
from torch import nn

from autokd.models.registry import scaled

CONFIGS: dict[int, list[int | str]] = {
    7: [64, "M", 64, "M", 128, "M", 256, "M", 512, "M"],
    11: [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    13: [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    16: [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
}


class VGG(nn.Module):
    def __init__(self, config: list[int | str], *, width: float, num_classes: int, in_channels: int, image_size: int):
        super().__init__()
        layers: list[nn.Module] = []
        channels, size = in_channels, image_size
        for item in config:
            if item == "M":
                if size >= 2:
                    layers.append(nn.MaxPool2d(2, 2))
                    size //= 2
                continue
            out = scaled(int(item), width)
            layers += [nn.Conv2d(channels, out, 3, padding=1), nn.BatchNorm2d(out), nn.ReLU()]
            channels = out
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.features(x)  # (N, C, h, w)
        out = self.pool(out).flatten(1)  # (N, C)
        return self.classifier(out)


def hint_layer(net: VGG) -> nn.Module:
    """FitNets hint: the activation of the middle conv layer."""
    relus = [m for m in net.features if isinstance(m, nn.ReLU)]
    return relus[len(relus) // 2]


def last_blocks(net: VGG) -> list[nn.Module]:
    """The last conv + BN and the classifier."""
    last = max(i for i, m in enumerate(net.features) if isinstance(m, nn.Conv2d))
    return [net.features[last], net.features[last + 1], net.classifier]


def build_vgg(*, num_classes: int, in_channels: int, image_size: int, variant: int, width: float) -> nn.Module:
    return VGG(CONFIGS[variant], width=width, num_classes=num_classes, in_channels=in_channels, image_size=image_size)
