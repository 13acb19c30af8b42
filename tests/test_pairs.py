"""Ensemble teachers (weighted and joint-head), on digits. Committees (pairs, cascades): tests/test_committees.py."""

from __future__ import annotations

import pytest
import torch
from rich.console import Console

from autokd.data import load_dataset
from autokd.train import AugmentPolicy
from tests.tiny import TEST_SEED


@pytest.fixture(scope="module")
def two_members(tmp_path_factory):
    from autokd.checkpoint import save_checkpoint
    from autokd.teacher import train_teacher

    folder = tmp_path_factory.mktemp("members")
    data = load_dataset("digits").with_validation(0.1, seed=TEST_SEED)
    paths = []
    for i, (family, knobs) in enumerate((("cnn5", {"width": 0.125, "hidden": 16}), ("vgg", {"width": 0.0625}))):
        net, acc = train_teacher(data, family=family, knobs=knobs, epochs=1, lr=0.05, batch_size=64,
                                 policy=AugmentPolicy(), device=torch.device("cpu"), seed=i + TEST_SEED)
        paths.append(save_checkpoint(folder / f"m{i}.pt", net, family=family, knobs=net.knobs,
                                     num_classes=data.num_classes, in_channels=data.channels,
                                     image_size=data.image_size, mean=data.mean, std=data.std, accuracy=acc))
    return data, paths


def test_ensemble_weights_fitted_on_validation_are_reproducible(two_members):
    from autokd.config import StudyConfig
    from autokd.teacher import build_teacher

    data, paths = two_members
    study = StudyConfig(teacher={"ensemble": [{"checkpoint": str(p)} for p in paths], "fit_weights": True}, seed=3)
    runs = [build_teacher(study, data, AugmentPolicy(), torch.device("cpu"))[1] for _ in range(2)]
    assert runs[0]["weights"] == runs[1]["weights"]
    assert sum(runs[0]["weights"]) == pytest.approx(1.0)
    assert runs[0]["kind"] == "ensemble" and len(runs[0]["member_validation_accuracy"]) == 2
    assert 0.0 <= runs[0]["accuracy"] <= 1.0
    other = build_teacher(study.with_overrides(seed=4), data,
                          AugmentPolicy(), torch.device("cpu"))[1]
    assert other["member_test_accuracy"] == runs[0]["member_test_accuracy"]  # members fixed; only the fit is seeded


def test_report_shows_ensemble_next_to_members(two_members):
    from autokd.report import rich_table, teacher_section

    teacher = {"kind": "ensemble", "members": ["cnn5(a)", "vgg(b)"], "member_validation_accuracy": [0.9, 0.8],
               "member_test_accuracy": [0.85, 0.75], "weights": [0.7, 0.3], "accuracy": 0.93,
               "validation_accuracy": 0.93, "test_accuracy": 0.91}
    console = Console(record=True, width=160)
    console.print(rich_table(teacher_section(teacher)))
    text = console.export_text()
    assert "cnn5(a)" in text and "90.00%" in text and "80.00%" in text and "93.00%" in text and "0.700" in text
    assert "85.00%" in text and "91.00%" in text and "val acc" in text and "test acc" in text


def test_joint_head_teacher_is_reproducible_and_reported(two_members, figure):
    from autokd.config import StudyConfig
    from autokd.report import rich_table, teacher_section
    from autokd.teacher import build_teacher

    data, paths = two_members
    plain = StudyConfig(teacher={"ensemble": [{"checkpoint": str(p)} for p in paths], "fit_weights": True})
    joint = StudyConfig(teacher={"ensemble": [{"checkpoint": str(p)} for p in paths], "joint_head": True})
    teachers = [build_teacher(joint, data, AugmentPolicy(), torch.device("cpu")) for _ in range(2)]
    assert torch.equal(teachers[0][0].head.weight, teachers[1][0].head.weight)
    summary = teachers[0][1]
    assert summary["joint_head"] and summary["id"] != build_teacher(plain, data, AugmentPolicy(),
                                                                    torch.device("cpu"))[1]["id"]
    assert figure("joint / best member", summary["accuracy"] / max(summary["member_validation_accuracy"])) >= 0.5
    console = Console(record=True, width=160)
    console.print(rich_table(teacher_section(summary)))
    assert "ensemble (joint head)" in console.export_text()
