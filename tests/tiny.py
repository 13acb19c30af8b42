"""Tiny real studies on digits for end-to-end tests: a small teacher, two-epoch students."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

#: Added to every seed a training test uses (study ``seed``, ``TrainSpec.seed``, ``torch.manual_seed``):
#: ``AUTOKD_TEST_SEED=3 make test`` trains other networks, as another processor's rounding would.
#: 0, the default, is the suite as written. How the margins were measured: docs/testing.md.
TEST_SEED = int(os.environ.get("AUTOKD_TEST_SEED", "0"))
#: ``AUTOKD_TEST_THREADS=N``: the trials of every tiny study train on N torch threads too
#: (``executor.threads_per_trial``; run_trial sets a trial's threads from its study).
TEST_THREADS = int(os.environ["AUTOKD_TEST_THREADS"]) if os.environ.get("AUTOKD_TEST_THREADS") else None

TINY_SPACE = {
    "students": {
        "cnn5": {"width": {"float": [0.125, 0.25], "log": True}, "hidden": {"int": [16, 32]}},
        "vgg": {"variant": 7, "width": {"float": [0.0625, 0.125]}},
    },
    "distill": {"loss": {"choices": ["kd", "none"]}, "alpha": {"float": [0.5, 0.9]}, "temperature": 4.0},
    "train": {"epochs": 2, "batch_size": 64, "lr": 0.05},
}


def write_tiny_study(folder: Path, name: str = "tiny", space: dict | None = None, **overrides: Any) -> Path:
    """Write a study YAML (and its search space) under ``folder``; returns the study path."""
    folder.mkdir(parents=True, exist_ok=True)
    space_path = folder / f"{name}-space.yaml"
    space_path.write_text(yaml.safe_dump(space or TINY_SPACE))
    study = {
        "name": name,
        "dataset": "digits",
        "teacher": {"family": "cnn5", "knobs": {"width": 0.5}, "epochs": 3, "lr": 0.05},
        "search_space": str(space_path),
        "objectives": ["accuracy", "params"],
        "n_trials": 3,
        "latency_runs": 5, "latency_min_seconds": 0,
        "output": str(folder / name),
        "seed": TEST_SEED,
        # in-process: the Ray executor has its own tests
        "executor": {"kind": "local", **({"threads_per_trial": TEST_THREADS} if TEST_THREADS else {})},
        "early_stopping": False,  # trials run to the end unless a test asks (tests/test_early_stop.py)
        "retime_front": False,  # no re-timing after a search unless a test asks (tests/test_retime.py)
    }
    study.update(overrides)
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(study))
    return path


def write_one_trial_study(folder: Path, dataset: str, **overrides: Any) -> Path:
    """The quickest real search on ``dataset``: one trial, a one-epoch teacher and students."""
    return write_tiny_study(folder, dataset=dataset, n_trials=1,
                            teacher={"family": "cnn5", "knobs": {"width": 0.25}, "epochs": 1},
                            space={**TINY_SPACE, "train": {**TINY_SPACE["train"], "epochs": 1}}, **overrides)
