"""Families from timm and torchvision by name, weights files, and their exports (issue 24).

Real models, nothing downloaded (``pretrained=False``, ``weights=None``; HF_HUB_OFFLINE=1).
"""

from __future__ import annotations

import os

import pytest
import torch

from autokd.errors import AutokdError
from autokd.models import build_model, family_knobs, last_blocks

os.environ.setdefault("HF_HUB_OFFLINE", "1")

ZOO = ["timm/mobilenetv3_small_050", "timm/test_resnet", "torchvision/shufflenet_v2_x0_5",
       "torchvision/mobilenet_v3_small"]


@pytest.mark.parametrize("family", ZOO)
@pytest.mark.parametrize("channels,size", [(1, 8), (3, 32)])
def test_zoo_family_builds_for_the_data(family, channels, size):
    model = build_model(family, num_classes=10, in_channels=channels, image_size=size).eval()
    with torch.no_grad():
        assert model(torch.rand(2, channels, size, size)).shape == (2, 10)
    features = {}
    model.hint_layer.register_forward_hook(lambda m, i, o: features.__setitem__("hint", o))
    model(torch.rand(2, channels, size, size))
    assert features["hint"].dim() == 4  # FitNets needs (N, C, H, W)
    assert last_blocks(model) and model.family == family and model.knobs == {}


def test_zoo_knobs_are_the_constructors_numbers_and_switches():
    assert family_knobs("torchvision/mobilenet_v2")["width_mult"] == 1.0
    assert family_knobs("timm/resnet10t")["stem_width"] == 32  # the entry point's value, not the class default
    assert family_knobs("timm/mobilenetv3_small_050")["drop_rate"] == 0.0
    small = build_model("torchvision/mobilenet_v2", num_classes=10, in_channels=3, image_size=32, width_mult=0.25)
    full = build_model("torchvision/mobilenet_v2", num_classes=10, in_channels=3, image_size=32)
    assert sum(p.numel() for p in small.parameters()) < sum(p.numel() for p in full.parameters()) / 4
    assert small.knobs == {"width_mult": 0.25}


@pytest.mark.parametrize("family,knobs,message", [
    ("timm/mobilenetv3_smal_050", {}, r"unknown model family 'timm/mobilenetv3_smal_050' \(closest: "
                                      r"timm/mobilenetv3_small_050"),
    ("torchvision/shufflenet_v2", {}, r"\(closest: torchvision/shufflenet_v2_x"),
    ("resnt18", {}, r"\(closest: resnet18"),
    ("timm/test_resnet", {"drop_rat": 0.1}, r"has no knob 'drop_rat' \(closest: drop_rate"),
    ("torchvision/mobilenet_v2", {"width_mult": -1.0}, "width_mult must be a number > 0"),
    ("torchvision/mobilenet_v2", {"width_mult": True}, "is not a float"),
    ("timm/test_vit", {}, "cannot take 8x8 px images; fix: use another family, or images of at least 16x16 px"),
])
def test_zoo_errors_are_one_line_with_the_closest_names(family, knobs, message):
    with pytest.raises(AutokdError, match=message) as err:
        build_model(family, num_classes=10, in_channels=1, image_size=8, **knobs)
    assert "\n" not in str(err.value)
