"""Training steps in channels_last against the contiguous layout, per family of the zoo, on this CPU.

``autokd.train.train_model`` trains every student (and the study's teacher) with its 4-D weights in
channels_last. This measures why: one SGD step (forward, cross-entropy, backward, Nesterov momentum)
of each family at the demo's shape (1x8x8 digits, batch 64) and at CIFAR-10's (3x32x32, batch 128),
on ``--threads`` torch threads, in both layouts. The two layouts alternate round by round
(``--rounds``), each round timing ``--steps`` steps after warm-up, so drift of the host hits both
alike; the JSON keeps every round's ms per step, the medians and their ratio (contiguous /
channels_last: above 1 means channels_last is faster). Run it on an idle host.

``--accuracy SEEDS`` also distils five of the demo's students from the built-in study's teacher,
both ways, for each seed (12 epochs, KD, one thread), and records validation and test accuracy
pair by pair: the same training math in another layout should score the same within noise.

    python -m bench.channels_last                    # about 7 minutes on 2 cores
    python -m bench.channels_last --threads 1 2 --rounds 7
    python -m bench.channels_last --threads --accuracy 0 1 2 --out channels_last_accuracy
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import contextlib
import tempfile

import torch

from autokd.models import build_model
from bench.common import median, write_result
from bench.latency_isolation import repo_commit

#: (family, knobs, channels, image size, batch): the demo's students and teacher, then CIFAR-10-sized ones.
CASES = [
    ("cnn5", {"width": 0.417, "hidden": 33}, 1, 8, 64),
    ("resnet", {"depth": 14, "width": 16}, 1, 8, 64),
    ("resnet", {"depth": 8, "width": 8}, 1, 8, 64),
    ("vgg", {"variant": 7, "width": 0.2}, 1, 8, 64),
    ("cnn5", {"width": 2.0, "hidden": 256}, 1, 8, 64),
    ("cnn5", {"width": 1.0, "hidden": 128}, 3, 32, 128),
    ("resnet", {"depth": 20, "width": 16}, 3, 32, 128),
    ("vgg", {"variant": 11, "width": 0.5}, 3, 32, 128),
    ("mobilenetv2", {"width": 0.5}, 3, 32, 128),
    ("densenet", {"growth_rate": 12, "block_layers": 6}, 3, 32, 128),
    ("googlenet", {"width": 0.25}, 3, 32, 128),
]


def step_ms(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, optimizer: torch.optim.Optimizer,
            steps: int) -> float:
    started = time.perf_counter()
    for _ in range(steps):
        optimizer.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
    return (time.perf_counter() - started) / steps * 1000


def measure(family: str, knobs: dict, channels: int, size: int, batch: int, rounds: int, steps: int) -> dict:
    torch.manual_seed(0)
    x, y = torch.rand(batch, channels, size, size), torch.randint(0, 10, (batch,))
    runs = {}
    for layout in ("contiguous", "channels_last"):
        model = build_model(family, num_classes=10, in_channels=channels, image_size=size, **knobs).train()
        if layout == "channels_last":
            model.to(memory_format=torch.channels_last)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True)
        step_ms(model, x, y, optimizer, max(2, steps // 3))  # warm-up: oneDNN primitives, allocator
        runs[layout] = (model, optimizer, [])
    for _ in range(rounds):
        for layout, (model, optimizer, times) in runs.items():
            times.append(step_ms(model, x, y, optimizer, steps))
    ms = {layout: [round(t, 3) for t in times] for layout, (_, _, times) in runs.items()}
    contiguous, channels_last = median(ms["contiguous"]), median(ms["channels_last"])
    return {"family": family, "knobs": knobs, "input": [channels, size, size], "batch": batch,
            "ms_per_step": ms, "median_ms": {"contiguous": round(contiguous, 3), "channels_last": round(channels_last, 3)},
            "speedup": round(contiguous / channels_last, 3)}


#: The demo's students whose accuracy ``--accuracy`` compares across layouts.
ACCURACY_STUDENTS = [("cnn5", {"width": 0.284, "hidden": 16}), ("cnn5", {"width": 0.629, "hidden": 111}),
                     ("resnet", {"depth": 8, "width": 12}), ("vgg", {"variant": 7, "width": 0.1}),
                     ("cnn5", {"width": 0.14, "hidden": 49})]


@contextlib.contextmanager
def _as_it_is(model: torch.nn.Module):
    yield model


def accuracy_pairs(seeds: list[int]) -> dict:
    """Validation and test accuracy of the same students trained in each layout (same seed, same teacher)."""
    import autokd.train
    from autokd.config import load_study_config
    from autokd.measure import accuracy
    from autokd.trial import build_student, distill_student
    from autokd.trial_config import DistillSpec, StudentSpec, TrainSpec, TrialConfig
    from bench.demo_phases import Clock, teacher_phases

    torch.set_num_threads(1)
    os.environ.setdefault("AUTOKD_LOCK_DIR", "off")
    layouts = {"contiguous": _as_it_is, "channels_last": autokd.train.channels_last_training}
    rows = []
    with tempfile.TemporaryDirectory(prefix="autokd-layout-") as tmp:
        context = teacher_phases(load_study_config(None).model_copy(update={"output": tmp}), Clock())
        for seed in seeds:
            for family, knobs in ACCURACY_STUDENTS:
                row = {"seed": seed, "family": family, "knobs": knobs}
                for layout, scope in layouts.items():
                    autokd.train.channels_last_training = scope
                    config = TrialConfig(student=StudentSpec.of(family, **knobs),
                                         distill=DistillSpec(loss="kd", alpha=0.6, temperature=4.0),
                                         train=TrainSpec(epochs=12, batch_size=64, lr=0.05, weight_decay=1e-4, seed=seed))
                    torch.manual_seed(seed)
                    model = build_student(config, context.data)
                    distill_student(model, config, context.teaching, context.train, context.validation)
                    row[layout] = {name: round(accuracy(autokd.train.predict(model, split.images), split.labels), 4)
                                   for name, split in (("validation", context.validation), ("test", context.test))}
                autokd.train.channels_last_training = layouts["channels_last"]
                rows.append(row)
                print(seed, family, knobs, row["contiguous"], row["channels_last"], flush=True)
    mean = {layout: {split: round(sum(r[layout][split] for r in rows) / len(rows), 4) for split in rows[0][layout]}
            for layout in layouts}
    gaps = [r["channels_last"][s] - r["contiguous"][s] for r in rows for s in r["contiguous"]]
    return {"students": rows, "mean": mean, "largest_gap": round(max(map(abs, gaps)), 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, nargs="*", default=[1, 2],
                        help="Torch thread counts to time (none: time nothing).")
    parser.add_argument("--accuracy", type=int, nargs="*", default=[],
                        help="Seeds of the accuracy comparison (default: none).")
    parser.add_argument("--rounds", type=int, default=5, help="Alternating rounds per layout.")
    parser.add_argument("--steps", type=int, default=0, help="Steps per round (default: about 0.3 s of steps).")
    parser.add_argument("--out", default="channels_last", help="Result name under bench/results/.")
    args = parser.parse_args()
    results = []
    for threads in args.threads:
        torch.set_num_threads(threads)
        for family, knobs, channels, size, batch in CASES:
            steps = args.steps or (30 if size <= 8 else 3)
            row = {"threads": threads, **measure(family, knobs, channels, size, batch, args.rounds, steps)}
            results.append(row)
            print(f"{threads} thr  {family:12s} {str(knobs):40s} {channels}x{size}x{size} b{batch}: "
                  f"{row['median_ms']['contiguous']:8.2f} ms contiguous, {row['median_ms']['channels_last']:8.2f} ms "
                  f"channels_last, {row['speedup']:.2f}x", flush=True)
    speedups = [r["speedup"] for r in results]
    payload = {"what": "median ms per SGD training step, contiguous vs channels_last, layouts alternating per round",
               "commit": repo_commit(Path(__file__).resolve().parents[1]), "rounds": args.rounds, "results": results}
    if speedups:
        payload["summary"] = {"speedup_min": min(speedups), "speedup_median": round(median(speedups), 3),
                              "speedup_max": max(speedups)}
    if args.accuracy:
        payload["accuracy"] = accuracy_pairs(args.accuracy)
    payload["load_average_end"] = os.getloadavg()
    print(write_result(args.out, payload, torch.device("cpu")))


if __name__ == "__main__":
    main()
