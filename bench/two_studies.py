"""Two independent studies side by side vs one after the other (issue 25, item 4).

Two small digits studies (distinct names, SQLite files and output folders; a tiny cnn5 teacher,
one fixed cnn5 student with lr/alpha/temperature sampled, ``--trials`` trials each, the default
executor) run through the CLI as a user would: first one after the other, then side by side
(two ``autokd search`` processes started together), on the same machine in one run. The figure is
``side_by_side_wall / (wall_a + wall_b)`` (target: at most 1.2): fair sharing of the cores, and
no study waiting on the other. Each trial's pauses (``host_paused_s``: seconds its training sat
at a safe point for a measurement; ``latency_wait_s``: seconds its measurement waited for
trainers), threads and wall time are read back from the study databases, with the spread
(max/min) of the recorded latencies of the fixed architecture in each mode.

The studies run with the checkout's lock default (off since issue 25) unless ``--lock-dir``
gives both one lock folder (``AUTOKD_LOCK_DIR``), as they would share it on a user's host; give
one for an older checkout, whose host-wide lock is on by default, so that other autokd processes
on a shared machine do not enter its figure. ``--repo`` runs an older checkout's code:

    python -m bench.two_studies --label after
    python -m bench.two_studies --label after-local --executor local
    git archive eb98735 | tar -x -C /tmp/autokd-before
    python -m bench.two_studies --label before --repo /tmp/autokd-before --lock-dir /tmp/autokd-before-locks

Results merge into ``bench/results/two_studies.json`` by ``--label``, with host, load averages,
versions, date and commit. The lead re-runs it on an idle host.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from bench.common import RESULTS, merge_labelled_run
from bench.latency_isolation import host, repo_commit

HERE = Path(__file__).resolve().parents[1]
NAME = "two_studies"


def write_study(folder: Path, name: str, args: argparse.Namespace) -> Path:
    """A digits study in ``folder``: tiny cnn5 teacher, one fixed cnn5 student, lr/alpha/temperature sampled."""
    folder.mkdir(parents=True, exist_ok=True)
    space = {
        "students": {"cnn5": {"width": args.width, "hidden": args.hidden}},
        "distill": {"loss": "kd", "alpha": {"float": [0.3, 0.9]}, "temperature": {"float": [2.0, 6.0]}},
        "train": {"epochs": args.epochs, "batch_size": 64, "lr": {"float": [0.01, 0.1], "log": True}},
    }
    (folder / "space.yaml").write_text(yaml.safe_dump(space))
    study = {"name": name, "dataset": "digits", "teacher": {"family": "cnn5", "knobs": {"width": 0.25}, "epochs": 2},
             "search_space": "space.yaml", "objectives": ["accuracy", "params", "latency_ms"],
             "n_trials": args.trials, "sampler": "random", "seed": args.seed, "output": "out"}
    executor = {"kind": args.executor} if args.executor else {}
    if args.threads_per_trial:
        executor["threads_per_trial"] = args.threads_per_trial
    if executor:
        study["executor"] = executor
    path = folder / "study.yaml"
    path.write_text(yaml.safe_dump(study, sort_keys=False))
    return path


def launch(repo: Path, study: Path, lock_dir: Path | None) -> subprocess.Popen:
    """``autokd search STUDY`` from ``repo``'s code, in the study's folder, with its own private Ray."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(repo), *filter(None, [os.environ.get("PYTHONPATH")])]),
           "COLUMNS": "200"}
    env.pop("RAY_ADDRESS", None)
    env.pop("AUTOKD_LOCK_DIR", None)  # the checkout's default, unless --lock-dir
    if lock_dir is not None:
        env["AUTOKD_LOCK_DIR"] = str(lock_dir)
    log = open(study.parent / "search.log", "w")
    return subprocess.Popen([sys.executable, "-m", "autokd", "search", str(study)], cwd=study.parent, env=env,
                            stdout=log, stderr=subprocess.STDOUT)


def wait_all(procs: list[subprocess.Popen], studies: list[Path], timeout: float) -> dict[str, float]:
    """Wait for every process; each one's wall seconds from the common start, by study name."""
    started, walls = time.perf_counter(), {}
    pending = dict(zip(studies, procs))
    while pending:
        for study, proc in list(pending.items()):
            if proc.poll() is not None:
                walls[study.parent.name] = time.perf_counter() - started
                del pending[study]
                if proc.returncode != 0:
                    raise SystemExit(f"{study} exited {proc.returncode}:\n"
                                     f"{(study.parent / 'search.log').read_text()[-4000:]}")
        if time.perf_counter() - started > timeout:
            for proc in pending.values():
                proc.kill()
            raise SystemExit(f"timed out after {timeout:.0f} s")
        time.sleep(0.2)
    return walls


def read_trials(study: Path) -> list[dict[str, Any]]:
    """Every COMPLETE trial's latency, pauses, threads and wall time, from the study's SQLite file."""
    import optuna

    from autokd.record import trial_figures

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    name = yaml.safe_load(study.read_text())["name"]
    loaded = optuna.load_study(study_name=name, storage=f"sqlite:///{study.parent / 'out/study.db'}")
    rows = []
    for t in loaded.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        a = trial_figures(t)
        rows.append({"number": t.number, "latency_ms": a["latency_ms"], "latency_wait_s": a.get("latency_wait_s"),
                     "host_paused_s": a.get("host_paused_s"), "train_threads": a.get("train_threads"),
                     "latency_backend": a.get("latency_backend"),
                     "trial_s": round((t.datetime_complete - t.datetime_start).total_seconds(), 2)})
    return rows


def run_mode(mode: str, repo: Path, root: Path, lock_dir: Path | None, args: argparse.Namespace) -> dict[str, Any]:
    """Both studies, one after the other (``sequential``) or started together (``side_by_side``)."""
    studies = [write_study(root / f"{mode}-{x}", f"two-studies-{mode}-{x}", args) for x in ("a", "b")]
    started = time.perf_counter()
    if mode == "sequential":
        walls = {}
        for study in studies:  # each one's wall from its own start
            walls.update(wait_all([launch(repo, study, lock_dir)], [study], args.timeout))
    else:
        walls = wait_all([launch(repo, s, lock_dir) for s in studies], studies, args.timeout)
    wall = time.perf_counter() - started
    per_study = {s.parent.name: {"wall_s": round(walls[s.parent.name], 1), "trials": read_trials(s)} for s in studies}
    rows = [r for s in per_study.values() for r in s["trials"]]
    latencies = [r["latency_ms"] for r in rows]
    return {"wall_s": round(wall, 1), "studies": per_study, "complete_trials": len(rows),
            "latency_ms_max_over_min": round(max(latencies) / min(latencies), 3) if latencies else None,
            "latency_ms_median": statistics.median(latencies) if latencies else None,
            "latency_wait_s_max": max((r["latency_wait_s"] or 0.0 for r in rows), default=None),
            "host_paused_s_total": round(sum(r["host_paused_s"] or 0.0 for r in rows), 3),
            "trial_s_median": statistics.median(r["trial_s"] for r in rows) if rows else None}


def merge(label: str, record: dict[str, Any], path: Path) -> dict[str, Any]:
    """Add (or replace) this label's run in the results file; keep the other labels' runs."""
    header = {"benchmark": NAME, "what": __doc__.splitlines()[0], "target_ratio": 1.2}
    return merge_labelled_run(path, label, record, header, "ratio")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--label", required=True, help="name of this run in the results file, e.g. before / after")
    parser.add_argument("--repo", type=Path, default=HERE, help="checkout whose autokd runs (default: this one)")
    parser.add_argument("--trials", type=int, default=4, help="trials per study")
    parser.add_argument("--epochs", type=int, default=10, help="per trial")
    parser.add_argument("--width", type=float, default=0.5)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--executor", choices=["ray", "local"], default=None,
                        help="executor.kind of both studies (default: the study default, ray)")
    parser.add_argument("--threads-per-trial", type=int, default=None,
                        help="executor.threads_per_trial of both studies (default: the study default, cores / trials at once)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lock-dir", type=Path,
                        help="AUTOKD_LOCK_DIR of both studies (default: unset, the checkout's default)")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds for each mode")
    parser.add_argument("--output", type=Path, default=RESULTS / f"{NAME}.json")
    args = parser.parse_args()
    repo = args.repo.resolve()
    if not (repo / "autokd" / "cli.py").is_file():
        raise SystemExit(f"{repo} is not an autokd checkout (no autokd/cli.py)")
    load_before = os.getloadavg()
    date = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    with tempfile.TemporaryDirectory(prefix="autokd-two-studies-") as tmp:
        lock_dir = args.lock_dir.resolve() if args.lock_dir else None
        modes = {}
        for mode in ("sequential", "side_by_side"):
            print(f"[{args.label}] {mode}: 2 studies x {args.trials} trials, code from {repo}", flush=True)
            modes[mode] = run_mode(mode, repo, Path(tmp), lock_dir, args)
            print(f"[{args.label}] {mode}: {modes[mode]['wall_s']} s", flush=True)
    ratio = modes["side_by_side"]["wall_s"] / modes["sequential"]["wall_s"]
    record = {"label": args.label, "date": date, "repo": str(repo), "commit": repo_commit(repo), **host(),
              "load_average_before": [round(x, 2) for x in load_before],
              "load_average_after": [round(x, 2) for x in os.getloadavg()],
              "settings": {"trials_per_study": args.trials, "epochs": args.epochs, "dataset": "digits",
                           "family": "cnn5", "knobs": {"width": args.width, "hidden": args.hidden},
                           "executor": args.executor or "study default", "threads_per_trial": args.threads_per_trial,
                           "sampler": "random", "seed": args.seed,
                           "lock_dir": str(args.lock_dir) if args.lock_dir else "the checkout's default"},
              "sequential_wall_s": modes["sequential"]["wall_s"], "side_by_side_wall_s": modes["side_by_side"]["wall_s"],
              "ratio": round(ratio, 3), **modes}
    data = merge(args.label, record, args.output)
    print(f"[{args.label}] side by side {record['side_by_side_wall_s']} s / one after the other "
          f"{record['sequential_wall_s']} s = {ratio:.2f} (target <= 1.2); latency max/min "
          f"{modes['sequential']['latency_ms_max_over_min']} (sequential), "
          f"{modes['side_by_side']['latency_ms_max_over_min']} (side by side)")
    print(f"wrote {args.output}: " + ", ".join(f"{k} {v}" for k, v in data["ratio"].items()))


if __name__ == "__main__":
    main()
