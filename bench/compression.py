"""Compression targets on a CIFAR-10 subset: what each method buys and costs, measured on CPU.

One KD teacher (ResNet-8, width 16) and three students (VGG-7 at width 0.5, VGG-7 at width 1.0 as in
the seed work, ResNet-8 at width 12) are trained briefly on a 5,000 / 1,000 subset at 32 px; every method then compresses a copy of each student through the trial's own
stage (``autokd.trial.compress_stage``), and ``measure_model`` measures before and after: test
accuracy, params, serialized size, MACs and batch-1 CPU latency (median of ``--latency-runs``
runs, 1 thread, after warm-up). Each latency ratio is the median over ``--repeats`` alternating
before/after measurements, so load from other processes hits both sides alike. Pruning and low-rank
are followed by ``--finetune-epochs`` of KD fine-tuning (default: as many as the students trained).

    python -m bench.compression                  # about 15 minutes on 2 CPU cores
    python -m bench.compression --epochs 1 --teacher-epochs 1 --n-train 1000   # smoke run

Structured pruning is measured one-shot (the default) and in 3 steps with the same fine-tuning
epochs split between them (``structured_0.5_3steps``).

Targets (issue 4): int8 size <= 0.3x with <= 1 point lost; structured 50%: params <= 0.35x,
latency <= 0.7x, accuracy within 2 points; low-rank 0.5 on VGG: MACs <= 0.6x; unstructured 80%:
latency as measured (no gain expected).
"""

from __future__ import annotations

import argparse
import copy
import functools
import statistics
import time
import warnings
from typing import Any

import torch

from autokd import compress
from autokd.compress import quant_engine
from autokd.config import CompressSpec, DistillSpec, StudentSpec, StudyConfig, TrainSpec, TrialConfig
from autokd.measure import latency_ms
from autokd.context import build_context
from autokd.deployed import measure_model
from autokd.trial import build_student, compress_stage, distill_student
from bench.common import cifar10_folder, write_result

STUDENTS = {"vgg7": StudentSpec.of("vgg", variant=7, width=0.5), "vgg7_w1": StudentSpec.of("vgg", variant=7, width=1.0),
            "resnet8": StudentSpec.of("resnet", depth=8, width=12)}


def methods(finetune_epochs: int) -> dict[str, tuple[CompressSpec, int]]:
    """Bench row -> (spec, structured pruning steps); the steps go through ``compress.STRUCTURED_STEPS``."""
    return {
        "int8_static": (CompressSpec("int8", quant_mode="static"), 1),
        "structured_0.5": (CompressSpec("structured", 0.5, finetune_epochs, importance="l1"), 1),
        "structured_0.5_3steps": (CompressSpec("structured", 0.5, finetune_epochs, importance="l1"), 3),
        "lowrank_0.5": (CompressSpec("lowrank", 0.5, finetune_epochs), 1),
        "unstructured_0.8": (CompressSpec("unstructured", 0.8, finetune_epochs), 1),
    }


FIGURES = ("accuracy", "params", "size_bytes", "macs", "latency_ms")


def paired_latency(before: torch.nn.Module, after: torch.nn.Module, example: torch.Tensor, runs: int,
                   repeats: int) -> tuple[float, float, float]:
    """Median before / after latency (ms) and the median of per-repeat ratios, alternating sides."""
    b, a = [], []
    for _ in range(repeats):
        b.append(latency_ms(before, example, runs=runs))
        a.append(latency_ms(after, example, runs=runs))
    return statistics.median(b), statistics.median(a), statistics.median(x / y for x, y in zip(a, b))


def targets(method: str, row: dict[str, Any]) -> dict[str, bool]:
    r = row["ratio"]
    drop = row["accuracy_points_lost"]
    if method.startswith("int8"):
        return {"size<=0.3x": r["size_bytes"] <= 0.3, "accuracy_lost<=1pt": drop <= 1.0}
    if method.startswith("structured"):
        return {"params<=0.35x": r["params"] <= 0.35, "latency<=0.7x": r["latency_ms"] <= 0.7,
                "accuracy_within_2pt": drop <= 2.0}
    if method.startswith("lowrank"):
        return {"macs<=0.6x": r["macs"] <= 0.6}
    return {"no_latency_gain_claimed": True}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-train", type=int, default=5000)
    parser.add_argument("--n-test", type=int, default=1000)
    parser.add_argument("--teacher-epochs", type=int, default=6)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--finetune-epochs", type=int, default=None,
                        help="KD fine-tuning epochs after pruning / low-rank (default: --epochs)")
    parser.add_argument("--latency-runs", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2, help="torch threads for training (latency uses 1)")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    finetune_epochs = args.epochs if args.finetune_epochs is None else args.finetune_epochs
    torch.set_num_threads(args.threads)
    started = time.perf_counter()

    folder = cifar10_folder()
    study = StudyConfig(name="bench-compression", dataset=f"imagefolder:{folder}", subset_train=args.n_train,
                        subset_test=args.n_test, output="/tmp/autokd-bench-compression", latency_runs=args.latency_runs,
                        teacher={"family": "resnet", "knobs": {"depth": 8, "width": 16},
                                 "epochs": args.teacher_epochs, "lr": 0.1})
    context = build_context(study, device=torch.device("cpu"), show_progress=False)
    print(f"teacher {context.teacher_summary.get('accuracy', 0):.3f} ({time.perf_counter() - started:.0f} s)")
    example = context.data.test_images[:1].float() / 255.0
    measure = functools.partial(measure_model, validation=context.validation, test=context.test,
                                num_classes=context.data.num_classes, latency=context.latency, device=context.device)
    results: dict[str, Any] = {}
    for name, student in STUDENTS.items():
        config = TrialConfig(student=student, distill=DistillSpec("kd", alpha=0.7, temperature=4.0),
                             train=TrainSpec(epochs=args.epochs, batch_size=128, lr=0.1))
        model = build_student(config, context.data)
        distill_student(model, config, context.teaching, context.train, context.validation)
        model.eval()
        print(f"{name} trained ({time.perf_counter() - started:.0f} s)")
        rows = {}
        for method, (spec, steps) in methods(finetune_epochs).items():
            if method.startswith("lowrank") and not name.startswith("vgg"):
                continue
            compress.STRUCTURED_STEPS = steps
            try:
                trial_config = TrialConfig(student=student, distill=config.distill, train=config.train, compress=spec)
                compressed, info = compress_stage(copy.deepcopy(model), trial_config, context.teaching, context.train,
                                                  context.validation, num_classes=context.data.num_classes,
                                                  uncompressed=measure(model))
            finally:
                compress.STRUCTURED_STEPS = 1
            after = measure(compressed)
            before = {k: info[f"uncompressed_{k}"] for k in FIGURES}
            lat_b, lat_a, lat_ratio = paired_latency(model, compressed, example, args.latency_runs, args.repeats)
            before["latency_ms"], after["latency_ms"] = lat_b, lat_a
            ratio = {k: after[k] / before[k] for k in FIGURES if k != "accuracy"}
            ratio["latency_ms"] = lat_ratio
            row = {"detail": info.get("compression_detail"), "skipped": info.get("compression_skipped"),
                   "before": before, "after": {k: after[k] for k in FIGURES}, "ratio": ratio,
                   "accuracy_points_lost": 100 * (before["accuracy"] - after["accuracy"]),
                   "finetune_seconds": info.get("finetune_seconds", 0.0)}
            row["targets"] = targets(method, row)
            rows[method] = row
            print(f"  {method:<17} acc {100 * before['accuracy']:.1f} -> {100 * after['accuracy']:.1f}  "
                  + "  ".join(f"{k} {v:.2f}x" for k, v in ratio.items()) + f"  {row['targets']}")
        results[name] = {"architecture": config.describe(), "methods": rows}
    payload = {
        "data": f"CIFAR-10 JPEG subset {args.n_train} train / {args.n_test} test, 32 px",
        "teacher": {"architecture": "resnet(depth=8,width=16)", "epochs": args.teacher_epochs,
                    "accuracy": context.teacher_summary.get("accuracy")},
        "student_epochs": args.epochs, "finetune_epochs": finetune_epochs, "latency": {"runs": args.latency_runs, "repeats": args.repeats,
                                                   "threads": 1, "batch": 1, "statistic": "median"},
        "quantization": f"torch.ao FX graph mode (prepare_fx/convert_fx), engine {quant_engine()}",
        "students": results, "wall_seconds": time.perf_counter() - started,
    }
    path = write_result("compression", payload, torch.device("cpu"))
    print(f"wrote {path} ({payload['wall_seconds']:.0f} s)")


if __name__ == "__main__":
    main()
