"""Pairs on a CIFAR-10 subset: routed pair vs each student vs the oracle vs the teacher.

One teacher is trained on the subset; two students of different families are distilled from it
as ordinary single trials; then a reuse pair trial trains only the selector over those two
students (``run_trial`` with ``kind="pair"``, the same code path a study takes). Every figure is
measured on the held-out test subset; CPU latency at batch 1 with one thread, median of n runs.

    python bench/pairs.py                                  # 5,000 train / 1,000 test, CPU, ~10 min
    python bench/pairs.py --n-train 2000 --n-test 500 --student-epochs 5 --teacher-epochs 5
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import torch

from autokd.config import DistillSpec, StudentSpec, StudyConfig, TeacherConfig, TrainSpec, TrialConfig
from autokd.context import build_context
from autokd.measure import measure_model
from autokd.trial import run_trial
from bench.common import cifar10_folder, write_result

STUDENTS = {"cnn5": StudentSpec.of("cnn5", width=0.5, hidden=128),
            "resnet8": StudentSpec.of("resnet", depth=8, width=16),
            "vgg7": StudentSpec.of("vgg", variant=7, width=0.25),
            "mobilenetv2": StudentSpec.of("mobilenetv2", width=0.25)}


def subset_folder(source: Path, target: Path, n_train: int, n_test: int) -> Path:
    """``target/{train,test}/<class>/`` with the first n/10 images of each class, as symlinks."""
    for split, n in (("train", n_train), ("test", n_test)):
        classes = sorted(p.name for p in (source / split).iterdir() if p.is_dir())
        for cls in classes:
            folder = target / split / cls
            folder.mkdir(parents=True, exist_ok=True)
            wanted = sorted((source / split / cls).iterdir())[: n // len(classes)]
            for f in wanted:
                link = folder / f.name
                if not link.exists():
                    os.symlink(f, link)
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-train", type=int, default=5000)
    parser.add_argument("--n-test", type=int, default=1000)
    parser.add_argument("--teacher", default="cnn5", help="cnn5 (width 1, the default) or resnet (ResNet-20)")
    parser.add_argument("--teacher-epochs", type=int, default=15)
    parser.add_argument("--student-epochs", type=int, default=15)
    parser.add_argument("--students", default="cnn5,resnet8", help=f"two of {', '.join(STUDENTS)}")
    parser.add_argument("--selector", default="layers=3,width=16", help="selector knobs")
    parser.add_argument("--out", type=Path, default=Path("/tmp/autokd-bench-pairs"))
    args = parser.parse_args()

    started = time.perf_counter()
    data_dir = subset_folder(cifar10_folder(), Path(f"/tmp/autokd-cifar10-{args.n_train}-{args.n_test}"),
                             args.n_train, args.n_test)
    teacher_knobs = {"depth": 20, "width": 16} if args.teacher == "resnet" else {}
    study = StudyConfig(name="bench-pairs", dataset=f"imagefolder:{data_dir}", output=str(args.out),
                        teacher=TeacherConfig(family=args.teacher, knobs=teacher_knobs, epochs=args.teacher_epochs,
                                              lr=0.1, batch_size=128),
                        latency_runs=50, seed=0)
    context = build_context(study, show_progress=False)
    teacher_seconds = time.perf_counter() - started
    teacher = {**context.teacher_summary, **measure_model(context.teacher, context), "seconds": teacher_seconds}
    print(f"teacher {teacher['members'][0]}: {100 * teacher['accuracy']:.2f}% ({teacher_seconds:.0f} s)")

    train = TrainSpec(epochs=args.student_epochs, batch_size=128, lr=0.1, optimizer="sgd", schedule="onecycle")
    distill = DistillSpec(loss="kd", alpha=0.9, temperature=4.0)
    names = args.students.split(",")
    singles = {}
    for i, name in enumerate(names):
        cfg = TrialConfig(student=STUDENTS[name], distill=distill, train=train)
        singles[name] = run_trial(cfg, context, work_dir=args.out / "trials" / f"{i:05d}")
        print(f"student {name}: {100 * singles[name]['accuracy']:.2f}% ({singles[name]['trial_seconds']:.0f} s)")

    knobs = {k: int(v) for k, v in (kv.split("=") for kv in args.selector.split(","))}
    selector = {**knobs, "epochs": args.student_epochs, "lr": 3e-3,
                "from_trial1": 0, "from_trial2": 1,
                "from_weights1": singles[names[0]]["weights_path"], "from_weights2": singles[names[1]]["weights_path"]}
    pair_cfg = TrialConfig(student=STUDENTS[names[0]], second=STUDENTS[names[1]], kind="pair", distill=distill,
                           train=train, selector=tuple(sorted(selector.items())))
    pair = run_trial(pair_cfg, context, work_dir=args.out / "trials" / "00002")
    print(f"pair: routed {100 * pair['accuracy']:.2f}%, oracle {100 * pair['oracle_accuracy']:.2f}%, "
          f"selector {100 * pair['selector_accuracy']:.1f}% on disagreements, shares {pair['routing_share']}")

    keep = ("accuracy", "per_class_accuracy", "params", "size_bytes", "macs", "latency_ms", "trial_seconds")
    payload = {
        "setup": {"n_train": args.n_train, "n_test": args.n_test, "image_size": context.data.image_size,
                  "teacher_epochs": args.teacher_epochs, "student_epochs": args.student_epochs,
                  "distill": "kd alpha=0.9 T=4", "selector": knobs, "selector_epochs": args.student_epochs,
                  "latency": "CPU, batch 1, 1 thread, median of 50 runs; pair = selector + students by routing share"},
        "teacher": {k: teacher[k] for k in ("members", "accuracy", "per_class_accuracy", "params", "macs",
                                            "latency_ms", "seconds")},
        "students": {name: {"architecture": pair["students"][i], **{k: singles[name][k] for k in keep}}
                     for i, name in enumerate(names)},
        "pair": {k: pair[k] for k in (*keep, "oracle_accuracy", "student_accuracy", "selector_accuracy",
                                      "disagreement", "routing_share", "oracle_per_class_accuracy",
                                      "selector_params", "selector_macs", "selector_latency_ms", "selector_seconds",
                                      "selector_targets")},
        "total_seconds": time.perf_counter() - started,
        "torch_threads": torch.get_num_threads(),
    }
    path = write_result("pairs", payload, context.device)
    print(f"wrote {path} ({payload['total_seconds']:.0f} s)")


if __name__ == "__main__":
    main()
