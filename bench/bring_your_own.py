"""Your model, your data (issue 24) on a CIFAR-10 subset from ../shared/data, listed in CSV files.

(a) One teacher as an autokd checkpoint, as TorchScript and as ONNX (both written by autokd's own
    export code): the same study (same seed, one fixed student) with each, the student's accuracy
    and the trial's time.
(b) A student started from weights pretrained on 6 CIFAR-10 classes, distilled on the other 4,
    against the same student from scratch at equal epochs: mean of 3 seeds each, and the gain.
(c) A study with cnn5, timm/ and torchvision/ students and the TorchScript teacher: its Pareto front.

    python -m bench.bring_your_own             # about 5 minutes on a busy 2-core host
    python -m bench.bring_your_own --scale 4   # 4x the images per class and 2x the epochs

Every study runs through the CLI (``autokd teacher train``, ``autokd search``, in this process) with
one torch thread (on a busy host two spinning OpenMP threads ran trials 10x slower). Results:
bench/results/bring_your_own.json, with the load average at start and end.
"""

from __future__ import annotations

import argparse
import csv
import os
import random
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import optuna  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402

from bench.common import cifar10_folder, write_result  # noqa: E402

CPU = torch.device("cpu")
SIX = ("airplane", "automobile", "bird", "cat", "deer", "dog")
FOUR = ("frog", "horse", "ship", "truck")


def cli(*args: str) -> str:
    from typer.testing import CliRunner

    from autokd.cli import app

    result = CliRunner().invoke(app, list(args), catch_exceptions=False, env={"COLUMNS": "200"})
    if result.exit_code != 0:
        raise SystemExit(f"autokd {' '.join(args)} exited {result.exit_code}:\n{result.output[-4000:]}")
    return result.output


def write_table(root: Path, name: str, cifar: Path, classes: tuple[str, ...], train: int, test: int) -> Path:
    """A CSV of ``train``/``test`` images per class of ``classes`` (the first files of each, sorted)."""
    path = root / f"{name}.csv"
    with path.open("w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["path", "label", "split"])
        for split, n in (("train", train), ("test", test)):
            for label in classes:
                for image in sorted((cifar / split / label).iterdir())[:n]:
                    out.writerow([str(image), label, split])
    return path


def study(root: Path, name: str, dataset: Path, teacher: dict, space: dict, seed: int = 0, n_trials: int = 1,
          objectives: tuple[str, ...] = ("accuracy", "params")) -> optuna.Study:
    """Write and run one study through the CLI; returns it."""
    (root / f"{name}-space.yaml").write_text(yaml.safe_dump(space))
    path = root / f"{name}.yaml"
    path.write_text(yaml.safe_dump({
        "name": name, "dataset": f"csv:{dataset}", "teacher": teacher, "search_space": f"{name}-space.yaml",
        "objectives": list(objectives), "n_trials": n_trials, "seed": seed, "output": str(root / "runs" / name),
        "latency_runs": 10, "latency_min_seconds": 0.1, "executor": {"kind": "local"}}))
    cli("search", str(path))
    return optuna.load_study(study_name=name, storage=f"sqlite:///{root / 'runs' / name / 'study.db'}")


def trial_row(trial: optuna.trial.FrozenTrial) -> dict:
    attrs = trial.user_attrs
    return {"trial": trial.number, "student": attrs.get("architecture"), "params": attrs.get("params"),
            "validation_accuracy": attrs["validation_accuracy"], "test_accuracy": attrs["test_accuracy"],
            "trial_seconds": round(attrs["trial_seconds"], 2)}


def teacher_row(s: optuna.Study) -> dict:
    t = s.user_attrs["teacher"]
    return {"members": t.get("members"), "validation_accuracy": t["validation_accuracy"],
            "test_accuracy": t["test_accuracy"], "params": t.get("params")}


def file_outputs(files: dict[str, Path], table: Path) -> dict:
    """Each file's logits on the table's test images against the checkpoint's: the largest difference and
    the share of equal predictions (the files are run as a study runs them: [0, 1] input, normalised inside)."""
    import onnxruntime as ort

    from autokd.config import StudyConfig
    from autokd.context import load_study_data
    from autokd.export import load_trial_model

    data = load_study_data(StudyConfig(dataset=f"csv:{table}"), show_progress=False)
    x = data.test_images.float() / 255.0
    with torch.no_grad():
        reference = load_trial_model(files["autokd checkpoint"])[0].eval()(x)
        scripted = torch.jit.load(str(files["TorchScript"])).eval()(x)
    session = ort.InferenceSession(str(files["ONNX"]), providers=["CPUExecutionProvider"])
    onnx = torch.from_numpy(session.run(None, {session.get_inputs()[0].name: x.numpy()})[0])
    return {kind: {"max_abs_logit_difference": float((out - reference).abs().max()),
                   "same_prediction_share": float((out.argmax(1) == reference.argmax(1)).float().mean())}
            for kind, out in (("TorchScript", scripted), ("ONNX", onnx))}


def same_teacher_three_files(root: Path, ten: Path, all10: tuple[str, ...], e: int) -> tuple[dict, dict]:
    """(a) One teacher as an autokd checkpoint, TorchScript and ONNX: the same student from each."""
    from autokd.export import export_metadata, export_model, load_trial_model

    teacher_epochs = 15 * e
    cli("teacher", "train", "--dataset", f"csv:{ten}", "--family", "cnn5", "--knob", "width=0.5", "--epochs",
        str(teacher_epochs), "--batch-size", "64", "--out", str(root / "teacher.pt"))
    model, payload = load_trial_model(root / "teacher.pt")
    meta = export_metadata(payload, classes=list(all10), study=None, trial=None)
    example = torch.zeros(2, 3, 32, 32)
    files = {"autokd checkpoint": root / "teacher.pt",
             "TorchScript": export_model(model, "torchscript", root / "teacher.ts", example, meta),
             "ONNX": export_model(model, "onnx", root / "teacher.onnx", example, meta)}
    fixed = {"students": {"cnn5": {"width": 0.25, "hidden": 64}},
             "distill": {"loss": "kd", "alpha": 0.9, "temperature": 4.0},
             "train": {"epochs": 6 * e, "batch_size": 64, "lr": 0.05}}
    same = []
    for kind, file in files.items():
        name = "a-" + {"autokd checkpoint": "checkpoint", "TorchScript": "torchscript", "ONNX": "onnx"}[kind]
        st = study(root, name, ten, {"checkpoint": str(file)}, fixed)
        same.append({"teacher_file": kind, "file": file.name, "teacher": teacher_row(st),
                     **trial_row(st.trials[0])})
    return files, {
        "teacher_outputs_against_the_checkpoint": file_outputs(files, ten),
        "teacher": f"cnn5 width 0.5, {teacher_epochs} epochs (autokd teacher train), exported by autokd",
        "student": f"cnn5 width 0.25 hidden 64, KD alpha 0.9 T 4, {6 * e} epochs, seed 0",
        "runs": same,
        "same_student_accuracy": len({(r["validation_accuracy"], r["test_accuracy"]) for r in same}) == 1,
        "test_points_from_the_checkpoints": {r["teacher_file"]: round(100 * (r["test_accuracy"] - same[0]["test_accuracy"]), 2)
                                             for r in same}}


def weights_of_other_classes(root: Path, six: Path, four: Path, e: int) -> dict:
    """(b) A student started from weights trained on other classes, against one from scratch, 3 seeds."""
    from safetensors.torch import save_file

    from autokd.checkpoint import load_checkpoint, network_from_checkpoint

    student = {"width": 0.5, "hidden": 128}
    pre_epochs, b_epochs, teacher_epochs = 10 * e, 6 * e, 15 * e
    cli("teacher", "train", "--dataset", f"csv:{six}", "--family", "cnn5", "--knob", "width=0.5", "--knob",
        "hidden=128", "--epochs", str(pre_epochs), "--batch-size", "64", "--out", str(root / "six.pt"))
    net = network_from_checkpoint(load_checkpoint(root / "six.pt"))
    weights = root / "cnn5-six-classes.safetensors"
    save_file({k: v.contiguous() for k, v in net.state_dict().items() if not k.startswith("hint_layer.")},
              str(weights))
    cli("teacher", "train", "--dataset", f"csv:{four}", "--family", "cnn5", "--knob", "width=0.5", "--epochs",
        str(teacher_epochs), "--batch-size", "64", "--out", str(root / "teacher-four.pt"))
    arms: dict[str, list] = {"from_weights": [], "from_scratch": []}
    for seed in (0, 1, 2):
        for arm, start in (("from_weights", str(weights)), ("from_scratch", None)):
            space = {"students": {"cnn5": {**student, **({"weights": start} if start else {})}},
                     "distill": {"loss": "kd", "alpha": 0.9, "temperature": 4.0},
                     "train": {"epochs": b_epochs, "batch_size": 64, "lr": 0.05}}
            st = study(root, f"b-{arm}-{seed}", four, {"checkpoint": str(root / "teacher-four.pt")}, space, seed=seed)
            arms[arm].append({"seed": seed, **trial_row(st.trials[0])})
    mean = {arm: statistics.mean(r["test_accuracy"] for r in rows) for arm, rows in arms.items()}
    mean_val = {arm: statistics.mean(r["validation_accuracy"] for r in rows) for arm, rows in arms.items()}
    return {
        "student": f"cnn5 width 0.5 hidden 128, KD alpha 0.9 T 4 from a cnn5 teacher of the 4 classes, {b_epochs} "
                   f"epochs either way",
        "pretrained": f"{pre_epochs} epochs on labels of {', '.join(SIX)} (autokd teacher train), saved as "
                      f"safetensors; its 6-class head replaced",
        "runs": arms,
        "mean_test_accuracy": mean, "mean_validation_accuracy": mean_val,
        "gain_test_points": round(100 * (mean["from_weights"] - mean["from_scratch"]), 2),
        "gain_validation_points": round(100 * (mean_val["from_weights"] - mean_val["from_scratch"]), 2)}


def front_with_timm_students(root: Path, ten: Path, teacher_file: Path, e: int) -> dict:
    """(c) A searched front whose space holds timm and torchvision students beside cnn5."""
    space = {"students": {"cnn5": {"width": {"float": [0.25, 0.5]}, "hidden": 64},
                          "timm/mobilenetv3_small_050": {},
                          "timm/resnet10t": {},
                          "torchvision/shufflenet_v2_x0_5": {}},
             "distill": {"loss": "kd", "alpha": {"float": [0.5, 0.9]}, "temperature": 4.0},
             "train": {"epochs": 6 * e, "batch_size": 64, "lr": 0.05}}
    st = study(root, "c-front", ten, {"checkpoint": str(teacher_file)}, space, n_trials=10,
               objectives=("accuracy", "params", "latency_ms"))
    done = [t for t in st.trials if t.state == optuna.trial.TrialState.COMPLETE]
    front = {t.number for t in st.best_trials}
    rows = [{**trial_row(t), "latency_ms": t.values[2], "on_front": t.number in front} for t in done]
    found = {
        "teacher": teacher_row(st), "objectives": ["accuracy (validation)", "params", "latency_ms"],
        "trials": rows,
        "front": [r for r in rows if r["on_front"]],
        "timm_on_front": [r["student"] for r in rows if r["on_front"] and "timm/" in str(r["student"])]}
    timm = [r for r in rows if "timm/" in str(r["student"])]
    if timm and not found["timm_on_front"]:
        best = max(timm, key=lambda r: r["validation_accuracy"])
        top = max(r["validation_accuracy"] for r in rows)
        found["finding"] = (
            f"no timm student is on the front at this size: the best, {best['student']} (trial {best['trial']}), "
            f"reached {100 * best['validation_accuracy']:.1f}% validation against {100 * top:.1f}% for the best "
            f"student, with {best['params'] / 1e6:.2f}M parameters; ImageNet-shaped networks trained from scratch "
            f"for {6 * e} epochs on 32 px images lose to cnn5 on every objective")
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=int, default=1, help="images per class x N, epochs x ceil(N/2)")
    parser.add_argument("--keep", type=Path, help="work in this folder (kept) instead of a temporary one")
    args = parser.parse_args()
    torch.set_num_threads(1)
    load_start = os.getloadavg()
    started = time.perf_counter()
    s, e = args.scale, (args.scale + 1) // 2
    cifar = cifar10_folder()
    root = args.keep or Path(tempfile.mkdtemp(prefix="autokd-byo-"))
    root.mkdir(parents=True, exist_ok=True)
    all10 = tuple(sorted(p.name for p in (cifar / "train").iterdir()))
    ten = write_table(root, "ten", cifar, all10, 200 * s, 100 * s)
    six = write_table(root, "six", cifar, SIX, 400 * s, 50 * s)
    four = write_table(root, "four", cifar, FOUR, 100 * s, 200 * s)
    result: dict = {"scale": args.scale, "work": str(root),
                    "data": {"ten": f"10 classes, {200 * s} train + {100 * s} test per class (CSV)",
                             "six": f"{', '.join(SIX)}: {400 * s} train per class", "four":
                             f"{', '.join(FOUR)}: {100 * s} train + {200 * s} test per class"}}

    files, result["a_same_teacher_three_files"] = same_teacher_three_files(root, ten, all10, e)
    result["b_weights_of_other_classes"] = weights_of_other_classes(root, six, four, e)
    result["c_front_with_timm_students"] = front_with_timm_students(root, ten, files["TorchScript"], e)
    result["wall_seconds"] = round(time.perf_counter() - started, 1)
    result["loadavg_start"] = [round(x, 2) for x in load_start]
    result["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    result["note"] = ("Timings (trial_seconds, wall_seconds) were taken on a shared, heavily loaded 2-core host "
                      "(see loadavg_start/end) with one torch thread: compare them only within this file. Accuracy "
                      "figures are not affected by load (same seed, same figures). Small subsets and few epochs: "
                      "the accuracies are low in absolute terms; the comparisons are the point.")
    print(write_result("bring_your_own", result, CPU))


if __name__ == "__main__":
    random.seed(0)
    main()
