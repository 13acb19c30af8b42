"""Latency of one fixed architecture across trials that train side by side (issue 10, part 3).

Runs ``autokd search`` (the CLI, as a user would) on a generated digits study: one student
architecture (cnn5 at fixed knobs), training settings that differ only in lr, alpha and
temperature (so every configuration is distinct), ``--trials`` trials at ``--concurrency`` under
the Ray executor, enough epochs that trials overlap. Every COMPLETE trial's ``latency_ms`` is
read back from the study database; the figure is ``max / min`` over trials (target: at most
1.2x). The spread within each trial (``latency_spread_ms``, p90 - p10 of its timed runs) is
recorded when the code under test stores it. Next to it, ``idle_host_floor``: the same
architecture timed as many times in one idle process with the same settings, spaced like the
trials: how far this host's own timings of one model fall apart with nobody else running.

The CLI runs from ``--repo`` (that checkout's code on ``PYTHONPATH``, this interpreter), so the
same script measures an older checkout for the "before" figure:

    git worktree add /tmp/autokd-before 140174f
    python -m bench.latency_isolation --label before --repo /tmp/autokd-before
    python -m bench.latency_isolation --label after-runs-only --latency-min-seconds 0
    python -m bench.latency_isolation --label after --latency-min-seconds 1.0
    AUTOKD_LOCK_DIR=off python -m bench.latency_isolation --label lock-off --latency-backend torch

Results merge into ``bench/results/latency_isolation.json`` by ``--label``, so "before" and
"after" sit side by side with their host, load average and settings. Run it on an idle host.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from bench.common import RESULTS, autokd_cli, merge_labelled_run

HERE = Path(__file__).resolve().parents[1]
NAME = "latency_isolation"


def write_study(folder: Path, args: argparse.Namespace) -> Path:
    """A digits study: tiny cnn5 teacher, one fixed cnn5 student, lr/alpha/temperature sampled."""
    space = {
        "students": {"cnn5": {"width": args.width, "hidden": args.hidden}},
        "distill": {"loss": "kd", "alpha": {"float": [0.3, 0.9]}, "temperature": {"float": [2.0, 6.0]}},
        "train": {"epochs": args.epochs, "batch_size": 64, "lr": {"float": [0.01, 0.1], "log": True}},
    }
    (folder / "space.yaml").write_text(yaml.safe_dump(space))
    study = {
        "name": "latency-isolation", "dataset": "digits",
        "teacher": {"family": "cnn5", "knobs": {"width": 0.25}, "epochs": 2},
        "search_space": "space.yaml", "objectives": ["accuracy", "params", "latency_ms"],
        "n_trials": args.trials, "sampler": "random", "seed": args.seed, "latency_runs": args.latency_runs,
        **({"latency_min_seconds": args.latency_min_seconds} if args.latency_min_seconds is not None else {}),
        **({"latency_backend": args.latency_backend} if args.latency_backend is not None else {}),
        "output": "out",
        "executor": {"kind": "ray", "max_concurrent": args.concurrency, "cpus_per_trial": args.cpus_per_trial},
    }
    path = folder / "study.yaml"
    path.write_text(yaml.safe_dump(study, sort_keys=False))
    return path


def read_trials(study: Path) -> list[dict[str, Any]]:
    """Every COMPLETE trial's latency figures and times, straight from the SQLite study."""
    import optuna

    from autokd.record import trial_figures

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    loaded = optuna.load_study(study_name="latency-isolation", storage=f"sqlite:///{study.parent / 'out/study.db'}")
    rows = []
    for t in loaded.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        a = trial_figures(t)  # older checkouts: no metrics attr, the same figures
        rows.append({"number": t.number, "latency_ms": a["latency_ms"],
                     "latency_spread_ms": a.get("latency_spread_ms"), "latency_wait_s": a.get("latency_wait_s"),
                     "latency_alone": a.get("latency_alone"), "params": a.get("params"),
                     "start": t.datetime_start, "end": t.datetime_complete})
    for row in rows:  # did another trial run while this one did (concurrency really happened)?
        row["overlapped"] = any(o is not row and o["start"] < row["end"] and row["start"] < o["end"] for o in rows)
    for row in rows:
        row["trial_s"] = round((row.pop("end") - row.pop("start")).total_seconds(), 2)
    return rows


def host_floor(args: argparse.Namespace, repeats: int, pause_s: float) -> dict[str, Any]:
    """The same architecture timed ``repeats`` times in this idle process, ``pause_s`` apart.

    No other trial runs, so this is how far apart this host's own timings of one model fall
    with the same settings: the floor under any isolation of trials from each other.
    """
    import torch

    from autokd.measure import LatencySettings, latency_stats
    from autokd.models import build_model

    torch.manual_seed(0)
    model = build_model("cnn5", num_classes=10, in_channels=1, image_size=8, width=args.width, hidden=args.hidden)
    settings = LatencySettings(runs=args.latency_runs, threads=1, min_seconds=args.latency_min_seconds or 0.0,
                               backend=args.latency_backend or "torch")
    values = []
    for _ in range(repeats):
        if settings.backend == "torch":
            values.append(latency_stats(model.eval(), torch.rand(1, 1, 8, 8), settings).median_ms)
        else:  # as the study times it (autokd.latency: the ONNX export in onnxruntime)
            from autokd.latency import deployed_latency

            values.append(deployed_latency(model.eval(), torch.rand(1, 1, 8, 8), settings)["latency_ms"])
        time.sleep(pause_s)
    return {"latency_ms": values, "max_over_min": round(max(values) / min(values), 3), "backend": settings.backend,
            "repeats": repeats, "pause_s": pause_s, "min_seconds": settings.min_seconds, "runs": settings.runs}


def repo_commit(repo: Path) -> str:
    try:
        head = subprocess.run(["git", "-C", str(repo), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True).stdout.strip()
        return head + ("+uncommitted" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def host() -> dict[str, Any]:
    import torch

    from autokd.measure import cpu_model

    info = {"cpu_model": cpu_model(), "cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
            else os.cpu_count(), "torch_version": torch.__version__, "python": platform.python_version(),
            "platform": platform.platform(), "device": "cuda" if torch.cuda.is_available() else "cpu"}
    if torch.cuda.is_available():
        info["gpu_name"] = torch.cuda.get_device_name(0)
    return info


def merge(label: str, record: dict[str, Any], path: Path) -> dict[str, Any]:
    """Add (or replace) this label's run in the results file; keep the other labels' runs."""
    header = {"benchmark": NAME, "what": __doc__.splitlines()[0], "target_max_over_min": 1.2}
    return merge_labelled_run(path, label, record, header, "max_over_min")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--label", required=True, help="name of this run in the results file, e.g. before / after")
    parser.add_argument("--repo", type=Path, default=HERE, help="checkout whose autokd runs (default: this one)")
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=20, help="per trial: enough that trials overlap")
    parser.add_argument("--width", type=float, default=0.5)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--latency-runs", type=int, default=30)
    parser.add_argument("--latency-min-seconds", type=float, default=None,
                        help="study key latency_min_seconds (left out of the study when not given: older checkouts lack it)")
    parser.add_argument("--latency-backend", choices=["onnxruntime", "torch"], default=None,
                        help="study key latency_backend (left out when not given: the checkout's default; "
                             "older checkouts lack it). The idle-host floor is timed the same way (eager without it)")
    parser.add_argument("--cpus-per-trial", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=3600, help="seconds for the whole search")
    parser.add_argument("--output", type=Path, default=RESULTS / f"{NAME}.json")
    parser.add_argument("--keep", type=Path, help="keep the study folder here instead of a temporary one")
    args = parser.parse_args()
    repo = args.repo.resolve()
    if not (repo / "autokd" / "cli.py").is_file():
        raise SystemExit(f"{repo} is not an autokd checkout (no autokd/cli.py)")

    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="autokd-latency-") as tmp:
        folder = args.keep.resolve() if args.keep else Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        study = write_study(folder, args)
        print(f"[{args.label}] {args.trials} trials of cnn5(width={args.width}, hidden={args.hidden}) at concurrency "
              f"{args.concurrency}, {args.epochs} epochs, code from {repo}", flush=True)
        wall, _ = autokd_cli(repo, study.parent, "search", str(study), timeout=args.timeout)
        rows = read_trials(study)
    floor = host_floor(args, repeats=args.trials, pause_s=wall / max(1, args.trials))
    if len(rows) < 2:
        raise SystemExit(f"only {len(rows)} complete trial(s): no ratio")
    values = [r["latency_ms"] for r in rows]
    record = {
        "label": args.label,
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "repo": str(repo), "commit": repo_commit(repo),
        **host(),
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "settings": {"family": "cnn5", "knobs": {"width": args.width, "hidden": args.hidden}, "dataset": "digits",
                     "trials": args.trials, "concurrency": args.concurrency, "epochs": args.epochs,
                     "latency_runs": args.latency_runs, "latency_min_seconds": args.latency_min_seconds,
                     "latency_threads": 1, "cpus_per_trial": args.cpus_per_trial,
                     "latency_backend": args.latency_backend or "checkout default",
                     "lock_dir": os.environ.get("AUTOKD_LOCK_DIR", "default"),
                     "executor": "ray", "sampler": "random", "seed": args.seed},
        "complete_trials": len(rows),
        "overlapping_trials": sum(r["overlapped"] for r in rows),
        "search_wall_s": round(wall, 1),
        "latency_ms": values,
        "min_ms": min(values), "max_ms": max(values),
        "max_over_min": round(max(values) / min(values), 3),
        "trials": rows,
        "idle_host_floor": floor,
    }
    data = merge(args.label, record, args.output)
    print(f"[{args.label}] latency_ms over {len(values)} trials ({record['overlapping_trials']} overlapped): "
          f"min {min(values):.4f}  max {max(values):.4f}  max/min {record['max_over_min']:.2f}x (target <= 1.2x); "
          f"one idle process, same settings: {floor['max_over_min']:.2f}x")
    print(f"wrote {args.output}: " + ", ".join(f"{k} {v:.2f}x" for k, v in data["max_over_min"].items()))


if __name__ == "__main__":
    main()
