"""The demo's time and front: ``autokd search`` (no arguments) then ``autokd report``, in a fresh folder.

Each run starts in an empty working folder (no study, no teacher, no logit cache: a user's first
``make demo`` after the install) and records the wall time of both commands, their CPU seconds
(with every process they waited for: Ray's workers included), the search's own split (``search
wall time X s (teacher Y s, trials Z s)``), the load average before and after, and the front's
figures, read from the study on the Pareto front chosen on validation:

* ``best_test_accuracy``: the best test accuracy on the front;
* ``smallest_within_1pt``: the fewest parameters of a front member whose test accuracy is within
  1 point of the teacher's (and that student's test accuracy).

``--before PATH`` runs an older checkout (e.g. ``git worktree add /tmp/autokd-before main``)
alternately with this one, so both see the same host. ``AUTOKD_LOCK_DIR`` is unset for the runs:
each checkout times latencies with its own default host lock, as ``make demo`` would.

    python -m bench.demo_time [--repeats 3] [--before PATH]    # bench/results/demo_time.json
    python -m bench.demo_time --repeats 1 --seeds 0 1 2 --executor local --before PATH --out demo_front_local

With ``--executor local`` the order in which trials finish no longer moves the sampler (under Ray it
does), but measured latency is an objective and differs run to run, so a seed's later students can
still differ: compare fronts over several seeds, not one.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import torch
import yaml

from bench.common import autokd_cli, median, write_result

REPO = Path(__file__).resolve().parents[1]
WALL_LINE = re.compile(r"search wall time ([\d.]+) s \(teacher ([\d.]+) s, trials ([\d.]+) s\)")


def commit(repo: Path) -> str:
    """``repo``'s commit (``+dirty`` with uncommitted changes); a copy without git says so in its folder name."""
    out = subprocess.run(["git", "-C", str(repo), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    if out.returncode != 0:
        return f"not a git checkout: {repo.name}"
    dirty = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True).stdout.strip()
    return out.stdout.strip() + ("+dirty" if dirty else "")


def timed(repo: Path, cwd: Path, *args: str) -> dict[str, Any]:
    """Wall and CPU seconds of one ``autokd`` command (CPU: it and every process it waited for)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    wall, log = autokd_cli(repo, cwd, *args)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"wall_s": round(wall, 2), "cpu_s": round(cpu, 2), "log": log}


def front_figures(study_db: Path) -> dict[str, Any]:
    """The front's best test accuracy and its smallest student within 1 point of the teacher (on test)."""
    import optuna

    from autokd.record import study_teacher, trial_figures
    from autokd.report.trials import pareto_trials

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.load_study(study_name="digits-default", storage=f"sqlite:///{study_db}")
    teacher = study_teacher(study) or {}
    front = [trial_figures(t) | {"number": t.number} for t in pareto_trials(study)]
    teacher_test = float(teacher.get("test_accuracy", float("nan")))
    near = [f for f in front if f["test_accuracy"] >= teacher_test - 0.01 - 1e-9]
    smallest = min(near, key=lambda f: f["params"], default=None)
    complete = [trial_figures(t) | {"number": t.number} for t in study.trials if t.state.name == "COMPLETE"]
    near_any = [f for f in complete if f["test_accuracy"] >= teacher_test - 0.01 - 1e-9]
    families: dict[str, int] = {}
    for t in study.trials:
        family = (trial_figures(t).get("architecture") or "?").split("(")[0]
        families[family] = families.get(family, 0) + 1
    return {"teacher": teacher.get("architecture"), "teacher_params": teacher.get("params"),
            "teacher_test_accuracy": teacher_test, "teacher_validation_accuracy": teacher.get("validation_accuracy"),
            "best_test_accuracy": max((f["test_accuracy"] for f in front), default=None),
            "smallest_within_1pt_params": smallest["params"] if smallest else None,
            "smallest_within_1pt_test_accuracy": smallest["test_accuracy"] if smallest else None,
            "smallest_within_1pt_trial": smallest["number"] if smallest else None,
            # The same two over every finished trial, not only the front validation chose: what the search
            # found, without the luck of 144 validation images (a front member's test accuracy varies by points).
            "any_trial_best_test_accuracy": max((f["test_accuracy"] for f in complete), default=None),
            "any_trial_smallest_within_1pt_params": min((f["params"] for f in near_any), default=None),
            "front": [{k: f.get(k) for k in ("number", "architecture", "params", "validation_accuracy", "test_accuracy",
                                             "latency_ms")} for f in front],
            "trials_by_family": families, "trials": len(study.trials)}


def study_args(repo: Path, cwd: Path, seed: int | None, executor: str | None) -> list[str]:
    """``autokd search``'s arguments: none (the demo), or ``repo``'s built-in study file at another seed."""
    if seed is None:
        return [] if executor is None else ["--executor", executor]
    study = yaml.safe_load((repo / "studies" / "default.yaml").read_text())
    study["seed"] = seed
    (cwd / "default.yaml").write_text(yaml.safe_dump(study))  # its search space resolves in repo's checkout
    return [str(cwd / "default.yaml"), *(["--executor", executor] if executor else [])]


def demo_run(repo: Path, seed: int | None = None, executor: str | None = None) -> dict[str, Any]:
    """One ``autokd search`` + ``autokd report`` of ``repo``'s code in a fresh folder."""
    with tempfile.TemporaryDirectory(prefix="autokd-demo-") as tmp:
        cwd = Path(tmp)
        os.environ.pop("AUTOKD_LOCK_DIR", None)  # each checkout's own default, as `make demo` runs it
        load = os.getloadavg()[0]
        search = timed(repo, cwd, "search", *study_args(repo, cwd, seed, executor))
        report = timed(repo, cwd, "report", *([] if seed is None else ["digits-default"]))
        match = WALL_LINE.search(search.pop("log"))
        report.pop("log")
        figures = front_figures(cwd / "runs" / "digits-default" / "study.db")
    split = dict(zip(("search_wall_line_s", "teacher_s", "trials_s"), map(float, match.groups()))) if match else {}
    return {"code": str(repo), "commit": commit(repo), "seed": seed, "executor": executor or "ray",
            "load_before": round(load, 2),
            "load_after": round(os.getloadavg()[0], 2), "search": search, "report": report,
            "demo_wall_s": round(search["wall_s"] + report["wall_s"], 2), **split, **figures}


def summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    keys = ("demo_wall_s", "teacher_s", "trials_s", "best_test_accuracy", "smallest_within_1pt_params",
            "teacher_test_accuracy", "any_trial_best_test_accuracy", "any_trial_smallest_within_1pt_params")
    out: dict[str, Any] = {k: median([r[k] for r in runs if r.get(k) is not None]) for k in keys}
    out["search_wall_s"] = median([r["search"]["wall_s"] for r in runs])
    out["search_cpu_s"] = median([r["search"]["cpu_s"] for r in runs])
    out["report_wall_s"] = median([r["report"]["wall_s"] for r in runs])
    out["runs"] = len(runs)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="Runs of each checkout (alternating).")
    parser.add_argument("--before", default=None, help="An older checkout to run alternately (its 'before' figures).")
    parser.add_argument("--seeds", type=int, nargs="*", default=None,
                        help="Study seeds, one run each per repeat (default: the demo itself, seed 0, no arguments).")
    parser.add_argument("--executor", default=None, help="local: the same trials run after run (fronts comparable).")
    parser.add_argument("--threads", type=int, default=None,
                        help="OMP_NUM_THREADS of the runs (default: torch's own; 1 on a shared host, where "
                             "spinning OpenMP threads waste the cores others wait for).")
    parser.add_argument("--out", default="demo_time", help="Result name under bench/results/.")
    args = parser.parse_args()
    if args.threads:
        os.environ["OMP_NUM_THREADS"] = str(args.threads)
    variants = {"after": REPO} | ({"before": Path(args.before).resolve()} if args.before else {})
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in variants}
    for i, seed in [(i, seed) for i in range(args.repeats) for seed in (args.seeds or [None])]:
        for name, repo in (list(variants.items()) if i % 2 == 0 else list(variants.items())[::-1]):
            runs[name].append(demo_run(repo, seed, args.executor))
            last = runs[name][-1]
            print(f"{name} run {i + 1} seed {seed}: demo {last['demo_wall_s']} s (search {last['search']['wall_s']} s, teacher "
                  f"{last.get('teacher_s')} s, report {last['report']['wall_s']} s), load {last['load_before']}, "
                  f"teacher test {last['teacher_test_accuracy']:.4f}, best test {last['best_test_accuracy']:.4f}, smallest "
                  f"within 1 pt {last['smallest_within_1pt_params']} ({last['trials_by_family']})",
                  flush=True)
    payload = {"what": "autokd search (no arguments) + autokd report in a fresh folder; front on validation, "
                       "figures on test", "load_average_end": os.getloadavg(), "omp_num_threads": args.threads,
               "summary": {name: summary(r) for name, r in runs.items()}, "runs": runs}
    print(write_result(args.out, payload, torch.device("cpu")))


if __name__ == "__main__":
    main()
