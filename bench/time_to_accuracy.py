"""Time to accuracy: seconds of student training until a KD student reaches a target accuracy.

Trains (or loads) a ResNet-18 teacher, fills the study-style teacher logit cache, then distils a
student (default: vgg7 at <= 1.6M params, cnn5 at <= 0.36M) and records test accuracy against
training seconds after every epoch (evaluation time excluded), and when each target was reached.

    python bench/time_to_accuracy.py                         # GPU: full CIFAR-10; CPU: a small subset
    python bench/time_to_accuracy.py --teacher runs/cifar10/teacher.pt
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from autokd.checkpoint import deployable, save_checkpoint
from autokd.config import DistillSpec, TrainSpec
from autokd.data import load_dataset
from autokd.measure import accuracy
from autokd.models import build_model
from autokd.teacher import load_member, train_teacher
from autokd.distill import Teacher
from autokd.hostlock import paced
from autokd.train import AugmentPolicy, TeacherLogitCache, epoch_views, pick_device, predict, train_model
from bench.common import cifar10_folder, write_result

STUDENTS = {"vgg7": ("vgg", {"variant": 7}, 0.91), "cnn5": ("cnn5", {}, 0.856)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-train", type=int, default=None)
    parser.add_argument("--epochs", type=int, default=None, help="student epochs (default 30 GPU, 4 CPU)")
    parser.add_argument("--teacher", type=Path, default=None, help="teacher checkpoint (default: train one)")
    parser.add_argument("--teacher-epochs", type=int, default=None)
    args = parser.parse_args()
    device = pick_device()
    cpu = device.type == "cpu"
    data = load_dataset(f"imagefolder:{cifar10_folder()}", cache_dir=".cache/autokd")
    if args.n_train or cpu:
        data = data.subset(args.n_train or 2000, 500 if cpu else None, seed=0)
    policy = AugmentPolicy(crop_pad=4, flip=True, seed=0)
    batch = 128 if cpu else 512
    started = time.perf_counter()
    if args.teacher is None:
        net, teacher_acc = train_teacher(data, family="resnet18", knobs={}, epochs=args.teacher_epochs or (2 if cpu else 30),
                                         lr=0.2 if not cpu else 0.05, batch_size=batch, policy=policy, device=device)
        args.teacher = Path(tempfile.mkdtemp()) / "teacher.pt"
        save_checkpoint(args.teacher, net, family="resnet18", knobs=net.knobs, num_classes=10, in_channels=3,
                        image_size=32, mean=data.mean, std=data.std, accuracy=teacher_acc)
    teacher_seconds = time.perf_counter() - started
    member = load_member(args.teacher, data)
    teacher = Teacher([member]).to(device)
    train_x, train_y = data.train_images.to(device), data.train_labels.to(device)
    test_x, test_y = data.test_images.to(device), data.test_labels.to(device)
    with paced() as pace:
        teacher_acc = accuracy(predict(teacher, test_x, pace=pace), test_y)
    epochs = args.epochs or (4 if cpu else 30)
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        cache = TeacherLogitCache(teacher, train_x, policy, "tta", Path(tmp))
        fill_started = time.perf_counter()
        for epoch in range(epochs):  # paid once per study, shared by every trial: timed apart
            with paced() as pace:
                cache.epoch_logits(epoch, epoch_views(policy, len(train_x), epoch).to(device), pace)
        fill_seconds = time.perf_counter() - fill_started
        for name, (family, knobs, target) in STUDENTS.items():
            torch.manual_seed(0)
            net = build_model(family, num_classes=10, in_channels=3, image_size=32, **knobs)
            model = deployable(net, data.mean, data.std).to(device)
            curve, clock = [], {"train": 0.0, "mark": time.perf_counter()}

            def evaluate(m: torch.nn.Module) -> float:
                if device.type == "cuda":
                    torch.cuda.synchronize()
                clock["train"] += time.perf_counter() - clock["mark"]
                acc = accuracy(predict(m, test_x, pace=pace), test_y)
                curve.append({"seconds": round(clock["train"], 3), "accuracy": round(acc, 4)})
                clock["mark"] = time.perf_counter()
                return acc

            with paced() as pace:
                train_model(model, train_x, train_y,
                            train=TrainSpec(epochs=epochs, batch_size=batch, lr=0.2 if not cpu else 0.05,
                                            label_smoothing=0.1),
                            distill=DistillSpec(loss="kd", alpha=0.9, temperature=4.0), policy=policy, teacher=teacher,
                            logit_cache=cache, evaluate=evaluate, pace=pace)
            reached = next((p["seconds"] for p in curve if p["accuracy"] >= target), None)
            rows[name] = {"params": sum(p.numel() for p in net.parameters()), "target": target,
                          "seconds_to_target": reached, "final_accuracy": curve[-1]["accuracy"],
                          "train_seconds": curve[-1]["seconds"], "curve": curve}
            print(name, {k: v for k, v in rows[name].items() if k != "curve"}, flush=True)
    path = write_result(f"time_to_accuracy_{device.type}", {
        "n_train": len(train_y), "n_test": len(test_y), "epochs": epochs, "batch_size": batch,
        "teacher": {"family": "resnet18", "accuracy": round(teacher_acc, 4), "train_seconds": round(teacher_seconds, 1)},
        "cache_fill_seconds": round(fill_seconds, 2), "students": rows,
        "note": "seconds exclude evaluation; teacher logits come from the study cache, filled once beforehand"},
        device)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
