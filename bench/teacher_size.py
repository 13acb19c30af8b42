"""The built-in study's teacher at other sizes: training time and accuracy of ResNet-18 on digits by width
and epochs, over seeds (issue 26: what a cheaper demo teacher would cost).

Each configuration trains as the built-in study trains its teacher (``autokd.teacher.build_teacher``:
same data, validation split, augmentation, optimiser and schedule; only ``knobs.width`` and ``epochs``
change), on this host's torch threads, and records its wall time (training and its figures, as the
demo's teacher phase; the first configuration also pays first-use imports: read the median over seeds)
and its validation and test accuracy.

    python -m bench.teacher_size                          # widths 32, 16; epochs 12, 8; seeds 0-2
    python -m bench.teacher_size --widths 32 24 --epochs 12 --seeds 0 1

Results: bench/results/teacher_size.json (device, versions, date).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from bench.common import write_result


def seed_runs(seed: int, widths: list[int], epochs_list: list[int], work: Path) -> list[dict]:
    """Every width and epoch count at one seed, on that seed's data and validation split (loaded once)."""
    from autokd.config import StudyConfig
    from autokd.context import load_study_data

    default = StudyConfig().model_copy(update={"seed": seed})
    data = load_study_data(default, show_progress=False)
    return [train_one(default, data, w, e, work) for w in widths for e in epochs_list]


def train_one(default: Any, data: Any, width: int, epochs: int, work: Path) -> dict:
    from autokd.context import augment_policy
    from autokd.teacher import build_teacher

    seed = default.seed
    teacher = default.teacher.model_copy(update={"knobs": {**default.teacher.knobs, "width": width}, "epochs": epochs})
    cfg = default.model_copy(update={"teacher": teacher, "output": str(work / f"w{width}-e{epochs}-s{seed}")})
    started = time.perf_counter()
    _, summary = build_teacher(cfg, data, augment_policy(cfg, data), torch.device("cpu"))
    return {"width": width, "epochs": epochs, "seed": seed, "teacher_wall_s": round(time.perf_counter() - started, 2),
            "validation_accuracy": summary.get("validation_accuracy"), "test_accuracy": summary.get("test_accuracy"),
            "params": summary.get("params")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--widths", type=int, nargs="+", default=[32, 16])
    parser.add_argument("--epochs", type=int, nargs="+", default=[12, 8])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args()
    load = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="autokd-teacher-size-") as tmp:
        runs = [run for s in args.seeds for run in seed_runs(s, args.widths, args.epochs, Path(tmp))]
    summary = {}
    for w in args.widths:
        for e in args.epochs:
            mine = [r for r in runs if r["width"] == w and r["epochs"] == e]
            summary[f"width {w}, {e} epochs"] = {
                "median_teacher_wall_s": statistics.median(r["teacher_wall_s"] for r in mine),
                "mean_test_accuracy": round(statistics.mean(r["test_accuracy"] for r in mine), 4),
                "mean_validation_accuracy": round(statistics.mean(r["validation_accuracy"] for r in mine), 4),
                "test_accuracy_per_seed": [r["test_accuracy"] for r in mine]}
    print(write_result("teacher_size", {"what": "ResNet-18 teacher of the built-in digits study by width and epochs",
                                        "threads": torch.get_num_threads(), "loadavg_start": [round(x, 2) for x in load],
                                        "loadavg_end": [round(x, 2) for x in os.getloadavg()],
                                        "summary": summary, "runs": runs}, torch.device("cpu")))
    for name, figures in summary.items():
        print(name, figures)


if __name__ == "__main__":
    main()
