"""docs/your-model.md, run end to end on small data: its YAML files and its `autokd` commands, as written.

The page's YAML blocks (each opens with a ``# FILE`` comment) are written to a project folder and
its shell blocks' ``autokd ...`` lines run there through the CLI, so the page cannot drift from what
autokd does. What the page assumes the user has is made here, since nothing can be downloaded: a
CSV of real CIFAR-10 images (``cifar_subset_dir``), a teacher trained for a few epochs and written
as TorchScript by autokd's own export code, and safetensors weights of a timm student trained on
6 of the 10 classes.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shlex
import shutil
from pathlib import Path

import optuna
import pytest
import torch

from autokd.cli import app
from tests.tiny import TEST_SEED

DOC = Path(__file__).resolve().parents[1] / "docs" / "your-model.md"
CPU = torch.device("cpu")
#: Training images per class the page's CSV lists (the subset has 20): every trial trains on them,
#: and no assertion depends on how well; the 10 test images per class stay.
TRAIN_PER_CLASS = 10
pytestmark = pytest.mark.slow


def doc_files() -> dict[str, str]:
    """The page's YAML blocks by the file name of their first line (``# study.yaml``)."""
    blocks = re.findall(r"```yaml\n(.*?)```", DOC.read_text(), flags=re.S)
    files = {}
    for block in blocks:
        first = block.splitlines()[0]
        match = re.fullmatch(r"# (\S+\.yaml)", first.strip())
        assert match, f"a YAML block of {DOC.name} does not open with '# FILE.yaml': {first!r}"
        files[match.group(1)] = block
    return files


def doc_commands() -> list[str]:
    """Every ``autokd ...`` line of the page's shell blocks, in order."""
    blocks = re.findall(r"```bash\n(.*?)```", DOC.read_text(), flags=re.S)
    return [line.strip() for block in blocks for line in block.splitlines() if line.strip().startswith("autokd ")]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One torch thread unless AUTOKD_TEST_THREADS says otherwise: on a busy 2-core host two spinning
    OpenMP threads ran these trials 10x slower (docs/testing.md)."""
    if os.environ.get("AUTOKD_TEST_THREADS"):
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def write_csv(path: Path, rows: list[tuple[str, str, str]]) -> Path:
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "label", "split"])
        writer.writerows(rows)
    return path


@pytest.fixture(scope="module")
def project(cifar_subset_dir, tmp_path_factory) -> Path:
    """What the page starts from: images + images.csv, teacher.ts, pretrained/*.safetensors, new/,
    and the page's YAML files."""
    from safetensors.torch import save_file

    from autokd.checkpoint import save_checkpoint
    from autokd.config import StudyConfig
    from autokd.context import augment_policy, load_study_data
    from autokd.export import export_metadata, export_model, load_trial_model
    from autokd.models import build_model
    from autokd.teacher import train_teacher

    root = tmp_path_factory.mktemp("your-model")
    rows = []
    taken: dict[tuple[str, str], int] = {}
    for image in sorted(cifar_subset_dir.rglob("*.jpg")):
        split, label, name = image.relative_to(cifar_subset_dir).parts
        taken[split, label] = taken.get((split, label), 0) + 1
        if split == "train" and taken[split, label] > TRAIN_PER_CLASS:
            continue
        target = root / "images" / split / label / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(image, target)
        rows.append((str(target.relative_to(root)), label, split))
    write_csv(root / "images.csv", rows)
    (root / "new").mkdir()
    for row in [r for r in rows if r[2] == "test"][::25]:  # 4 unlabelled images to classify once deployed
        shutil.copyfile(root / row[0], root / "new" / Path(row[0]).name)

    def data_of(table: Path):
        cfg = StudyConfig(dataset=f"csv:{table}", seed=TEST_SEED)
        return cfg, load_study_data(cfg, show_progress=False)

    # The user's teacher: trained elsewhere, here for a few epochs, and written as TorchScript.
    cfg, data = data_of(root / "images.csv")
    net, acc = train_teacher(data, family="cnn5", knobs={"width": 0.5}, epochs=6, lr=0.05, batch_size=32,
                             policy=augment_policy(cfg, data), device=CPU, seed=TEST_SEED)
    save_checkpoint(root / "trained.pt", net, family="cnn5", knobs=net.knobs, num_classes=data.num_classes,
                    in_channels=data.channels, image_size=data.image_size, mean=data.mean, std=data.std,
                    accuracy=acc, dataset="images.csv")
    model, payload = load_trial_model(root / "trained.pt")
    export_model(model, "torchscript", root / "teacher.ts", torch.zeros(2, 3, 32, 32),
                 export_metadata(payload, classes=list(data.classes), study=None, trial=None))
    (root / "trained.pt").unlink()

    # Weights the user has for a student architecture: trained briefly on 6 of the 10 classes.
    six = [r for r in rows if r[1] in data.classes[:6]]
    six_cfg, six_data = data_of(write_csv(root / "six.csv", six))
    pretrained, _ = train_teacher(six_data, family="timm/mobilenetv3_small_050", knobs={}, epochs=2, lr=0.02,
                                  batch_size=32, policy=augment_policy(six_cfg, six_data), device=CPU, seed=TEST_SEED)
    (root / "pretrained").mkdir()
    save_file({k: v.contiguous() for k, v in pretrained.state_dict().items() if not k.startswith("hint_layer.")},
              str(root / "pretrained" / "mobilenetv3_small_050.safetensors"))
    # A timm teacher's weights (the variant): a state dict of 6 classes, so its head is new.
    teacher_six = build_model("timm/resnet10t", num_classes=6, in_channels=3, image_size=32)
    save_file({k: v.contiguous() for k, v in teacher_six.state_dict().items() if not k.startswith("hint_layer.")},
              str(root / "pretrained" / "resnet10t.safetensors"))

    for name, text in doc_files().items():
        (root / name).write_text(text)
    return root


def run_doc(project: Path, monkeypatch, commands: list[str]) -> dict[str, str]:
    """Run ``commands`` in the project folder through the CLI; each must exit 0. Returns their output."""
    from typer.testing import CliRunner

    monkeypatch.chdir(project)
    monkeypatch.setenv("COLUMNS", "200")
    outputs = {}
    for command in commands:
        result = CliRunner().invoke(app, shlex.split(command)[1:], catch_exceptions=False)
        assert result.exit_code == 0, f"{command}\n{result.output}"
        outputs[command] = result.output
    return outputs


def test_the_page_runs_from_a_model_file_and_a_csv_to_an_onnx_student(project, monkeypatch):
    from autokd.config import load_study_config
    from autokd.context import load_study_data
    from autokd.export import exported_predictions, read_metadata
    from autokd.measure import accuracy

    commands = [c for c in doc_commands() if "study-timm.yaml" not in c]
    assert [c.split()[1] for c in commands] == ["check", "search", "report", "export", "predict", "predict"]
    out = run_doc(project, monkeypatch, commands)
    checked = out["autokd check study.yaml"]
    assert "TorchScript" in checked and "normalised inside; 10 classes (named in the file)" in checked, checked

    cfg = load_study_config(project / "study.yaml")
    study = optuna.load_study(study_name="defects", storage=cfg.storage_url)
    done = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert len(done) == cfg.n_trials
    data = load_study_data(cfg, show_progress=False)
    by_file = accuracy(torch.nn.functional.one_hot(
        exported_predictions(project / "teacher.ts", "torchscript", data.test_images), 10).float(), data.test_labels)
    assert study.user_attrs["teacher"]["test_accuracy"] == by_file  # what the file gives on the same images

    export = next(v for k, v in out.items() if k.startswith("autokd export"))
    assert "agree with PyTorch on 100.00%" in export, export
    trial = int(re.search(r"--trial (\d+)", next(k for k in out if k.startswith("autokd export"))).group(1))
    meta = read_metadata(project / "student.onnx")
    assert meta["family"] == study.trials[trial].params.get("family", meta["family"])
    assert ("weights_file" in meta) == bool(study.trials[trial].params.get(f"{meta['family']}.weights"))

    assert all(name in out["autokd predict student.onnx new/"] for name in (p.name for p in (project / "new").iterdir()))
    scored = out["autokd predict student.onnx images.csv --format json"]
    doc = json.loads(scored[scored.index("{"):])
    assert len(doc["predictions"]) == len(list((project / "images").rglob("*.jpg"))) and 0 <= doc["accuracy"] <= 1


def test_the_pages_timm_teacher_from_weights_runs_a_study_to_completion(project, monkeypatch):
    """The page's variant: ``teacher.family: timm/...`` with ``teacher.weights``; the recorded teacher
    accuracy is what the fine-tuned teacher (the study's cached teacher.pt) gives on the same images."""
    from autokd.config import load_study_config
    from autokd.context import load_study_data
    from autokd.export import load_trial_model
    from autokd.measure import accuracy
    from autokd.train import predict

    commands = [c for c in doc_commands() if "study-timm.yaml" in c]
    assert commands == ["autokd search study-timm.yaml"]
    run_doc(project, monkeypatch, commands)
    cfg = load_study_config(project / "study-timm.yaml")
    study = optuna.load_study(study_name="defects-timm", storage=cfg.storage_url)
    assert len(study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))) == cfg.n_trials
    teacher, _ = load_trial_model(cfg.output_dir / "teacher.pt")
    data = load_study_data(cfg, show_progress=False)
    assert study.user_attrs["teacher"]["test_accuracy"] == accuracy(predict(teacher, data.test_images),
                                                                     data.test_labels)
    assert "timm/resnet10t" in json.dumps(study.user_attrs["teacher"]["members"])
