"""One suite over every registered family: forward, hint layer, trace and export; then the
reference parameter counts and the registry's errors."""

from __future__ import annotations

import io
import warnings

import pytest
import torch

from autokd.errors import AutokdError
from autokd.checkpoint import deployable
from autokd.config import StudentSpec
from autokd.models import FAMILIES, Family, Registry, build_model, describe, family_knobs, family_names, last_blocks

SHAPES = [(3, 32), (1, 8)]  # CIFAR and sklearn digits


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def cifar(family: str, **knobs) -> torch.nn.Module:
    return build_model(family, num_classes=10, in_channels=3, image_size=32, **knobs)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.mark.parametrize(("in_channels", "image_size"), SHAPES)
@pytest.mark.parametrize("family", family_names())
def test_forward_hint_and_trace(family, in_channels, image_size):
    model = build_model(family, num_classes=7, in_channels=in_channels, image_size=image_size).eval()
    assert model.family == family
    assert model.knobs == family_knobs(family)
    assert any(m is model.hint_layer for m in model.modules())

    hints = []
    handle = model.hint_layer.register_forward_hook(lambda _m, _i, out: hints.append(out))
    x = torch.randn(2, in_channels, image_size, image_size)
    with torch.no_grad():
        logits = model(x)
    handle.remove()
    assert logits.shape == (2, 7)
    assert torch.isfinite(logits).all()
    assert len(hints) == 1 and hints[0].dim() == 4 and hints[0].shape[0] == 2

    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(model, x, check_trace=False)
        torch.testing.assert_close(traced(x), logits)


@pytest.mark.parametrize("family", family_names())
def test_onnx_export(family):
    pytest.importorskip("onnx")
    # Thin integer widths keep the export fast; the graph's structure does not depend on them.
    thin = {"width": 8} if isinstance(family_knobs(family).get("width"), int) else {}
    model = build_model(family, num_classes=10, in_channels=1, image_size=8, **thin).eval()
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, torch.randn(1, 1, 8, 8), buffer, dynamo=False)
    assert buffer.getbuffer().nbytes > 0


def test_train_mode_backward_on_tiny_images():
    # BatchNorm on a 1x1 map with batch 2 still has 2 values per channel, so training works.
    model = build_model("vgg", num_classes=10, in_channels=1, image_size=8).train()
    model(torch.randn(2, 1, 8, 8)).sum().backward()


@pytest.mark.parametrize(
    ("family", "knobs", "expected"),
    [
        # The widely quoted CIFAR-10 counts (10 classes, 3x32x32): He et al.'s ResNets with
        # option-B shortcuts, kuangliu/pytorch-cifar's ResNet-18/50, DenseNet-121 and GoogLeNet.
        ("resnet", {"depth": 20}, 272_474),
        ("resnet", {"depth": 32}, 466_906),
        ("resnet", {"depth": 44}, 661_338),
        ("resnet", {"depth": 56}, 855_770),
        ("resnet", {"depth": 110}, 1_730_714),
        ("resnet18", {}, 11_173_962),
        ("resnet50", {}, 23_520_842),
        ("densenet121", {}, 6_956_298),
        ("googlenet", {"width": 1.0}, 6_166_250),
        ("vgg", {"variant": 7}, 1_595_082),
        ("cnn5", {}, 357_514),
        # Not published figures: they pin the 3-block family while its builder is shared.
        ("densenet", {}, 176_122),
        ("densenet", {"growth_rate": 24, "block_layers": 16}, 3_020_506),
    ],
)
def test_reference_parameter_counts(family, knobs, expected):
    assert n_params(cifar(family, **knobs)) == expected


@pytest.mark.parametrize(
    ("family", "knob", "small", "large"),
    [
        ("resnet", "width", 8, 32),
        ("resnet", "depth", 14, 32),
        ("resnet18", "width", 32, 64),
        ("resnet34", "width", 16, 32),
        ("resnet50", "width", 16, 32),
        ("resnet", "depth", 56, 110),
        ("vgg", "width", 0.5, 1.0),
        ("vgg", "variant", 7, 11),
        ("cnn5", "width", 0.5, 2),
        ("cnn5", "hidden", 64, 256),
        ("mobilenetv2", "width", 0.5, 1.0),
        ("densenet", "growth_rate", 8, 16),
        ("densenet", "block_layers", 4, 8),
        ("densenet121", "growth_rate", 12, 32),
        ("googlenet", "width", 0.25, 0.5),
    ],
)
def test_knobs_change_size_in_the_expected_direction(family, knob, small, large):
    assert n_params(cifar(family, **{knob: small})) < n_params(cifar(family, **{knob: large}))


def test_int_accepted_where_float_expected_and_knobs_resolved():
    model = cifar("vgg", width=1)
    assert model.knobs == {"variant": 7, "width": 1.0}
    assert isinstance(model.knobs["width"], float)
    assert cifar("resnet", depth=20.0).knobs == {"depth": 20, "width": 16}


def test_registry_lists_every_family_sorted():
    names = family_names()
    assert names == sorted(names) == [f.name for f in FAMILIES]
    assert {"resnet", "resnet18", "resnet34", "resnet50", "vgg", "cnn5", "mobilenetv2", "densenet", "densenet121",
            "googlenet"} <= set(names)
    assert all(isinstance(f, Family) and f.description for f in FAMILIES)
    assert family_knobs("vgg") == {"variant": 7, "width": 1.0}


def test_unknown_family_lists_known_families():
    with pytest.raises(AutokdError) as info:
        build_model("resnet9000", num_classes=10, in_channels=3, image_size=32)
    message = str(info.value)
    assert "resnet9000" in message and "\n" not in message
    assert all(name in message for name in family_names())
    with pytest.raises(AutokdError):
        family_knobs("nope")


def test_unknown_knob_lists_family_knobs():
    with pytest.raises(AutokdError) as info:
        cifar("vgg", depth=16)
    message = str(info.value)
    assert "depth" in message and "variant" in message and "width" in message


@pytest.mark.parametrize(
    ("family", "knobs", "hint"),
    [
        ("resnet", {"depth": 9}, "6n+2"),
        ("resnet", {"depth": 62}, "56, 110"),
        ("resnet", {"depth": 116}, "110"),
        ("resnet", {"width": 0}, "1..256"),
        ("vgg", {"variant": 12}, "7, 11, 13, 16"),
        ("vgg", {"width": 0}, "(0, 8]"),
        ("cnn5", {"width": -1.0}, "(0, 8]"),
        ("mobilenetv2", {"width": 0.0}, "(0, 4]"),
        ("densenet", {"growth_rate": 2}, "4..64"),
        ("densenet121", {"growth_rate": 65}, "4..64"),
        ("resnet50", {"width": 0}, "1..512"),
        ("googlenet", {"width": -0.5}, "(0, 2]"),
        ("resnet18", {"width": 1.5}, "int"),
        ("vgg", {"variant": "7"}, "int"),
        ("vgg", {"width": True}, "float"),
    ],
)
def test_bad_knob_values_name_the_valid_range(family, knobs, hint):
    with pytest.raises(AutokdError) as info:
        cifar(family, **knobs)
    assert hint in str(info.value)


def test_bad_shapes_are_user_errors():
    with pytest.raises(AutokdError, match="in_channels"):
        build_model("cnn5", num_classes=10, in_channels=0, image_size=32)


def test_one_description_for_a_model_a_spec_and_a_stored_text():
    model = build_model("cnn5", num_classes=10, in_channels=1, image_size=8, width=0.27312, hidden=45)
    assert describe(model) == describe(deployable(model, (0.5,), (0.5,))) == "cnn5(hidden=45,width=0.273)"
    assert describe(StudentSpec.of("cnn5", width=0.27312, hidden=45)) == describe(model)
    # stored texts (older records listed knobs in registry order): every model's knobs in name order
    text = "cnn5(width=0.273,hidden=45) | vgg(width=0.1,variant=7) + selector"
    assert describe(text) == "cnn5(hidden=45,width=0.273) | vgg(variant=7,width=0.1) + selector"
    assert describe("resnet18(width=64) + vgg(width=1.0,variant=7)") == "resnet18(width=64) + vgg(variant=7,width=1.0)"
    assert describe("mlp()") == "mlp()" and describe(None) == "None"


@pytest.mark.parametrize("family", family_names())
def test_every_family_declares_its_structure_with_its_registration(family):
    model = build_model(family, num_classes=10, in_channels=1, image_size=8)
    assert model.hint_layer is FAMILIES.get(family).hint_layer(model)
    assert list(model._modules)[-1] == "hint_layer"  # registered last: checkpoints keep their key order
    assert last_blocks(model) == FAMILIES.get(family).last_blocks(model)
    with pytest.raises(AutokdError, match="last block"):
        last_blocks(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2)))
    with pytest.raises(ValueError, match="hint_layer"):
        Registry([Family("bare", lambda **_: torch.nn.Identity(), {}, "no hint layer")])
