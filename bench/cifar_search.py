"""A CIFAR-10 search through the real CLI at concurrency 1, 2 and 4: trials per hour and GPU use.

Each concurrency runs `autokd search` on a fresh copy of studies/cifar10.yaml (own output folder,
so its teacher and logit cache are built inside the timed run, as a user would see it) for a fixed
wall-clock budget; GPU utilisation is sampled with nvidia-smi every 0.5 s when present. The
resulting Pareto front of the longest run is stored with the figures.

    python bench/cifar_search.py                          # GPU: 20-minute search at concurrency 1, 2, 4
    python bench/cifar_search.py --minutes 3 --concurrency 1,2 --subset 2000   # CPU: a small version
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import optuna
import torch
import yaml

from autokd.record import study_teacher, trial_architecture, trial_config, trial_figures
from autokd.report import pareto_trials
from bench.common import cifar10_folder, median, write_result

REPO = Path(__file__).resolve().parents[1]


class GpuSampler(threading.Thread):
    """Samples nvidia-smi's GPU utilisation until stopped (no samples without a GPU)."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.samples: list[float] = []
        self._stop = threading.Event()

    def run(self) -> None:
        if shutil.which("nvidia-smi") is None:
            return
        while not self._stop.is_set():
            out = subprocess.run(["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"],
                                 capture_output=True, text=True).stdout.split()
            if out:
                self.samples.append(float(out[0]))
            self._stop.wait(0.5)

    def stop(self) -> list[float]:
        self._stop.set()
        self.join(timeout=5)
        return self.samples


def run(concurrency: int, args: argparse.Namespace, folder: Path, gpu: bool) -> dict:
    study = yaml.safe_load((REPO / "studies/cifar10.yaml").read_text())
    study.update(name=f"cifar10-c{concurrency}", dataset=f"imagefolder:{cifar10_folder()}", output=str(folder / f"c{concurrency}"),
                 search_space=str(REPO / "search_spaces/cifar10.yaml"), timeout=args.minutes * 60, n_trials=1000)
    study["executor"] = {"kind": "ray", "max_concurrent": concurrency,
                         "gpus_per_trial": round(1 / concurrency, 3) if gpu else 0,
                         "cpus_per_trial": 1 if not gpu else 2}
    if args.subset:
        study.update(subset_train=args.subset, subset_test=max(200, args.subset // 5))
        study["teacher"].update(epochs=args.teacher_epochs)
    path = folder / f"c{concurrency}.yaml"
    path.write_text(yaml.safe_dump(study))
    sampler = GpuSampler()
    sampler.start()
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "autokd", "search", str(path)], cwd=REPO, capture_output=True, text=True)
    wall = time.perf_counter() - started
    util = sampler.stop()
    if proc.returncode != 0:
        print(proc.stdout[-3000:], proc.stderr[-3000:])
        raise SystemExit(f"search at concurrency {concurrency} failed")
    loaded = optuna.load_study(study_name=study["name"], storage=f"sqlite:///{folder / f'c{concurrency}' / 'study.db'}")
    complete = loaded.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    finished = [t for t in loaded.get_trials() if t.state.is_finished()]
    search_seconds = sum((t.datetime_complete - t.datetime_start).total_seconds() for t in complete)
    front = [{"trial": t.number, "architecture": trial_architecture(t), "accuracy": trial_figures(t).get("accuracy"),
              "params": trial_figures(t).get("params"), "latency_ms": trial_figures(t).get("latency_ms"),
              "epochs": trial_config(t).get("epochs")} for t in pareto_trials(loaded)]
    epochs = sum(trial_config(t).get("epochs", 0) for t in complete)
    return {"concurrency": concurrency, "wall_seconds": round(wall, 1), "trials_complete": len(complete),
            "trials_finished": len(finished), "trials_per_hour": round(3600 * len(complete) / wall, 1),
            "student_epochs_per_minute": round(60 * epochs / wall, 2),
            "median_trial_seconds": round(median([(t.datetime_complete - t.datetime_start).total_seconds()
                                                  for t in complete]), 2),
            "trial_seconds_total": round(search_seconds, 1),
            "teacher": (study_teacher(loaded) or {}).get("accuracy"),
            "gpu_utilisation_median": median(util) if util else None, "pareto_front": front}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=20.0)
    parser.add_argument("--concurrency", default="1,2,4")
    parser.add_argument("--subset", type=int, default=None, help="train images (CPU-sized runs)")
    parser.add_argument("--teacher-epochs", type=int, default=2)
    args = parser.parse_args()
    gpu = torch.cuda.is_available()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for c in [int(x) for x in args.concurrency.split(",")]:
            rows.append(run(c, args, Path(tmp), gpu))
            print({k: v for k, v in rows[-1].items() if k != "pareto_front"}, flush=True)
    device = torch.device("cuda" if gpu else "cpu")
    path = write_result(f"cifar_search_{device.type}", {"minutes": args.minutes, "subset": args.subset, "runs": rows},
                        device)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
