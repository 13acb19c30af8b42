"""Teacher recipes and ensemble teachers (AvNet, JointNet) on real digits data, tiny members."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import yaml

from autokd.checkpoint import deployable, load_checkpoint
from autokd.config import StudyConfig, TeacherRecipe, load_study_config
from autokd.data import load_dataset
from autokd.distill import Teacher, TeacherMember, final_linear, jointnet_loss
from autokd.errors import AutokdError
from autokd.models import build_model, family_knobs, family_names
from autokd.teacher import (build_teacher, jointnet_parameters, last_blocks, new_jointnet, recipe_key,
                            train_jointnet)
from autokd.train import AugmentPolicy

CPU = torch.device("cpu")
SMALL = {"resnet18": {"width": 8}, "resnet34": {"width": 8}, "resnet50": {"width": 8},
         "densenet121": {"growth_rate": 8}}
TINY = {"cnn5": {"width": 0.125, "hidden": 16}, "vgg": {"variant": 7, "width": 0.0625}}


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits").with_validation(0.1, seed=0)


@pytest.fixture(scope="module")
def small():
    """120 training digits (30 of them held out for validation) and 30 test digits."""
    return load_dataset("digits").subset(120, 30, seed=0).with_validation(0.25, seed=0)


def _member(family: str, data, seed: int = 0) -> TeacherMember:
    torch.manual_seed(seed)
    net = build_model(family, num_classes=data.num_classes, in_channels=data.channels,
                      image_size=data.image_size, **TINY[family])
    return TeacherMember(net.eval(), data.mean, data.std, description=family)


def _ensemble_study(tmp_path, **teacher) -> StudyConfig:
    members = [{"family": f, "knobs": k, "weight": 1.0} for f, k in TINY.items()]
    return StudyConfig(output=str(tmp_path), seed=0,
                       teacher={"ensemble": members, "epochs": 1, "batch_size": 64, **teacher})


# --------------------------------------------------------------------------- recipes


def test_label_smoothing_is_off_by_default(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({"teacher": {"family": "cnn5", "epochs": 2}}))
    assert TeacherRecipe().label_smoothing == 0.0
    assert load_study_config(path).teacher.train_spec(0).label_smoothing == 0.0
    assert StudyConfig().teacher.train_spec(0).label_smoothing == 0.0


def test_every_recipe_change_changes_the_cache_key(digits):
    base = StudyConfig(teacher={"family": "cnn5", "knobs": TINY["cnn5"]})
    policy = AugmentPolicy(crop_pad=1, flip=False)
    key = recipe_key(base, digits, policy)
    assert recipe_key(base, digits, policy) == key
    changes = {"epochs": 13, "lr": 0.1, "batch_size": 64, "optimizer": "adamw", "schedule": "step",
               "weight_decay": 0.0, "label_smoothing": 0.1, "crop": False, "flip": True}
    for name, value in changes.items():
        other = StudyConfig(teacher={**base.teacher.model_dump(), name: value})
        assert recipe_key(other, digits, policy) != key, name
    member = StudyConfig(teacher={"ensemble": [{"family": "cnn5"}, {"family": "cnn5", "recipe": {"epochs": 3}}]})
    assert recipe_key(member, digits, policy, member=0) != recipe_key(member, digits, policy, member=1)


def test_member_recipe_overrides_are_checked_and_inherit_the_teachers():
    cfg = StudyConfig(teacher={"ensemble": [{"family": "cnn5", "recipe": {"epochs": 3}}, {"checkpoint": "x.pt"}],
                               "schedule": "cosine", "combine": "jointnet", "joint_recipe": {"lr": 0.01}}).teacher
    assert (cfg.member_recipe(0).epochs, cfg.member_recipe(0).schedule) == (3, "cosine")
    assert (cfg.joint_stage_recipe().lr, cfg.joint_stage_recipe().schedule) == (0.01, "cosine")
    with pytest.raises(ValueError, match=r"ensemble\[0\].recipe.epochs = -3 is out of range"):
        StudyConfig(teacher={"ensemble": [{"family": "cnn5", "recipe": {"epochs": -3}}]})
    with pytest.raises(ValueError, match="2 or more members"):
        StudyConfig(teacher={"ensemble": [{"family": "cnn5"}], "combine": "jointnet"})


# --------------------------------------------------------------------------- AvNet and JointNet


def test_avnet_logits_are_the_mean_of_the_members(digits):
    members = [_member("cnn5", digits, 0), _member("vgg", digits, 1)]
    x = digits.val_images[:16].float() / 255.0
    expected = torch.stack([deployable(m.model, m.mean, m.std)(x) for m in members]).mean(0)
    torch.testing.assert_close(Teacher(members)(x), expected)


def test_jointnet_loss_is_the_sum_of_the_three_cross_entropies():
    gen = torch.Generator().manual_seed(0)
    z1, z2, joint = (torch.randn(8, 10, generator=gen) for _ in range(3))
    y = torch.randint(0, 10, (8,), generator=gen)
    expected = F.cross_entropy(z1, y) + F.cross_entropy(z2, y) + F.cross_entropy(joint, y)
    torch.testing.assert_close(jointnet_loss([z1, z2], joint, y), expected)


@pytest.mark.parametrize("family", family_names())
def test_every_family_has_a_last_block_and_a_classifier_reading_its_features(family):
    knobs = {**family_knobs(family), **SMALL.get(family, {})}
    net = build_model(family, num_classes=10, in_channels=3, image_size=8, **knobs).eval()
    teacher = Teacher([TeacherMember(net, (0.5,) * 3, (0.25,) * 3)])
    (logits,), (features,) = teacher.member_outputs(torch.rand(2, 3, 8, 8))
    torch.testing.assert_close(final_linear(net)(features), logits)
    inside = {id(p) for block in last_blocks(net) for p in block.parameters()}
    assert inside and inside < {id(p) for p in net.parameters()}
    assert {id(p) for p in final_linear(net).parameters()} <= inside


def test_jointnet_trains_exactly_the_last_blocks_and_the_head(small):
    teacher = new_jointnet([_member("cnn5", small, 0), _member("vgg", small, 1)], small.num_classes)
    cnn, vgg = teacher.members
    last_conv = max(i for i, m in enumerate(vgg.features) if isinstance(m, torch.nn.Conv2d))
    expected = ({f"members.0.{n}" for n, _ in cnn.named_parameters() if n.startswith(("features.2.", "classifier."))}
                | {f"members.1.{n}" for n, _ in vgg.named_parameters()
                   if n.startswith((f"features.{last_conv}.", f"features.{last_conv + 1}.", "classifier."))}
                | {"joint.weight", "joint.bias"})
    names = {id(p): n for n, p in teacher.named_parameters()}
    assert {names[id(p)] for p in jointnet_parameters(teacher)} == expected
    assert {n for n, p in teacher.named_parameters() if p.requires_grad} == expected

    before = {n: t.clone() for n, t in teacher.state_dict().items()}
    history = train_jointnet(teacher, small, recipe=TeacherRecipe(epochs=1, batch_size=32, lr=0.05),
                             policy=AugmentPolicy(), device=CPU)
    after = teacher.state_dict()
    changed = {n for n in before if not torch.equal(before[n], after[n]) and "num_batches" not in n}
    trained_params = {n for n in changed if n in expected}
    assert trained_params == expected  # every trainable parameter moved
    frozen_changed = {n for n in changed if n not in expected and not n.endswith(("running_mean", "running_var"))}
    assert not frozen_changed
    # Only the unfrozen blocks' batch-norm statistics move: the trunk runs in eval mode.
    stats = {n.rsplit(".", 1)[0] for n in changed if n.endswith("running_mean")}
    assert stats and all(f"{s}.weight" in expected for s in stats)
    assert len(history) == 1 and 0.0 <= history[0]["accuracy"] <= 1.0


def test_study_trained_jointnet_is_cached_by_recipe_and_reported(small, tmp_path):
    study = _ensemble_study(tmp_path, combine="jointnet", joint_recipe={"epochs": 1, "lr": 0.02})
    teacher, summary = build_teacher(study, small, AugmentPolicy(), CPU)
    assert teacher.joint is not None and summary["ensemble"] == "jointnet" and summary["weights"] is None
    assert len(summary["member_validation_accuracy"]) == 2 and summary["joint_head"]
    files = sorted(tmp_path.glob("teacher-*.pt"))
    assert [p.name for p in files] == ["teacher-jointnet.pt", "teacher-member0.pt", "teacher-member1.pt"]
    stamps = [p.stat().st_mtime_ns for p in files]
    assert load_checkpoint(files[1])["teacher_recipe"] == study.teacher.member_recipe(0).model_dump(mode="json")

    again, summary2 = build_teacher(study, small, AugmentPolicy(), CPU)
    assert [p.stat().st_mtime_ns for p in files] == stamps and summary2["id"] == summary["id"]
    x = small.val_images[:8].float() / 255.0
    torch.testing.assert_close(again(x), teacher(x))

    avnet = _ensemble_study(tmp_path)  # same members, averaged: nothing retrained
    _, summary3 = build_teacher(avnet, small, AugmentPolicy(), CPU)
    assert [p.stat().st_mtime_ns for p in files] == stamps
    assert summary3["ensemble"] == "avnet" and summary3["weights"] == [0.5, 0.5] and summary3["id"] != summary["id"]

    retuned = _ensemble_study(tmp_path, combine="jointnet", joint_recipe={"epochs": 1, "lr": 0.03})
    _, summary4 = build_teacher(retuned, small, AugmentPolicy(), CPU)
    assert summary4["id"] != summary["id"]
    assert [p.stat().st_mtime_ns for p in files][1:] == stamps[1:]  # members kept, joint stage retrained


def test_jointnet_of_checkpoints_leaves_their_files_alone(small, tmp_path):
    from autokd.checkpoint import save_checkpoint

    paths = []
    for i, family in enumerate(TINY):
        net = _member(family, small, i).model
        paths.append(save_checkpoint(tmp_path / f"{family}.pt", net, family=family, knobs=net.knobs,
                                     num_classes=small.num_classes, in_channels=small.channels,
                                     image_size=small.image_size, mean=small.mean, std=small.std))
    stamps = [p.stat().st_mtime_ns for p in paths]
    study = StudyConfig(output=str(tmp_path / "out"), teacher={
        "ensemble": [{"checkpoint": str(p)} for p in paths], "combine": "jointnet",
        "joint_recipe": {"epochs": 1, "batch_size": 32}})
    teacher, summary = build_teacher(study, small, AugmentPolicy(), CPU)
    assert summary["ensemble"] == "jointnet" and (tmp_path / "out" / "teacher-jointnet.pt").exists()
    assert [p.stat().st_mtime_ns for p in paths] == stamps
    assert not any(p.requires_grad for p in teacher.parameters())

def test_jointnet_refuses_a_member_it_cannot_split():
    with pytest.raises(AutokdError, match="last block"):
        last_blocks(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2)))


def test_a_trained_member_with_an_unknown_knob_fails_in_one_line():
    from autokd.teacher import validate_teacher

    study = StudyConfig(teacher={"ensemble": [{"family": "cnn5"}, {"family": "vgg", "knobs": {"depth": 3}}]})
    with pytest.raises(AutokdError, match=r"teacher.ensemble\[1\] family 'vgg' has no knob 'depth'"):
        validate_teacher(study)


def test_teacher_train_cli_takes_the_recipe(tmp_path):
    from typer.testing import CliRunner

    from autokd.cli import app

    out = tmp_path / "t.pt"
    args = ["teacher", "train", "--out", str(out), "--family", "cnn5", "--knob", "width=0.125", "--knob", "hidden=16",
            "--epochs", "1", "--schedule", "step", "--weight-decay", "0", "--no-flip"]
    result = CliRunner().invoke(app, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    recipe = load_checkpoint(out)["teacher_recipe"]
    assert (recipe["schedule"], recipe["weight_decay"], recipe["flip"], recipe["label_smoothing"]) == ("step", 0.0,
                                                                                                     False, 0.0)
    bad = CliRunner().invoke(app, args[:-5] + ["--schedule", "linear"], catch_exceptions=False)
    lines = [line for line in bad.output.splitlines() if line.strip()]
    assert bad.exit_code == 2 and len(lines) == 1 and "--schedule linear" in lines[0], bad.output  # names the flag typed


# --------------------------------------------------------------------------- shipped studies


def _commented_blocks(path):
    """Each YAML block indented under a '... in a copy of this file set' comment (variants, CPU-sized override)."""
    lines, blocks = path.read_text().splitlines(), []
    for start, line in enumerate(lines):
        if "in a copy of this file set" in line:
            block = []
            for body in lines[start + 1:]:
                if not body.startswith("#   "):
                    break
                block.append(body[4:])
            blocks.append(yaml.safe_load("\n".join(block)))
    return blocks


@pytest.mark.parametrize("name", ["paper-distiller-kd", "paper-distiller-ensembles"])
def test_distiller_studies_their_variants_and_cpu_overrides_validate(name):
    from autokd.config import REPO_ROOT
    from autokd.space import SearchSpace

    path = REPO_ROOT / "studies" / f"{name}.yaml"
    cfg = load_study_config(path)
    space_path = cfg.resolve(cfg.search_space)
    space = SearchSpace.load(space_path)
    assert space.families == {"vgg": {"variant": 7, "width": 1.0}, "cnn5": {"width": 1.0, "hidden": 128}}
    d = space.distill
    assert d["weighting"] == "distiller" and d["student_weight"] == d["distill_weight"] == 0.5
    assert d["temperature"].float_ == (1.35, 1.5) and set(d["loss"].choices) == {"kd", "none"}
    assert cfg.dataset == "imagefolder:data" and cfg.subset_train is None and cfg.teacher.label_smoothing == 0.0
    variants = [StudyConfig(**{**yaml.safe_load(path.read_text()), **block, "base_dir": str(path.parent)})
                for block in _commented_blocks(path)]
    assert variants[-1].subset_train == 2000 and variants[-1].executor.kind == "local"
    cpu_space = SearchSpace({**yaml.safe_load(space_path.read_text()), **_commented_blocks(space_path)[0]})
    assert cpu_space.train["epochs"] == 2
    if name == "paper-distiller-kd":
        assert (cfg.teacher.family, variants[0].teacher.family, variants[0].teacher.knobs["variant"]) == (
            "resnet18", "vgg", 16)
    else:
        assert (cfg.teacher.combine, variants[0].teacher.combine) == ("jointnet", "average")
        assert [m.family for m in cfg.teacher.ensemble] == ["resnet18", "vgg"]
        assert cfg.teacher.ensemble[1].knobs["variant"] == 16 and all(m.weight == 1.0 for m in cfg.teacher.ensemble)
