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


# --------------------------------------------------------------------------- weights files


def _state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("family", ["timm/test_resnet", "torchvision/shufflenet_v2_x0_5", "cnn5"])
@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_weights_of_other_classes_keep_all_but_the_head(tmp_path, family, suffix):
    from safetensors.torch import save_file

    source = build_model(family, num_classes=6, in_channels=3, image_size=8)  # "pretrained on other classes"
    saved = {k: v for k, v in _state(source).items() if not k.startswith("hint_layer.")}  # as the library saves it
    path = tmp_path / f"six{suffix}"
    if suffix == ".pt":
        torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in saved.items()}}, path)  # a trainer's file
    else:
        save_file(saved, str(path))
    model = build_model(family, num_classes=10, in_channels=1, image_size=8, weights=str(path))
    info = model.weights_info
    head = set(info["weights_new_names"])
    assert head and all(saved[k].shape[0] == 6 for k in head)  # only the head is new
    for key, value in model.state_dict().items():
        if key in saved and key not in head:
            expected = saved[key].sum(1, keepdim=True) if value.shape != saved[key].shape else saved[key]
            assert torch.equal(value, expected), key  # the 3-channel stem summed, the rest as saved
    assert info["weights_file"] == path.name and len(info["weights_sha256"]) == 64
    assert info["weights_loaded"] + info["weights_new"] == len({id(v) for v in model.state_dict(keep_vars=True).values()})


def test_weights_that_do_not_fit_are_one_line(tmp_path):
    torch.save(build_model("timm/test_resnet", num_classes=10, in_channels=3, image_size=32).state_dict(),
               tmp_path / "resnet.pt")
    (tmp_path / "broken.pt").write_bytes(b"not a zip")
    torch.save({"net": {"w": torch.nn.Linear(2, 2)}}, tmp_path / "code.pt")  # a pickled module: not weights-only
    cases = [("resnet.pt", r"does not fit torchvision/shufflenet_v2_x0_5: \d+ missing, \d+ unexpected, 5 of another "
                           r"shape; first: conv1\.0\.weight \(16, 3, 3, 3\) \(the model's is \(24, 3, 3, 3\)\)"),
             ("absent.pt", "absent.pt does not exist"),
             ("broken.pt", "broken.pt is corrupt or not a weights-only state dict"),
             ("code.pt", "code.pt is corrupt or not a weights-only state dict")]
    for name, message in cases:
        with pytest.raises(AutokdError, match=message) as err:
            build_model("torchvision/shufflenet_v2_x0_5", num_classes=10, in_channels=3, image_size=32,
                        weights=str(tmp_path / name))
        assert "\n" not in str(err.value)
    with pytest.raises(AutokdError, match=r"0 missing, 0 unexpected, 19 of another shape; first: features.0.0.weight \(32, 3, 3, 3\)"):
        torch.save(build_model("cnn5", num_classes=10, in_channels=3, image_size=8).state_dict(), tmp_path / "c.pt")
        build_model("cnn5", num_classes=10, in_channels=3, image_size=8, width=2.0, weights=str(tmp_path / "c.pt"))


def test_from_weights_or_from_scratch_is_a_searched_choice(tmp_path):
    import optuna

    from autokd.config import TrialConfig
    from autokd.space import SearchSpace

    torch.save(build_model("cnn5", num_classes=6, in_channels=3, image_size=8, width=0.25).state_dict(),
               tmp_path / "six.pt")
    space = SearchSpace({"students": {"cnn5": {"width": 0.25, "weights": {"choices": [None, "six.pt"]}}}},
                        source=str(tmp_path / "space.yaml"))
    assert space.dimensions() == ["students.cnn5.weights"]
    space.check_weights(num_classes=10, in_channels=1, image_size=8)
    seen, study = set(), optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(8):
        trial = study.ask()
        config = space.suggest(trial)
        assert trial.params["cnn5.weights"] == config.student.weights
        assert TrialConfig.from_params(config.to_params()) == config
        seen.add(config.student.weights)
    assert seen == {None, str(tmp_path / "six.pt")}
    assert config.describe() in ("cnn5(width=0.25)", "cnn5(width=0.25) from six.pt")
    with pytest.raises(AutokdError, match="width=2.0|does not fit cnn5"):
        SearchSpace({"students": {"cnn5": {"width": 2.0, "weights": str(tmp_path / "six.pt")}}},
                    source="s.yaml").check_weights(num_classes=10, in_channels=1, image_size=8)
    with pytest.raises(AutokdError, match="nope.pt does not exist"):
        SearchSpace({"students": {"cnn5": {"weights": "nope.pt"}}}, source="s.yaml")


# --------------------------------------------------------------------------- through the CLI


@pytest.mark.slow
@pytest.mark.parametrize("family", ["cnn5", "timm/mobilenetv3_small_050", "torchvision/shufflenet_v2_x0_5"])
def test_each_kind_searches_exports_and_predicts_through_the_cli(cifar_subset_dir, tmp_path, family):
    """One student of each kind on real image files (CIFAR subset, 32 px RGB); the timm one starts
    from a weights file of 6 classes: export to ONNX, whose predictions give the recorded accuracy."""
    import hashlib
    import json

    import optuna
    from typer.testing import CliRunner

    from autokd.cli import app
    from autokd.export import read_metadata
    from tests.tiny import write_tiny_study

    knobs: dict = {"width": 0.25, "hidden": 32} if family == "cnn5" else {}
    if family.startswith("timm/"):
        start = tmp_path / "six.safetensors"
        from safetensors.torch import save_file

        six = build_model(family, num_classes=6, in_channels=3, image_size=32)
        save_file({k: v for k, v in six.state_dict().items() if not k.startswith("hint_layer.")}, str(start))
        knobs["weights"] = str(start)
    space = {"students": {family: knobs}, "distill": {"loss": "kd", "temperature": 4.0},
             "train": {"epochs": 1, "batch_size": 32, "lr": 0.01}}
    study = write_tiny_study(tmp_path, name="zoo", space=space, dataset=f"imagefolder:{cifar_subset_dir}",
                             n_trials=1, teacher={"family": "cnn5", "knobs": {"width": 0.25}, "epochs": 1})
    runner = CliRunner()
    search = runner.invoke(app, ["search", str(study)], catch_exceptions=False)
    assert search.exit_code == 0, search.output
    trial = optuna.load_study(study_name="zoo", storage=f"sqlite:///{tmp_path / 'zoo' / 'study.db'}").trials[0]
    out = tmp_path / "student.onnx"
    export = runner.invoke(app, ["export", str(study), "--trial", "0", "--out", str(out)], catch_exceptions=False)
    assert export.exit_code == 0 and "agree with PyTorch on 100.00%" in export.output, export.output
    meta = read_metadata(out)
    assert meta["family"] == family
    figures = json.loads(trial.user_attrs["metrics"]) if isinstance(trial.user_attrs.get("metrics"), str) \
        else trial.user_attrs.get("metrics", {})
    if family.startswith("timm/"):
        assert meta["weights_file"] == "six.safetensors"
        assert meta["weights_sha256"] == hashlib.sha256(start.read_bytes()).hexdigest()
        assert figures["weights_new_names"] == ["classifier.bias", "classifier.weight"]
        assert figures["weights_loaded"] > 0
    else:
        assert "weights_file" not in meta and "weights_loaded" not in figures
    predict = runner.invoke(app, ["predict", str(out), str(cifar_subset_dir / "test"), "--format", "json"],
                            catch_exceptions=False)
    assert predict.exit_code == 0, predict.output
    doc = json.loads(predict.output[predict.output.index("{"):])
    n = len(doc["predictions"])
    assert round(doc["accuracy"] * n) == round(trial.user_attrs["test_accuracy"] * n)
