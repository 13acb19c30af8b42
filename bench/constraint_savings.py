"""Training a constrained study saves by checking costs before training (issue 25, item 5).

Every cost objective (params, bytes, MACs, latency of the untrained network) is known before a
trial trains, so a proposal over a constraint is told FAIL with ``rejected_because`` and replaced
before any training. This script measures what that saves, with nothing estimated:

1. a digits study on the default search space with ``constraints: {max_params: BOUND}`` runs
   through the CLI (local executor, one torch thread);
2. every proposal it rejected is then trained for real, exactly as a trial would have trained it
   (same teacher, data and seed, :func:`autokd.trial.run_trial`), which is what a study that
   checked its constraints only after training would have spent on it.

The result gives the study's own training seconds, the seconds the rejected proposals took to
train, and the share of a check-after-training study's training time that was saved.

Usage::

    python -m bench.constraint_savings [--trials 8] [--max-params 20000] [--keep DIR]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
import torch
import yaml

from autokd.config import load_study_config
from autokd.context import build_context
from autokd.record import is_rejected, recorded_seconds, trial_architecture
from autokd.space import SearchSpace
from autokd.trial import run_trial
from bench.common import write_result

CPU = torch.device("cpu")
REPO = Path(__file__).resolve().parent.parent


def run_study(root: Path, trials: int, max_params: int, seed: int) -> tuple[Path, optuna.Study]:
    """The constrained digits study, through the CLI; returns its file and the stored study."""
    path = root / "constrained.yaml"
    path.write_text(yaml.safe_dump({
        "name": "constrained", "dataset": "digits", "teacher": {"family": "cnn5", "epochs": 6},
        "search_space": str(REPO / "search_spaces" / "default.yaml"), "objectives": ["accuracy", "params"],
        "constraints": {"max_params": max_params}, "n_trials": trials, "seed": seed,
        "output": str(root / "runs"), "executor": {"kind": "local"}}))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "-m", "autokd", "search", str(path)], check=True, env=env,
                   stdout=subprocess.DEVNULL)
    return path, optuna.load_study(study_name="constrained", storage=f"sqlite:///{root / 'runs' / 'study.db'}")


def train_rejected(path: Path, study: optuna.Study, root: Path) -> list[dict]:
    """Train each rejected proposal as its trial would have trained; its seconds and figures."""
    cfg = load_study_config(path)
    space = SearchSpace.load(cfg.resolve(cfg.search_space))
    context = build_context(cfg, device=CPU, show_progress=False)  # the study's teacher, from its checkpoint
    rows = []
    for trial in study.trials:
        if not is_rejected(trial):
            continue
        config = space.replay(trial.params)
        started = time.perf_counter()
        metrics = run_trial(config, context, work_dir=root / "rejected" / str(trial.number))
        rows.append({"trial": trial.number, "student": config.student.family,
                     "rejected_because": trial.user_attrs.get("rejected_because"),
                     "params": metrics.get("params"), "validation_accuracy": metrics.get("validation_accuracy"),
                     "train_seconds": round(time.perf_counter() - started, 2)})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--max-params", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", type=Path, help="work in this folder (kept) instead of a temporary one")
    args = parser.parse_args()
    torch.set_num_threads(1)
    load_start = os.getloadavg()
    root = args.keep or Path(tempfile.mkdtemp(prefix="autokd-constraints-"))
    root.mkdir(parents=True, exist_ok=True)
    path, study = run_study(root, args.trials, args.max_params, args.seed)
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    study_seconds = sum(recorded_seconds(t) or 0.0 for t in done)
    rejected = train_rejected(path, study, root)
    rejected_seconds = sum(r["train_seconds"] for r in rejected)
    result = {
        "study": {"dataset": "digits", "search_space": "search_spaces/default.yaml", "seed": args.seed,
                  "constraints": {"max_params": args.max_params}, "n_trials": args.trials,
                  "executor": "local, 1 torch thread"},
        "completed_trials": [{"trial": t.number, "student": trial_architecture(t), "params": t.values[1],
                              "train_seconds": round(recorded_seconds(t) or 0.0, 2)} for t in done],
        "rejected_before_training": rejected,
        "study_training_seconds": round(study_seconds, 1),
        "rejected_training_seconds_measured": round(rejected_seconds, 1),
        "saved_share_of_check_after_training": round(rejected_seconds / (study_seconds + rejected_seconds), 3)
        if rejected else 0.0,
        "loadavg_start": [round(x, 2) for x in load_start],
        "loadavg_end": [round(x, 2) for x in os.getloadavg()],
        "note": ("Rejected proposals were trained after the study, one by one, with the study's teacher, data "
                 "and seed: their seconds are measured, not estimated. A study that checked constraints only "
                 "after training would also have replaced them, so it would have spent both figures."),
    }
    print(write_result("constraint_savings", result, CPU))


if __name__ == "__main__":
    main()
