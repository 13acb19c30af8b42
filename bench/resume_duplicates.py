"""Duplicate configurations after a resume (issue 10, part 2): a study of 2 trials resumed to 4.

Runs ``autokd search`` (the CLI, as a user would) on a tiny digits study with ``n_trials: 2``,
then again with ``--n-trials 4``, for each executor, and counts the COMPLETE trials whose
parameters repeat an earlier trial's. Before issue 10 every process seeded its sampler with the
study's seed alone, so the resumed run replayed the random start-up phase: trials 2 and 3 had
exactly the parameters of trials 0 and 1.

The CLI runs from ``--repo`` (that checkout's code first on ``PYTHONPATH``), so the same script
measures an older checkout for the "before" figure:

    git worktree add /tmp/autokd-before 140174f
    python -m bench.resume_duplicates --label before --repo /tmp/autokd-before
    python -m bench.resume_duplicates --label after

Results merge into ``bench/results/resume_duplicates.json`` by ``--label``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import subprocess
import tempfile
from pathlib import Path

import optuna
import yaml

from bench.common import RESULTS, autokd_cli

HERE = Path(__file__).resolve().parents[1]
NAME = "resume_duplicates"


def write_study(folder: Path, executor: str, seed: int) -> Path:
    space = {
        "students": {"cnn5": {"width": {"float": [0.125, 0.25], "log": True}, "hidden": {"int": [16, 32]}}},
        "distill": {"loss": {"choices": ["kd", "none"]}, "alpha": {"float": [0.5, 0.9]}, "temperature": 4.0},
        "train": {"epochs": 1, "batch_size": 64, "lr": 0.05},
    }
    (folder / "space.yaml").write_text(yaml.safe_dump(space))
    study = {"name": "resume", "dataset": "digits", "teacher": {"family": "cnn5", "knobs": {"width": 0.25}, "epochs": 2},
             "search_space": "space.yaml", "objectives": ["accuracy", "params"], "n_trials": 2, "seed": seed,
             "latency_runs": 5, "output": "out", "executor": {"kind": executor, "max_concurrent": 2}}
    path = folder / "study.yaml"
    path.write_text(yaml.safe_dump(study, sort_keys=False))
    return path


def measure(repo: Path, executor: str, seed: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="autokd-resume-") as tmp:
        study = write_study(Path(tmp), executor, seed)
        autokd_cli(repo, Path(tmp), "search", str(study))
        autokd_cli(repo, Path(tmp), "search", str(study), "--n-trials", "4")
        trials = optuna.load_study(study_name="resume", storage=f"sqlite:///{Path(tmp) / 'out' / 'study.db'}") \
            .get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    seen, repeats = [], []
    for t in sorted(trials, key=lambda t: t.number):
        key = json.dumps(t.params, sort_keys=True)
        if key in seen:
            repeats.append({"trial": t.number, "repeats_trial": trials[seen.index(key)].number})
        seen.append(key)
    return {"executor": executor, "seed": seed, "complete": len(trials), "distinct": len(set(seen)),
            "duplicates": len(repeats), "repeats": repeats}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--label", required=True, help="before or after (results merge by label)")
    parser.add_argument("--repo", type=Path, default=HERE, help="checkout whose autokd runs")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--executors", nargs="+", default=["local", "ray"])
    args = parser.parse_args()
    commit = subprocess.run(["git", "-C", str(args.repo), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    runs = [measure(args.repo.resolve(), executor, seed) for executor in args.executors for seed in args.seeds]
    for run in runs:
        print(f"{args.label}: {run['executor']} seed {run['seed']}: {run['complete']} complete, "
              f"{run['distinct']} distinct, {run['duplicates']} duplicates")
    path = RESULTS / f"{NAME}.json"
    record = json.loads(path.read_text()) if path.exists() else {"benchmark": NAME, "runs": {}}
    record["runs"][args.label] = {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "commit": commit,
        "scenario": "n_trials 2, then --n-trials 4 (tiny digits study, 1-epoch cnn5 students)",
        "duplicates": sum(r["duplicates"] for r in runs), "complete": sum(r["complete"] for r in runs), "detail": runs}
    RESULTS.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
