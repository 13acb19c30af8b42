"""bench/published_tables.py's pure parts: the CPU-sized study, the rows read from a study, the doc table."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from bench import published_tables as pt
from autokd.config import StudyConfig
from autokd.space import SearchSpace


def _study(teacher_acc: float, trials: list[tuple[dict, float]], **size) -> dict:
    return {"status": "ok", "size": {"teacher_epochs": 3, "student_epochs": 2, "train_images": 1800, **size},
            "teacher": {"test_accuracy": teacher_acc, "member_test_accuracy": [0.40, 0.30]},
            "trials": [{"number": i, "config": cfg, "test_accuracy": acc} for i, (cfg, acc) in enumerate(trials)]}


def test_rows_read_the_teacher_members_and_the_trial_with_the_rows_config():
    results = {
        "paper-distiller-kd": _study(0.45, [({"family": "cnn5", "loss": "kd"}, 0.30),
                                            ({"family": "vgg", "loss": "none"}, 0.25)]),
        "paper-distiller-avnet": _study(0.50, [({"family": "vgg", "loss": "kd"}, 0.11)]),
        "paper-kd-vs-hints": {"status": "failed", "error": "error: boom; fix: x"},
    }
    rows = {(r["study"], r["setup"]): r for r in pt.table_rows(results)}
    teacher = rows["paper-distiller-kd", "ResNet-18 (teacher)"]
    assert teacher["ours"] == pytest.approx(45.0) and teacher["gap_points"] == pytest.approx(45.0 - 94.59)
    assert teacher["reason"] == "3-epoch training on 1,800 images (3.6% of the data)"
    vgg = rows["paper-distiller-kd", "VGG7 alone"]
    assert (vgg["ours"], vgg["trial"]) == (pytest.approx(25.0), 1)
    assert vgg["reason"] == "2-epoch student on 1,800 images (3.6% of the data)"   # labels only: no teacher
    cnn = rows["paper-distiller-kd", "5-CNN, KD from ResNet-18"]
    assert cnn["reason"].endswith("distilled from a 3-epoch teacher at 45.0%")
    avnet = rows["paper-distiller-avnet", "AvNet (ResNet-18 + VGG16, logit average)"]
    assert "near chance (10%)" not in avnet["reason"]
    member = rows["paper-distiller-avnet", "VGG16 (AvNet member)"]   # 30%: not near chance
    assert member["reason"].endswith("VGG16 trained as an ensemble member (seed + 1)")
    assert rows["paper-distiller-kd", "5-CNN alone"]["ours"] is None   # no trial with loss none
    assert rows["paper-distiller-avnet", "VGG16 (AvNet member)"]["ours"] == pytest.approx(30.0)
    assert "near chance (10%)" in rows["paper-distiller-avnet", "VGG7, KD from AvNet"]["reason"]   # teacher at 50%
    assert rows["paper-kd-vs-hints", "ResNet-56 (teacher)"]["reason"] == "not run: error: boom; fix: x"
    assert rows["paper-selector-pair", "ResNet-50 (teacher)"]["reason"] == "not run"


def test_split_sizes_survive_a_wrapped_line():
    log = "dataset imagefolder:x (900 train / 100 \nvalidation / 500 test, 3x32x32)"
    assert pt.split_sizes(log) == {"train_images": 900, "validation_images": 100, "test_images": 500}
    assert pt.split_sizes("no such line") == {}


def test_a_pair_members_row_reads_the_pair_trials_member_accuracy():
    study = _study(0.5, [({"kind": "pair"}, 0.42)])
    study["trials"][0]["member_test_accuracy"] = [0.35, 0.33]
    rows = {r["setup"]: r for r in pt.table_rows({"paper-selector-pair": study}) if r["study"] == "paper-selector-pair"}
    assert rows["DenseNet-121 (pair member, KD from ResNet-50)"]["ours"] == pytest.approx(35.0)
    assert rows["GoogLeNet (pair member, KD from ResNet-50)"]["ours"] == pytest.approx(33.0)
    assert rows["DenseNet-121 + GoogLeNet pair, 0.54M selector"]["ours"] == pytest.approx(42.0)


def test_render_and_rewrite_keep_the_text_outside_the_markers():
    lines = [{"study": "s", "setup": "a", "trial": None, "ours": 40.0, "published": 94.59, "gap_points": -54.59,
              "reason": "r"},
             {"study": "s", "setup": "b", "trial": 2, "ours": None, "published": None, "gap_points": None, "reason": ""}]
    table = pt.render_table(lines)
    assert table.splitlines()[2] == "| s | a | 40.00% | 94.59% | -54.59 | r |"
    assert table.splitlines()[3] == "| s | b | - | - | - | - |"
    with_gpu = pt.render_table(lines, [{"study": "s", "setup": "a", "ours": 93.0}])
    assert "ours (published scale)" in with_gpu and "| s | a | 40.00% | 93.00% | 94.59% |" in with_gpu
    doc = f"intro\n{pt.MARK_START}\nold\n{pt.MARK_END}\nafter\n"
    once = pt.rewrite_doc(doc, table, "note")
    assert once.startswith("intro\n") and once.endswith(f"{pt.MARK_END}\nafter\n") and "old" not in once
    assert pt.rewrite_doc(once, table, "note") == once


def test_the_shipped_doc_has_the_markers():
    text = pt.DOC.read_text()
    assert pt.MARK_START in text and pt.MARK_END in text


@pytest.mark.parametrize("name", [n for n, p in pt.STUDIES.items() if (pt.REPO / p.file).exists()])
def test_cpu_size_changes_sizes_only_and_every_row_is_in_the_space(name: str, tmp_path: Path):
    paper = pt.STUDIES[name]
    study, space, enqueue = pt.derive(paper, "cpu", dict(pt.CPU_SIZE), tmp_path, "imagefolder:/data")
    shipped = yaml.safe_load((pt.REPO / paper.file).read_text())
    for key in ("lr", "optimizer", "schedule", "weight_decay", "label_smoothing"):
        assert study["teacher"].get(key) == shipped["teacher"].get(key)
    assert study["n_trials"] == len(enqueue) and study["executor"] == {"kind": "local"}
    size = {**pt.CPU_SIZE, **paper.size}                   # a heavier study sets its own size
    assert space["train"]["epochs"] == size["student_epochs"]
    assert study["teacher"]["epochs"] == size["teacher_epochs"]
    assert pt.study_size(paper, dict(pt.CPU_SIZE)) == size  # what the JSON records as the study's size
    for path, (key, _) in paper.fixed_epochs.items():
        section, name = path.split(".")
        assert space[section][name] == size[key]
    cfg = StudyConfig(**study)                              # valid as a study
    Path(study["search_space"]).write_text(yaml.safe_dump(space))
    SearchSpace.load(study["search_space"])                 # valid as a space
    assert (cfg.subset_train, cfg.subset_test) == (size["subset_train"], size["subset_test"])


def test_a_student_near_chance_behind_a_teacher_near_chance_says_so():
    study = _study(0.11, [({"family": "vgg", "loss": "kd"}, 0.10), ({"family": "vgg", "loss": "none"}, 0.12)])
    rows = {r["setup"]: r["reason"] for r in pt.table_rows({"paper-distiller-kd": study})
            if r["study"] == "paper-distiller-kd"}
    assert rows["VGG7, KD from ResNet-18"].endswith("teacher at 11.0%; near chance (10%), as its teacher")
    assert rows["VGG7 alone"].endswith("near chance (10%): the cut schedule ends before it learns")


def test_a_failed_study_keeps_its_teacher_and_names_the_trial_failure():
    study = {**_study(0.103, []), "status": "failed", "error": "error: no trial finished",
             "failed_trials": ["FloatingPointError: training diverged at epoch 1 (loss nan)"]}
    rows = {r["setup"]: r for r in pt.table_rows({"paper-selector-pair": study}) if r["study"] == "paper-selector-pair"}
    assert rows["ResNet-50 (teacher)"]["ours"] == pytest.approx(10.3)
    assert rows["DenseNet-121 + GoogLeNet pair, 0.54M selector"]["reason"] == (
        "trial failed: FloatingPointError: training diverged at epoch 1 (loss nan)")
