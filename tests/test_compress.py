"""Compression stage: every method on a digits-trained student, checkpoints, export, bad input, a search.

One small teacher and three students (a VGG-style and a CNN, both mostly convolution, and a CNN
whose Linear head holds most parameters) are trained once per module; each method then compresses
a copy. Size, params, MACs and accuracy are asserted; latency never is.
"""

from __future__ import annotations

import copy
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from autokd.checkpoint import load_checkpoint, save_checkpoint
from autokd.compress import checkpoint_entry, load_compressed
from autokd.config import CompressSpec, StudentSpec, StudyConfig, TrainSpec, TrialConfig
from autokd.space import SearchSpace
from autokd.errors import AutokdError
from autokd.export import agreement, export_model
from autokd.train import predict
from autokd.context import build_context
from autokd.deployed import measure_model
from autokd.record import trial_figures
from autokd.trial import build_student, compress_stage, distill_student, run_trial
from tests.tiny import TEST_SEED

REPO = Path(__file__).resolve().parents[1]
STUDENTS = {"vgg": StudentSpec.of("vgg", variant=7, width=0.5), "cnn5": StudentSpec.of("cnn5", width=1.0, hidden=128),
            "cnn5-head": StudentSpec.of("cnn5", width=0.25, hidden=512)}  # 16% and 74% of params in Linear
TRAIN = TrainSpec(epochs=4, batch_size=64, lr=0.05, seed=TEST_SEED)
# Largest validation-accuracy drop allowed (144 images: 0.0069 each). Measured over seeds 0-9 and 1 and 2 threads
# with 8-epoch students: int8 at most 0.0069, pruning at most 0.0556 (also what an Intel Xeon gave); with 4, over
# seeds 0-4: 0.0069 and 0.0486. A model the method breaks loses far more. docs/testing.md has the table.
INT8_MAX_DROP = 0.035
PRUNE_MAX_DROP = 0.10


@pytest.fixture(scope="module")
def context(tmp_path_factory):
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    out = tmp_path_factory.mktemp("compress-study")
    study = StudyConfig(name="compress-test", teacher={"family": "cnn5", "epochs": 6, "lr": 0.05}, output=str(out),
                        latency_runs=5, latency_min_seconds=0, seed=TEST_SEED)
    return build_context(study, device=torch.device("cpu"), show_progress=False)


@pytest.fixture(scope="module")
def students(context):
    trained = {}
    for name, spec in STUDENTS.items():
        config = TrialConfig(student=spec, train=TRAIN)
        model = build_student(config, context.data)
        distill_student(model, config, context.teaching, context.train, context.validation)
        trained[name] = model.eval()
    return trained


def compress(students, context, family: str, spec: CompressSpec):
    config = TrialConfig(student=STUDENTS[family], train=TRAIN, compress=spec)
    model = copy.deepcopy(students[family])
    model, metrics = compress_stage(model, config, context.teaching, context.train, context.validation,
                                    num_classes=context.data.num_classes, uncompressed=measure(model, context))
    return model, metrics, measure(model, context)


def measure(model, context):
    return measure_model(model, context.validation, context.test, context.data.num_classes,
                         latency=context.latency, device=context.device)


def roundtrip(model, spec: CompressSpec, name: str, context, tmp_path: Path):
    """Save as run_trial does, load back through the weights_only checkpoint."""
    data = context.data
    path = save_checkpoint(tmp_path / "student.pt", torch.nn.Module(), family=STUDENTS[name].family,
                           knobs=STUDENTS[name].knob_dict, num_classes=data.num_classes, in_channels=data.channels,
                           image_size=data.image_size, mean=data.mean, std=data.std,
                           compressed_module=checkpoint_entry(model, spec))
    return load_compressed(load_checkpoint(path))


@pytest.mark.parametrize("mode", ["static", "qat"])
def test_int8_is_under_a_third_of_fp32_and_keeps_accuracy(students, context, figure, mode):
    spec = CompressSpec("int8", quant_mode=mode, finetune_epochs=1 if mode == "qat" else 0)
    model, metrics, after = compress(students, context, "vgg", spec)
    assert metrics["compression"] == "int8" and "compression_skipped" not in metrics
    assert after["size_bytes"] <= 0.3 * metrics["uncompressed_size_bytes"]
    assert figure("accuracy drop", metrics["uncompressed_accuracy"] - after["accuracy"]) <= INT8_MAX_DROP
    assert after["macs"] == metrics["uncompressed_macs"]  # int8 kernels counted, not vanished
    assert after["params"] == pytest.approx(metrics["uncompressed_params"], rel=0.01)
    assert metrics["uncompressed_bytes_per_param"] > 3.5 and metrics["bytes_per_param"] < 1.3
    assert metrics["bytes_per_param"] == pytest.approx(after["size_bytes"] / after["params"])
    assert "B/param" in metrics["compression_detail"]


def test_int8_dynamic_quantizes_linear_layers_only(students, context, figure):
    model, metrics, after = compress(students, context, "cnn5-head", CompressSpec("int8", quant_mode="dynamic"))
    assert "Linear only" in metrics["compression_detail"]
    assert after["size_bytes"] < 0.6 * metrics["uncompressed_size_bytes"]  # 74% of the weights 4x smaller
    assert metrics["bytes_per_param"] < 0.6 * metrics["uncompressed_bytes_per_param"]
    assert figure("accuracy drop", metrics["uncompressed_accuracy"] - after["accuracy"]) <= INT8_MAX_DROP


@pytest.mark.parametrize("family", ["cnn5", "vgg"])
def test_int8_dynamic_on_a_convolutional_student_is_skipped_with_the_reason(students, context, family):
    model, metrics, after = compress(students, context, family, CompressSpec("int8", quant_mode="dynamic"))
    assert metrics["compression"] == "none" and "bytes_per_param" not in metrics
    assert "quantizes only Linear layers" in metrics["compression_skipped"]
    assert "static or qat" in metrics["compression_skipped"]
    assert after["size_bytes"] == metrics["uncompressed_size_bytes"]  # the float student, unchanged


def test_int8_that_would_not_shrink_is_skipped(students, context, monkeypatch):
    import autokd.compress

    monkeypatch.setattr(autokd.compress, "INT8_MAX_SIZE_SHARE", 0.01)  # demand a 100x saving: none is
    model, metrics, after = compress(students, context, "vgg", CompressSpec("int8", quant_mode="static"))
    assert metrics["compression"] == "none"
    assert "no saving" in metrics["compression_skipped"] and "bytes per parameter" in metrics["compression_skipped"]
    assert after["size_bytes"] == metrics["uncompressed_size_bytes"]


@pytest.mark.parametrize("mode", ["static", "qat"])
def test_static_int8_onnx_is_qdq_and_keeps_accuracy_in_onnxruntime(students, context, figure, tmp_path, mode):
    import onnx

    from autokd.export import exported_predictions

    spec = CompressSpec("int8", quant_mode=mode, finetune_epochs=1 if mode == "qat" else 0)
    model, _, after = compress(students, context, "vgg", spec)
    images, labels = context.data.test_images, context.data.test_labels
    example = images[:1].float() / 255.0
    path = export_model(model, "onnx", tmp_path / "int8.onnx", example)
    float_path = export_model(students["vgg"], "onnx", tmp_path / "fp32.onnx", example)
    graph = onnx.load(str(path)).graph
    ops = {n.op_type for n in graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    tensors = list(graph.initializer) + [a.t for n in graph.node if n.op_type == "Constant" for a in n.attribute
                                         if a.type == onnx.AttributeProto.TENSOR]  # torch writes weights as Constants
    int8_values = sum(int(np.prod(t.dims)) for t in tensors if t.data_type == onnx.TensorProto.INT8)
    assert int8_values >= 0.9 * after["params"]  # the weights themselves are int8, not fake-quantized floats
    assert path.stat().st_size < 0.35 * float_path.stat().st_size
    onnx_correct = int((exported_predictions(path, "onnx", images) == labels).sum())
    torch_correct = int((predict(model, images).argmax(1) == labels).sum())
    # onnxruntime's integer kernels round like torch's: within 1% of the images (measured: at most 1 of 360)
    assert figure("onnx-torch images", abs(onnx_correct - torch_correct)) <= 0.01 * len(labels)


@pytest.mark.parametrize("importance", ["l1", "group_norm"])
def test_structured_half_the_channels_removes_two_thirds_of_params(students, context, figure, importance):
    spec = CompressSpec("structured", 0.5, 2, importance=importance)
    model, metrics, after = compress(students, context, "vgg", spec)
    assert after["params"] <= 0.35 * metrics["uncompressed_params"]
    assert after["macs"] <= 0.35 * metrics["uncompressed_macs"]
    assert figure("accuracy drop", metrics["uncompressed_accuracy"] - after["accuracy"]) <= PRUNE_MAX_DROP
    assert metrics["channels_kept"] == metrics["channels_before"] // 2


def test_fisher_ranks_a_silenced_channel_lowest_where_l1_does_not(students, context):
    """A channel whose BatchNorm outputs zero costs the loss nothing, however large its filter."""
    import torch_pruning as tp

    from autokd.compress import _fisher_batches
    from autokd.fisher import FisherImportance

    model = copy.deepcopy(students["vgg"])
    conv = next(m for m in model[1].modules() if isinstance(m, torch.nn.Conv2d) and m.out_channels > 8)
    norm = next(m for m in model[1].modules() if isinstance(m, torch.nn.BatchNorm2d) and m.num_features == conv.out_channels)
    with torch.no_grad():
        conv.weight[3] *= 100  # the largest filter by L1 ...
        norm.weight[3] = norm.bias[3] = 0  # ... whose activation is always zero
    example = model[0](context.data.val_images[:1].float() / 255.0)
    group = tp.DependencyGraph().build_dependency(model[1], example).get_pruning_group(
        conv, tp.prune_conv_out_channels, idxs=list(range(conv.out_channels)))
    fisher = FisherImportance()
    fisher.accumulate(model, _fisher_batches(context.train, seed=0))
    scores = fisher(group)
    assert scores.shape == (conv.out_channels,) and int(scores.argmin()) == 3 and float(scores[3]) == 0.0
    assert (scores[torch.arange(len(scores)) != 3] > 0).all()
    assert int(tp.importance.MagnitudeImportance(p=1)(group).argmin()) != 3


def test_fisher_pruning_removes_channels_and_keeps_accuracy(students, context, figure):
    model, metrics, after = compress(students, context, "vgg", CompressSpec("fisher", 0.5, 2))
    assert metrics["compression"] == "fisher" and metrics["compression_detail"].startswith("fisher (")
    assert metrics["channels_kept"] == metrics["channels_before"] // 2
    assert after["params"] <= 0.35 * metrics["uncompressed_params"]
    assert figure("accuracy drop", metrics["uncompressed_accuracy"] - after["accuracy"]) <= PRUNE_MAX_DROP


def test_fisher_prunes_coupled_residual_channels(context):
    """A ResNet's additions couple channels: the Fisher scores of coupled layers add up, and it still runs."""
    import torch_pruning as tp

    from autokd.compress import _classifier_layers, _fisher_batches
    from autokd.fisher import FisherImportance

    model = build_student(TrialConfig(student=StudentSpec.of("resnet", depth=8, width=8)), context.data)
    before = sum(p.numel() for p in model.parameters())
    fisher = FisherImportance()
    fisher.accumulate(model, _fisher_batches(context.train, seed=0))
    example = model[0](context.data.val_images[:1].float() / 255.0)
    tp.pruner.MetaPruner(model[1], example, importance=fisher, pruning_ratio=0.5,
                         ignored_layers=_classifier_layers(model[1], 10)).step()
    assert sum(p.numel() for p in model.parameters()) < 0.4 * before
    assert model.eval()(context.data.val_images[:4].float() / 255.0).shape == (4, 10)


def test_search_space_suggests_fisher_with_its_ratio():
    import optuna

    space = SearchSpace(_space(method={"choices": ["fisher", "unstructured"]}, ratio={"float": [0.2, 0.6]},
                               finetune_epochs=1), source="space.yaml")
    trial = optuna.trial.FixedTrial({"family": "cnn5", "compress.method": "fisher", "compress.ratio": 0.4,
                                     "compress.finetune_epochs": 1})
    config = space.suggest(trial)
    assert config.compress == CompressSpec("fisher", 0.4, 1)
    assert TrialConfig.from_params(config.to_params()) == config


def test_structured_in_steps_reaches_the_same_channels(students, context, figure, monkeypatch):
    import autokd.compress

    monkeypatch.setattr(autokd.compress, "STRUCTURED_STEPS", 3)
    model, metrics, after = compress(students, context, "vgg", CompressSpec("structured", 0.5, 3))
    assert metrics["prune_steps"] == 3 and "3 steps, ft 1+1+1 ep" in metrics["compression_detail"]
    assert metrics["channels_kept"] == metrics["channels_before"] // 2
    assert after["params"] <= 0.35 * metrics["uncompressed_params"]
    assert figure("accuracy drop", metrics["uncompressed_accuracy"] - after["accuracy"]) <= PRUNE_MAX_DROP
    _, one_step, _ = compress(students, context, "vgg", CompressSpec("structured", 0.5, 1))
    assert one_step["prune_steps"] == 1  # capped at one step per fine-tuning epoch


def test_lowrank_half_rank_on_vgg_cuts_macs(students, context, figure):
    model, metrics, after = compress(students, context, "vgg", CompressSpec("lowrank", 0.5, 2))
    assert after["macs"] <= 0.6 * metrics["uncompressed_macs"]
    assert metrics["layers_factorized"] >= 5
    assert figure("accuracy", after["accuracy"]) >= 0.7  # measured 0.854-0.965; chance is 0.1


def test_lowrank_leaves_layers_dense_where_the_split_does_not_pay():
    from autokd.compress import LOWRANK_MAX_COST, factorize, lowrank_cost

    net = torch.nn.Sequential(torch.nn.Conv2d(3, 32, 3), torch.nn.Conv2d(32, 32, 3), torch.nn.Conv2d(32, 64, 3),
                              torch.nn.Conv2d(64, 64, 3, groups=64))
    stem_rank, stem_share = lowrank_cost(net[0], 0.5)  # full rank 27: rank 14 keeps 0.96x of the MACs
    assert stem_rank == 14 and stem_share > LOWRANK_MAX_COST
    assert lowrank_cost(net[1], 0.5)[1] == pytest.approx(16 * (288 + 32) / (32 * 288))
    assert lowrank_cost(net[3], 0.5) is None  # depthwise
    rebuilt = copy.deepcopy(net)
    replaced = factorize(net, 0.5)
    assert replaced == {"1": 16, "2": 32}  # stem and depthwise stay dense
    assert isinstance(net[0], torch.nn.Conv2d) and isinstance(net[1], torch.nn.Sequential)
    # a rebuild from a checkpoint splits exactly the layers it names
    assert factorize(rebuilt, 0.5, only=["0", "1"]) == {"0": 14, "1": 16}


def test_unstructured_reports_sparsity_and_dense_compute(students, context, figure):
    model, metrics, after = compress(students, context, "cnn5", CompressSpec("unstructured", 0.8, 2))
    assert metrics["sparsity"] == pytest.approx(0.8, abs=0.02)  # stem and logits stay dense
    assert "runs dense" in metrics["compression_detail"]
    assert after["macs"] == metrics["uncompressed_macs"]  # no MAC saving is claimed for zeros
    assert after["size_bytes"] < 0.6 * metrics["uncompressed_size_bytes"]  # CSR file, measured
    assert figure("accuracy drop", metrics["uncompressed_accuracy"] - after["accuracy"]) <= PRUNE_MAX_DROP


# No fine-tuning after pruning or factorizing: what is saved, loaded and exported is the same either way.
@pytest.mark.parametrize("family,spec,formats", [
    ("vgg", CompressSpec("int8", quant_mode="static"), ("onnx", "torchscript")),
    ("cnn5-head", CompressSpec("int8", quant_mode="dynamic"), ("torchscript",)),
    ("vgg", CompressSpec("structured", 0.5, 0), ("onnx", "torchscript")),
    ("vgg", CompressSpec("fisher", 0.5, 0), ("onnx",)),
    ("cnn5", CompressSpec("unstructured", 0.8, 0), ("onnx", "torchscript")),
    ("vgg", CompressSpec("lowrank", 0.5, 0), ("onnx", "torchscript")),
], ids=["int8-static", "int8-dynamic", "structured", "fisher", "unstructured", "lowrank"])
def test_checkpoint_roundtrip_and_export_agree(students, context, figure, tmp_path, family, spec, formats):
    model, metrics, _ = compress(students, context, family, spec)
    assert metrics["compression"] == spec.method, metrics.get("compression_skipped")
    loaded = roundtrip(model, spec, family, context, tmp_path)
    images = context.data.test_images
    assert torch.equal(predict(loaded, images).argmax(1), predict(model, images).argmax(1))
    if spec.method != "int8":  # float models come back with the very same weights
        assert torch.allclose(predict(loaded, images), predict(model, images), atol=1e-5)
    example = images[:1].float() / 255.0
    for fmt in formats:
        path = export_model(loaded, fmt, tmp_path / f"model.{fmt}", example)
        # float exports: measured 1.0; int8 kernels differ between runtimes (measured down to 0.9944)
        assert figure(f"{fmt} agreement", agreement(loaded, path, fmt, images)) >= (0.98 if spec.method == "int8" else 0.99)


def test_dynamic_int8_onnx_says_use_torchscript(students, context, tmp_path):
    model, _, _ = compress(students, context, "cnn5-head", CompressSpec("int8", quant_mode="dynamic"))
    with pytest.raises(AutokdError, match="torchscript"):
        export_model(model, "onnx", tmp_path / "m.onnx", context.data.test_images[:1].float() / 255.0)


# --------------------------------------------------------------------------- bad input


def _space(**compress) -> dict:
    return {"students": {"cnn5": {"width": 0.5}}, "compress": compress}


@pytest.mark.parametrize("compress,match", [
    ({"method": "structured", "ratio": 1.2}, "ratio"),
    ({"method": {"choices": ["none", "unstructured"]}, "ratio": {"float": [0.0, 0.9]}}, "ratio"),
    ({"method": "lowrank", "ratio": 1.0}, "ratio"),
    ({"method": "fisher", "ratio": 0.99}, "fisher ratio"),
    ({"method": "int8", "quant_mode": "int4"}, "quant_mode"),
    ({"method": "structured", "importance": "taylor"}, "importance"),
    ({"method": "structured", "finetune_epochs": -1}, "finetune_epochs"),
    ({"method": "prune"}, "compression method"),
])
def test_search_space_rejects_settings_that_cannot_compress(compress, match):
    with pytest.raises(AutokdError, match=match):
        SearchSpace(_space(**compress), source="space.yaml")


def test_missing_quantized_engine_is_an_error(monkeypatch):
    import autokd.compress_rules

    monkeypatch.setattr(autokd.compress_rules, "quant_engine", lambda: None)
    with pytest.raises(AutokdError, match="quantized CPU engine"):
        SearchSpace(_space(method="int8"), source="space.yaml")


def test_bad_compression_fails_before_training(context, tmp_path, monkeypatch):
    import autokd.trial

    monkeypatch.setattr(autokd.trial, "distill_student", lambda *a, **k: pytest.fail("trained before the check"))
    config = TrialConfig(student=STUDENTS["cnn5"], train=TRAIN, compress=CompressSpec("structured", 0.0, 1))
    with pytest.raises(AutokdError, match="ratio"):
        run_trial(config, context, work_dir=tmp_path)


def test_a_network_the_method_cannot_handle_is_skipped_with_the_reason(students, context, monkeypatch):
    import torch_pruning as tp

    def broken(*args, **kwargs):
        raise RuntimeError("cannot trace this graph")

    monkeypatch.setattr(tp.pruner, "MetaPruner", broken)
    model, metrics, after = compress(students, context, "vgg", CompressSpec("structured", 0.5, 1))
    assert metrics["compression"] == "none"
    assert "cannot trace" in metrics["compression_skipped"]
    assert after["params"] == metrics["uncompressed_params"]


# --------------------------------------------------------------------------- end to end


@pytest.mark.slow
def test_search_puts_compressed_students_on_the_pareto_front(tmp_path):
    space = yaml.safe_load((REPO / "search_spaces/compress.yaml").read_text())
    space["students"] = {"vgg": {"variant": 7, "width": {"float": [0.25, 0.5]}}}
    space["train"]["epochs"] = 2  # nothing below depends on accuracy: int8 makes the smallest student
    space["compress"]["method"] = {"choices": ["none", "int8", "structured"]}
    space["compress"]["finetune_epochs"] = 1
    space["compress"]["quant_mode"] = "static"
    (tmp_path / "space.yaml").write_text(yaml.safe_dump(space))
    study = yaml.safe_load((REPO / "studies/digits-compress.yaml").read_text())
    study.update(name="compress-e2e", search_space=str(tmp_path / "space.yaml"), output=str(tmp_path / "out"),
                 n_trials=4, sampler="random", latency_runs=5, latency_min_seconds=0,
                 teacher={"family": "cnn5", "epochs": 2, "lr": 0.05})
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(study))
    cli = [sys.executable, "-m", "autokd"]
    run = subprocess.run(cli + ["search", str(tmp_path / "study.yaml")], capture_output=True, text=True, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-2000:]

    import optuna

    from autokd.report import compression_section, pareto_trials

    storage = f"sqlite:///{tmp_path / 'out' / 'study.db'}"
    optuna_study = optuna.load_study(study_name="compress-e2e", storage=storage)
    front = pareto_trials(optuna_study)
    compressed = [t for t in front if t.user_attrs.get("compression", "none") != "none"]
    assert compressed, [t.user_attrs.get("compression") for t in front]
    for t in compressed:
        assert trial_figures(t)["uncompressed_size_bytes"] > t.user_attrs["size_bytes"]
    assert compression_section(optuna_study) is not None

    report = subprocess.run(cli + ["report", str(tmp_path / "study.yaml")], capture_output=True, text=True,
                            cwd=tmp_path)
    assert report.returncode == 0 and "What compression bought" in report.stdout, report.stderr[-2000:]
    trial = compressed[0].number
    export = subprocess.run(cli + ["export", str(tmp_path / "study.yaml"), "--trial", str(trial), "--format", "onnx"],
                            capture_output=True, text=True, cwd=tmp_path)
    assert export.returncode == 0, export.stderr[-2000:]
    assert "agree with PyTorch" in export.stdout
