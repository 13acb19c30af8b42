"""Student model families: ``build_model(family, *, num_classes, in_channels, image_size, **knobs)``.

Every model works for 1 or 3 input channels and images of 8..64 px (a pool or stride that would
shrink a 1x1 map is left out, decided at build time), traces with ``torch.jit.trace`` and exports
to ONNX. Each carries ``hint_layer`` (a mid-network module whose output is (N, C, H, W), for a
FitNets forward hook; where it is is declared with the family's registration, as is the last block
JointNet unfreezes), ``family`` and ``knobs`` (the resolved knobs, defaults filled in).

Example:
    >>> from autokd.models import build_model, family_knobs
    >>> family_knobs("vgg")
    {'variant': 7, 'width': 1.0}
    >>> model = build_model("vgg", num_classes=10, in_channels=3, image_size=32, variant=11, width=0.5)
"""

from __future__ import annotations

from typing import Iterable

from torch import nn

from autokd.rules import Rule
from autokd.models import cnn, densenet, googlenet, mobilenet, resnet, vgg
from autokd.models.cnn import build_cnn5
from autokd.models.densenet import build_densenet, build_densenet121
from autokd.models.googlenet import build_googlenet
from autokd.models.mobilenet import build_mobilenetv2
from autokd.models.registry import Family, Registry, describe
from autokd.models.resnet import CIFAR_DEPTHS, build_resnet, build_resnet18, build_resnet34, build_resnet50
from autokd.models.vgg import CONFIGS as VGG_CONFIGS
from autokd.models.vgg import build_vgg
from autokd.models.zoo import is_zoo_name, zoo_family

__all__ = ["FAMILIES", "Family", "Registry", "Rule", "build_model", "check_knob_names", "describe", "family_knobs",
           "family_names",
           "family_rules", "last_blocks"]


def _structure(module) -> dict:
    """A family module's ``hint_layer`` and ``last_blocks`` functions, as ``Family`` fields."""
    return {"hint_layer": module.hint_layer, "last_blocks": module.last_blocks}


# Each family's knobs: defaults, then what each may be (the one place ranges are declared); then
# where its hint layer and last block are (functions beside the family's model class).
FAMILIES = Registry([
    Family("cnn5", build_cnn5, {"width": 1.0, "hidden": 128},
           "5-layer CNN: 3 conv-BN-ReLU-pool blocks (32/64/128 x width), MLP head",
           {"width": Rule.number(above=0, at_most=8), "hidden": Rule.integer(at_least=1, at_most=4096)},
           **_structure(cnn)),
    Family("densenet", build_densenet, {"growth_rate": 12, "block_layers": 6},
           "DenseNet-BC for CIFAR: 3 dense blocks of bottleneck layers, compression 0.5",
           {"growth_rate": Rule.integer(at_least=4, at_most=64), "block_layers": Rule.integer(at_least=1, at_most=32)},
           **_structure(densenet)),
    Family("densenet121", build_densenet121, {"growth_rate": 32},
           "DenseNet-121 for CIFAR (kuangliu): dense blocks 6-12-24-16, bottleneck, compression 0.5",
           {"growth_rate": Rule.integer(at_least=4, at_most=64)},
           **_structure(densenet)),
    Family("googlenet", build_googlenet, {"width": 0.25},
           "small GoogLeNet (kuangliu): inception a3..b5, branch channels x width",
           {"width": Rule.number(above=0, at_most=2)},
           **_structure(googlenet)),
    Family("mobilenetv2", build_mobilenetv2, {"width": 1.0},
           "MobileNetV2 for CIFAR (kuangliu): inverted residuals, channels x width",
           {"width": Rule.number(above=0, at_most=4)},
           **_structure(mobilenet)),
    Family("resnet", build_resnet, {"depth": 20, "width": 16},
           "CIFAR ResNet (He et al. 2016): 6n+2 layers (8..56 or 110), stages width/2w/4w",
           {"depth": Rule.one_of(*CIFAR_DEPTHS, noun="depth", note="6n+2"),
            "width": Rule.integer(at_least=1, at_most=256)},
           **_structure(resnet)),
    Family("resnet18", build_resnet18, {"width": 64},
           "ResNet-18 for CIFAR (kuangliu): BasicBlocks [2,2,2,2], stages w/2w/4w/8w",
           {"width": Rule.integer(at_least=1, at_most=512)},
           **_structure(resnet)),
    Family("resnet34", build_resnet34, {"width": 64},
           "ResNet-34 for CIFAR (kuangliu): BasicBlocks [3,4,6,3], stages w/2w/4w/8w",
           {"width": Rule.integer(at_least=1, at_most=512)},
           **_structure(resnet)),
    Family("resnet50", build_resnet50, {"width": 64},
           "ResNet-50 for CIFAR (kuangliu): Bottlenecks [3,4,6,3], stages w/2w/4w/8w (x4 out)",
           {"width": Rule.integer(at_least=1, at_most=512)},
           **_structure(resnet)),
    Family("vgg", build_vgg, {"variant": 7, "width": 1.0},
           "VGG 7/11/13/16 with BatchNorm and one linear classifier, channels x width",
           {"variant": Rule.one_of(*VGG_CONFIGS, noun="variant"), "width": Rule.number(above=0, at_most=8)},
           **_structure(vgg)),
], resolve=lambda name: zoo_family(name) if is_zoo_name(name) else None)


def build_model(family: str, *, num_classes: int, in_channels: int, image_size: int, weights: str | None = None,
                **knobs: object) -> nn.Module:
    """Build a network: the one door every model goes through (students, teachers, members).

    Args:
        family: a name from ``family_names()``, or ``timm/NAME`` or ``torchvision/NAME``.
        num_classes: size of the output logits.
        in_channels: image channels (1 or 3).
        image_size: height = width of the input images in pixels.
        weights: a state dict file (``.pt``, ``.pth``, ``.safetensors``) to start from; a head of
            other classes is left new (``autokd.models.weights``). Built under
            ``torch.device("meta")``, the file is only checked.
        **knobs: the family's knobs (see ``family_knobs``); missing ones take the defaults.

    Returns:
        The model, with ``hint_layer``, ``family`` and ``knobs`` attributes (and ``weights_info``,
        what was loaded, when ``weights`` is given).

    Raises:
        AutokdError: unknown family, unknown knob, a knob value out of range, an image size the
            model cannot take, or a weights file that is missing, corrupt or does not fit.

    Example:
        >>> model = build_model("resnet", num_classes=10, in_channels=3, image_size=32, depth=32)
        >>> model.knobs
        {'depth': 32, 'width': 16}
        >>> build_model("torchvision/mobilenet_v2", num_classes=10, in_channels=1, image_size=8, width_mult=0.5)
    """
    return FAMILIES.build(family, num_classes=num_classes, in_channels=in_channels, image_size=image_size,
                          weights=weights, **knobs)


def family_names() -> list[str]:
    """The registered family names, sorted."""
    return FAMILIES.names()


def family_knobs(family: str) -> dict[str, object]:
    """Knob name -> default value for one family, ``timm/NAME`` and ``torchvision/NAME`` too (a copy;
    raises AutokdError if unknown, with the closest names)."""
    return FAMILIES.knobs(family)


def check_knob_names(family: str, knobs: Iterable[str], where: str = "") -> None:
    """Refuse a knob the family does not have: one line with the closest knob names, prefixed by ``where``."""
    FAMILIES.check_knob_names(family, knobs, where)


def family_rules(family: str) -> dict[str, Rule]:
    """Knob name -> what the knob may be, for one family (raises AutokdError if unknown).

    Example:
        >>> str(family_rules("resnet")["width"])
        'an integer in 1..256'
    """
    return FAMILIES.rules(family)


def last_blocks(model: nn.Module) -> list[nn.Module]:
    """What JointNet unfreezes in a member: its last block and the classifier after it, as its family declares.

    Raises:
        AutokdError: ``model`` is not of a registered family that declares its last block.
    """
    return FAMILIES.last_blocks(model)
