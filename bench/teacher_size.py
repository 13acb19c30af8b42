"""Teachers for the built-in digits study: training time and accuracy of candidate teachers over seeds
(issue 26: what the demo's teacher costs, and which teacher the built-in study should train).

A candidate is a family, its knobs and recipe overrides, written ``"FAMILY key=value ..."``: a key
the family declares is a knob (``width=16``), any other is a teacher recipe field (``epochs=8``,
``lr=0.1``). Each trains as the built-in study trains its teacher (``autokd.teacher.build_teacher``:
same data, validation split, augmentation, optimiser and schedule unless overridden), on this host's
torch threads, and records its wall time (training and its figures, as the demo's teacher phase;
the first candidate of the run also pays first-use imports: read the median over seeds) and its
validation and test accuracy. Choose on validation; test is reported.

    python -m bench.teacher_size                          # the default candidates, seeds 0-8
    python -m bench.teacher_size --candidates "resnet18 width=32" "resnet18 width=16 epochs=8" --seeds 0 1

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

#: ResNet-18 at width 32 (the built-in teacher until 2026-12-07), narrower ResNet-18s, and wide 5-layer CNNs.
DEFAULT_CANDIDATES = ["resnet18 width=32 lr=0.05", "resnet18 width=16 lr=0.05", "resnet18 width=16 lr=0.1",
                      "cnn5 width=2.0 hidden=256 lr=0.1", "cnn5 width=4.0 hidden=512 lr=0.1"]


def parse_candidate(text: str) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """``"cnn5 width=2.0 hidden=256 lr=0.1"`` -> ``("cnn5", {"width": 2.0, "hidden": 256}, {"lr": 0.1})``."""
    from autokd.cli import _parse_knob  # the CLI's NAME=VALUE reader (--knob)
    from autokd.models import family_knobs

    family, *pairs = text.split()
    knob_names = set(family_knobs(family))
    knobs, recipe = {}, {}
    for key, value in map(_parse_knob, pairs):
        (knobs if key in knob_names else recipe)[key] = value
    return family, knobs, recipe


def seed_runs(seed: int, candidates: list[str], work: Path) -> list[dict]:
    """Every candidate at one seed, on that seed's data and validation split (loaded once)."""
    from autokd.config import StudyConfig
    from autokd.context import load_study_data

    default = StudyConfig().model_copy(update={"seed": seed})
    data = load_study_data(default, show_progress=False)
    return [train_one(default, data, c, work / f"{i}-s{seed}") for i, c in enumerate(candidates)]


def train_one(default: Any, data: Any, candidate: str, output: Path) -> dict:
    from autokd.context import augment_policy
    from autokd.teacher import build_teacher

    family, knobs, recipe = parse_candidate(candidate)
    teacher = default.teacher.model_validate({**default.teacher.model_dump(), "family": family, "knobs": knobs,
                                              **recipe})
    cfg = default.model_copy(update={"teacher": teacher, "output": str(output)})
    started = time.perf_counter()
    _, summary = build_teacher(cfg, data, augment_policy(cfg, data), torch.device("cpu"))
    return {"candidate": candidate, "seed": default.seed, "teacher_wall_s": round(time.perf_counter() - started, 2),
            "validation_accuracy": summary.get("validation_accuracy"), "test_accuracy": summary.get("test_accuracy"),
            "params": summary.get("params")}


def summarise(runs: list[dict], candidates: list[str]) -> dict[str, dict]:
    summary = {}
    for candidate in candidates:
        mine = [r for r in runs if r["candidate"] == candidate]
        summary[candidate] = {
            "params": mine[0]["params"],
            "median_teacher_wall_s": statistics.median(r["teacher_wall_s"] for r in mine),
            "mean_validation_accuracy": round(statistics.mean(r["validation_accuracy"] for r in mine), 4),
            "mean_test_accuracy": round(statistics.mean(r["test_accuracy"] for r in mine), 4),
            "min_test_accuracy": round(min(r["test_accuracy"] for r in mine), 4),
            "test_accuracy_per_seed": [round(r["test_accuracy"], 4) for r in mine]}
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--candidates", nargs="+", default=DEFAULT_CANDIDATES)
    parser.add_argument("--seeds", type=int, nargs="+", default=list(range(9)))
    args = parser.parse_args()
    for candidate in args.candidates:
        parse_candidate(candidate)  # a typo stops the run before any training
    load = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="autokd-teacher-size-") as tmp:
        runs = [run for s in args.seeds for run in seed_runs(s, args.candidates, Path(tmp))]
    summary = summarise(runs, args.candidates)
    print(write_result("teacher_size", {"what": "candidate teachers of the built-in digits study, over seeds",
                                        "threads": torch.get_num_threads(), "seeds": args.seeds,
                                        "loadavg_start": [round(x, 2) for x in load],
                                        "loadavg_end": [round(x, 2) for x in os.getloadavg()],
                                        "summary": summary, "runs": runs}, torch.device("cpu")))
    for name, figures in summary.items():
        print(f"{name}: {figures['median_teacher_wall_s']} s, val {figures['mean_validation_accuracy']:.4f}, "
              f"test {figures['mean_test_accuracy']:.4f} (min {figures['min_test_accuracy']:.4f}), "
              f"{figures['params']:,} params")


if __name__ == "__main__":
    main()
