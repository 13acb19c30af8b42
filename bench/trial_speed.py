"""Trial speed: seconds and images/s per epoch of KD students with a ResNet-18 teacher.

For each student (resnet20, vgg7, cnn5, mobilenetv2) one run per teacher path, side by side:
``none`` (labels only: the floor), ``live`` (the teacher runs every step) and ``cache`` (teacher
logits read from the study's logit cache, filled beforehand; the fill is timed separately and is
paid once per study). Median epoch time over the timed epochs (the first epoch is warm-up).

    python bench/trial_speed.py                      # GPU if present, else a small CPU run
    python bench/trial_speed.py --n-train 50000 --epochs 4
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from autokd.checkpoint import deployable
from autokd.config import DistillSpec, TrainSpec
from autokd.data import load_dataset
from autokd.distill import Teacher, TeacherMember
from autokd.hostlock import idle_during, paced
from autokd.models import build_model
from autokd.train import AugmentPolicy, TeacherLogitCache, epoch_views, pick_device, train_model
from bench.common import cifar10_folder, median, write_result

STUDENTS = {"resnet20": ("resnet", {"depth": 20, "width": 16}), "vgg7": ("vgg", {"variant": 7}),
            "cnn5": ("cnn5", {}), "mobilenetv2": ("mobilenetv2", {})}


def epoch_times(student_name: str, data, teacher, cache, path: str, args, device) -> list[float]:
    family, knobs = STUDENTS[student_name]
    torch.manual_seed(0)
    model = deployable(build_model(family, num_classes=10, in_channels=3, image_size=32, **knobs),
                       data.mean, data.std).to(device)
    times: list[float] = []
    last = [time.perf_counter()]

    def on_epoch(epoch: int, metrics: dict) -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()
        now = time.perf_counter()
        times.append(now - last[0])
        last[0] = now

    loss = "none" if path == "none" else "kd"
    with paced() as pace:
        train_model(model, data.train_images.to(device), data.train_labels.to(device),
                    train=TrainSpec(epochs=args.epochs, batch_size=args.batch_size, lr=0.05),
                    distill=DistillSpec(loss=loss, alpha=0.9, temperature=4.0), policy=args.policy,
                    teacher=teacher if loss != "none" else None, logit_cache=cache if path == "cache" else None,
                    on_epoch=idle_during(on_epoch), pace=pace)
    return times[1:] or times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-train", type=int, default=None, help="training images (default: all on GPU, 1000 on CPU)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--students", default=",".join(STUDENTS))
    args = parser.parse_args()
    device = pick_device()
    cpu = device.type == "cpu"
    n_train = args.n_train or (1000 if cpu else 50000)
    args.batch_size = args.batch_size or (128 if cpu else 512)
    args.policy = AugmentPolicy(crop_pad=4, flip=True, seed=0)
    data = load_dataset(f"imagefolder:{cifar10_folder()}", cache_dir=".cache/autokd").subset(n_train, 100, seed=0)
    teacher_net = build_model("resnet18", num_classes=10, in_channels=3, image_size=32).eval()
    teacher = Teacher([TeacherMember(teacher_net, data.mean, data.std)]).to(device)
    images = data.train_images.to(device)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        cache = TeacherLogitCache(teacher, images, args.policy, "bench", Path(tmp))
        fill = []
        for epoch in range(args.epochs):
            start = time.perf_counter()
            with paced() as pace:
                cache.epoch_logits(epoch, epoch_views(args.policy, len(images), epoch).to(device), pace)
            if device.type == "cuda":
                torch.cuda.synchronize()
            fill.append(time.perf_counter() - start)
        for name in args.students.split(","):
            row = {"student": name, "params": sum(p.numel() for p in build_model(
                STUDENTS[name][0], num_classes=10, in_channels=3, image_size=32, **STUDENTS[name][1]).parameters())}
            for path in ("none", "live", "cache"):
                seconds = median(epoch_times(name, data, teacher, cache, path, args, device))
                row[f"{path}_s_per_epoch"] = round(seconds, 4)
                row[f"{path}_images_per_s"] = round(n_train / seconds, 1)
            row["teacher_share_live"] = round(1 - row["none_s_per_epoch"] / row["live_s_per_epoch"], 3)
            row["teacher_share_cache"] = round(1 - row["none_s_per_epoch"] / row["cache_s_per_epoch"], 3)
            rows.append(row)
            print(row, flush=True)
    path = write_result(f"trial_speed_{device.type}", {
        "n_train": n_train, "batch_size": args.batch_size, "epochs": args.epochs, "teacher": "resnet18",
        "cache_fill_s_per_epoch": round(median(fill), 4), "students": rows,
        "note": "median epoch time over epochs 2..N; cache fill is paid once per study, not per trial"}, device)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
