"""Per-trial overhead of Ray Tune + Optuna + the study database, with trials that train nothing.

Runs the real Ray executor (``run_ray``: StudySearch on the study's storage, ConcurrencyLimiter,
heartbeat, record_metrics, artifact-free final report) with a trainable that reports fixed
metrics at once, ``--concurrency`` trials at a time, on SQLite and on PostgreSQL. Two figures,
medians over the repeats:

* ``seconds_per_trial``: driver wall time of ``tuner.fit`` / trials (throughput at concurrency);
* ``ask_to_tell_s``: per trial, Optuna's ``datetime_complete - datetime_start``: what one trial
  costs end to end through Ray and the database when its training takes no time.

Ray start-up is excluded (one ``ray.init`` per process, before timing). Usage:

    python -m bench.ray_overhead [--trials 40] [--concurrency 4] [--repeats 3] [--postgres URL]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import optuna
import torch
import yaml
from rich.console import Console

from bench.common import median, write_result

SPACE = {"students": {"cnn5": {"width": {"float": [0.125, 1.0]}, "hidden": {"int": [16, 128]}}},
         "distill": {"alpha": {"float": [0.3, 0.95]}}, "train": {"lr": {"float": [0.01, 0.2], "log": True}}}


def empty_trial(config: dict[str, Any], *, study_yaml: str, cwd: str) -> None:
    """A trainable with train_trial's contract that trains nothing: one epoch report, one final."""
    from ray import tune

    tune.report({"epoch": 1, "accuracy": 0.5, "final": False})
    metrics = {"accuracy": 0.5, "params": 1000, "latency_ms": 0.1, "trial_seconds": 0.0}
    tune.report({**metrics, "final": True, "metrics_json": json.dumps(metrics)})


def measure(storage: str, trials: int, concurrency: int, folder: Path) -> dict[str, float]:
    from autokd.config import StudyConfig
    from autokd.space import SearchSpace
    from autokd.search.ray_executor import run_ray
    from autokd.search.study import open_study

    (folder / "space.yaml").write_text(yaml.safe_dump(SPACE))
    cfg = StudyConfig(name=f"overhead-{uuid.uuid4().hex[:8]}", storage=storage, output=str(folder / "out"),
                      search_space=str(folder / "space.yaml"), n_trials=trials, base_dir=str(folder),
                      executor={"kind": "ray", "max_concurrent": concurrency,
                                "cpus_per_trial": max(0.1, (os.cpu_count() or 1) / concurrency)})
    cfg.output_dir.mkdir(parents=True, exist_ok=True)
    study = open_study(cfg)
    space = SearchSpace.load(cfg.search_space)
    started = time.perf_counter()
    run_ray(study, cfg, space, console=Console(quiet=True), trainable=empty_trial)
    wall = time.perf_counter() - started
    done = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    assert len(done) == trials, f"{len(done)} of {trials} trials completed"
    per_trial = [(t.datetime_complete - t.datetime_start).total_seconds() for t in done]
    return {"seconds_per_trial": wall / trials, "ask_to_tell_s": median(per_trial), "wall_s": wall}


def _postgres_database(admin_url: str) -> tuple[str, Any]:
    import psycopg

    admin = psycopg.connect(admin_url, autocommit=True)
    name = f"autokd_bench_{uuid.uuid4().hex[:10]}"
    admin.execute(f'CREATE DATABASE "{name}"')
    url = admin_url.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1) + "/" + name

    def drop() -> None:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()

    return url, drop


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=40)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/test",
                        help="admin URL; a scratch database is created and dropped ('' to skip)")
    args = parser.parse_args()

    import ray

    from autokd.search.ray_executor import init_ray
    from autokd.config import StudyConfig

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    load_before = os.getloadavg()
    init_ray(StudyConfig())  # started once: start-up is not per-trial overhead
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        backends = {"sqlite": lambda folder: (f"sqlite:///{folder}/study.db", lambda: None)}
        if args.postgres:
            backends["postgresql"] = lambda folder: _postgres_database(args.postgres)
        for backend, make in backends.items():
            runs = []
            for repeat in range(args.repeats + 1):  # repeat 0 warms Ray's worker pool up, not reported
                folder = Path(tmp) / f"{backend}{repeat}"
                folder.mkdir()
                url, drop = make(folder)
                try:
                    run = measure(url, args.trials, args.concurrency, folder)
                finally:
                    drop()
                print(f"{backend} run {repeat}: {run}")
                if repeat:
                    runs.append(run)
            results[backend] = {key: median([r[key] for r in runs]) for key in runs[0]} | {"runs": runs}
    ray.shutdown()

    path = write_result("ray_overhead", {
        "what": "per-trial overhead of Ray Tune + OptunaSearch + study database, trainable trains nothing",
        "trials": args.trials, "concurrency": args.concurrency, "repeats": args.repeats,
        "cpus": os.cpu_count(), "ray": ray.__version__, "optuna": optuna.__version__,
        "note": "medians over repeats; ask_to_tell_s is the median over trials within a repeat",
        "load_average_1m_before_after": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
        "results": results}, torch.device("cpu"))
    print(f"wrote {path}")
    for backend, r in results.items():
        print(f"{backend}: {r['seconds_per_trial']:.3f} s/trial at concurrency {args.concurrency}, "
              f"ask-to-tell median {r['ask_to_tell_s']:.3f} s")


if __name__ == "__main__":
    main()
