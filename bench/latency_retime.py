"""Does interleaved re-timing hold the front still? Per-trial timing against interleaved re-timing.

Two sets of students on digits: ``demo_front``, the demo study's front as the README shows it
(five students whose latencies lie close together), and ``demo_students``, the float students of
``bench/latency_backends.py`` (a spread over the demo space's families); or ``--study NAME``, a
stored study's front rebuilt from its weights. Each set is timed ``--repeats`` times each way, with the study's default settings (onnxruntime, 1 thread, batch
1, median of >= 30 runs over >= 0.5 s):

* **per-trial**: each model timed alone, as a trial times it (:func:`autokd.latency.deployed_latency`,
  export included), one after another in a shuffled order, with ``--gap`` seconds of one-thread
  compute between them (a trial trains between two timings);
* **interleaved**: all of them together, :func:`autokd.search.retime`'s way (one export and session
  per model, ``--rounds`` rounds, every model once per round in a shuffled order, median over rounds),
  the same ``--gap`` of compute before each re-timing.

The two ways alternate (per-trial pass 1, re-timing 1, pass 2, ...) so load changes hit both. The
JSON has every figure, max/min of each model across the repeats each way, and Kendall tau between
every pair of repeats each way, per set (target: interleaved >= 0.9 where per-trial is not).

    PYTHONPATH=. python -m bench.latency_retime                  # about 3 min on 2 idle cores
    PYTHONPATH=. python -m bench.latency_retime --study runs/digits-default/study.yaml
"""

from __future__ import annotations

import argparse
import itertools
import os
import random
import statistics
import subprocess
import time
from pathlib import Path

import torch

from autokd.checkpoint import deployable
from autokd.config import LatencySettings, StudyConfig
from autokd.data import load_dataset
from autokd.latency import deployed_latency, interleaved_rounds, member_timers
from autokd.measure import count_params
from autokd.ranking import kendall_tau
from autokd.models import build_model
from bench.common import write_result
from bench.latency_backends import STUDENTS


#: The demo study's front as the README shows it (``autokd search``, 2026-12-01): its latencies lie close
#: together (0.009-0.02 ms in onnxruntime), the hard case for an order by latency.
DEMO_FRONT = [("cnn5", {"width": 0.898, "hidden": 124}), ("vgg", {"variant": 7, "width": 0.0646}),
              ("cnn5", {"width": 0.307, "hidden": 45}), ("cnn5", {"width": 0.154, "hidden": 59}),
              ("cnn5", {"width": 0.153, "hidden": 79})]
#: Which students each set times.
SETS = {"demo_front": DEMO_FRONT, "demo_students": STUDENTS}


def demo_models(students: list[tuple[str, dict]]) -> dict[str, torch.nn.Module]:
    """Name -> deployable float student on digits (untrained: latency does not depend on the weights)."""
    data = load_dataset("digits")
    models = {}
    for family, knobs in students:
        torch.manual_seed(0)
        net = build_model(family, num_classes=data.num_classes, in_channels=data.channels,
                          image_size=data.image_size, **knobs)
        models[f"{family}({','.join(f'{k}={v}' for k, v in knobs.items())})"] = deployable(net, data.mean, data.std)
    return models


def study_front(path: str) -> dict[str, torch.nn.Module]:
    """Name -> model of a stored study's front, loaded as ``autokd export`` loads a trial."""
    from autokd.export import load_trial_model
    from autokd.record import trial_architecture
    from autokd.search.retime import front_members
    from autokd.search.weights import trial_weights
    from autokd.studies import open_existing

    cfg, study = open_existing(path, None, "report")
    return {f"trial {t.number} {trial_architecture(t)}": load_trial_model(trial_weights(cfg, study, t.number)[1])[0]
            for t in front_members(study)}


def busy(seconds: float) -> None:
    """One thread of compute for ``seconds`` (a trial's training between two timings)."""
    a = torch.rand(256, 256)
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        a = torch.tanh(a @ a)


def per_trial_pass(models: dict[str, torch.nn.Module], example: torch.Tensor, settings: LatencySettings,
                   gap: float, rng: random.Random) -> dict[str, float]:
    """Each model timed alone, as a trial times it, in a shuffled order, ``gap`` s of compute before each."""
    names = list(models)
    rng.shuffle(names)
    figures = {}
    for name in names:
        busy(gap)
        figures[name] = deployed_latency(models[name], example, settings)["latency_ms"]
    return figures


def interleaved_pass(models: dict[str, torch.nn.Module], example: torch.Tensor, settings: LatencySettings,
                     rounds: int, gap: float, seed: int) -> dict[str, float]:
    """All models re-timed together, as ``autokd.search.retime`` does; median over the rounds."""
    busy(gap)
    with member_timers(list(models.values()), [example] * len(models), settings, rounds) as timers:
        figures = interleaved_rounds([t.time for t in timers], rounds, seed=seed)
    return {name: statistics.median(ms) for name, ms in zip(models, figures)}


def summary(passes: list[dict[str, float]], names: list[str]) -> dict:
    """Max/min of each model across the passes, and Kendall tau between every two passes."""
    ratio = {n: max(p[n] for p in passes) / min(p[n] for p in passes) for n in names}
    taus = [kendall_tau([a[n] for n in names], [b[n] for n in names]) for a, b in itertools.combinations(passes, 2)]
    return {"max_over_min": {n: round(r, 3) for n, r in ratio.items()},
            "max_over_min_median": round(statistics.median(ratio.values()), 3),
            "max_over_min_worst": round(max(ratio.values()), 3),
            "kendall_tau_pairs": [round(t, 3) for t in taus], "kendall_tau_min": round(min(taus), 3),
            "kendall_tau_mean": round(statistics.mean(taus), 3),
            "figures_ms": [{n: round(p[n], 6) for n in names} for p in passes]}


def compare(models: dict[str, torch.nn.Module], example: torch.Tensor, args: argparse.Namespace) -> dict:
    """Per-trial passes and interleaved re-timings of ``models``, alternating, and their summaries."""
    defaults = StudyConfig()
    settings = LatencySettings(backend=defaults.latency_backend, threads=defaults.latency_threads,
                               runs=defaults.latency_runs, min_seconds=defaults.latency_min_seconds)
    load_before, started, rng = os.getloadavg(), time.time(), random.Random(0)
    per_trial, interleaved = [], []
    for repeat in range(args.repeats):
        per_trial.append(per_trial_pass(models, example, settings, args.gap, rng))
        interleaved.append(interleaved_pass(models, example, settings, args.rounds, args.gap, seed=repeat))
    names = list(models)
    result = {"models": {n: count_params(m) for n, m in models.items()}, "backend": settings.backend,
              "threads": settings.threads, "batch": settings.batch, "runs": settings.runs,
              "min_seconds": settings.min_seconds, "seconds": round(time.time() - started, 1),
              "load_average_before": [round(x, 2) for x in load_before],
              "load_average_after": [round(x, 2) for x in os.getloadavg()],
              "per_trial": summary(per_trial, names), "interleaved": summary(interleaved, names)}
    result["target_interleaved_tau_at_least_0.9"] = result["interleaved"]["kendall_tau_min"] >= 0.9
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=StudyConfig().retime_rounds)
    parser.add_argument("--gap", type=float, default=1.0, help="seconds of compute before each timing")
    parser.add_argument("--sets", default=",".join(SETS), help=f"which of {', '.join(SETS)} to time")
    parser.add_argument("--study", default=None, help="a stored study (YAML, folder or name): time its front instead")
    args = parser.parse_args()
    sources = {args.study: study_front(args.study)} if args.study else \
        {name: demo_models(SETS[name]) for name in args.sets.split(",")}
    example = torch.rand(1, *_input_shape(args.study), generator=torch.Generator().manual_seed(0))
    payload = {"commit": _commit(), "rounds": args.rounds, "repeats": args.repeats, "gap_seconds": args.gap,
               "sets": {name: compare({n: m.cpu().eval() for n, m in models.items()}, example, args)
                        for name, models in sources.items()}}
    path = write_result("latency_retime", payload, torch.device("cpu"))
    for name, result in payload["sets"].items():
        for way in ("per_trial", "interleaved"):
            s = result[way]
            print(f"{name:<14} {way:<12} max/min median {s['max_over_min_median']}x worst {s['max_over_min_worst']}x; "
                  f"Kendall tau between repeats {s['kendall_tau_pairs']}")
        print(f"{name:<14} load {result['load_average_before']} -> {result['load_average_after']}")
    print(path)


def _input_shape(study: str | None) -> tuple[int, int, int]:
    if study is None:
        data = load_dataset("digits")
        return data.channels, data.image_size, data.image_size
    from autokd.studies import resolve_study
    from autokd.context import load_study_data

    data = load_study_data(resolve_study(study, "report"), show_progress=False)
    return data.channels, data.image_size, data.image_size


def _commit() -> str:
    repo = Path(__file__).resolve().parents[1]
    done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=repo, capture_output=True, text=True)
    return done.stdout.strip() or "unknown"


if __name__ == "__main__":
    main()
