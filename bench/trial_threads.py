"""Torch threads per trial: one trial's training time alone and beside a second one, at 1 and 2 threads.

The two-trials-at-once case is what a study at ``max_concurrent: 2`` (or two studies side by side)
does to a host: with 2 torch (OpenMP) threads per trial on a 2-core machine there are 4 busy
threads for 2 cores. Each measurement trains the same cnn5 student on digits (labels only, the
digits training split, ``--epochs`` epochs, batch 64) in its own spawned process, on ``--threads``
torch threads, with OpenMP's ``OMP_WAIT_POLICY`` ``ACTIVE`` (threads spin while they wait, as
libgomp does by default for a while) or ``PASSIVE`` (they sleep; autokd's default since issue
25); ``pair`` starts two such processes together and records each one's seconds.
Settings are interleaved round-robin (``--repeats`` rounds), so drift of a shared host hits each
alike; the JSON keeps every figure and the median per setting, with the load average.

    python -m bench.trial_threads                 # about a minute on an idle 2-core host
    python -m bench.trial_threads --repeats 5 --epochs 10
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import time
from pathlib import Path

from bench.common import write_result
from bench.latency_isolation import repo_commit

SPAWN = mp.get_context("spawn")


def train_once(threads: int, epochs: int, start, result) -> None:
    """One training run in this (spawned) process; its seconds go to ``result`` once ``start`` is set."""
    import torch

    from autokd.config import DistillSpec, TrainSpec
    from autokd.data import load_dataset
    from autokd.models import build_model
    from autokd.train import AugmentPolicy, train_model

    torch.set_num_threads(threads)
    data = load_dataset("digits", show_progress=False)
    torch.manual_seed(0)
    model = build_model("cnn5", num_classes=10, in_channels=1, image_size=8, width=0.5, hidden=64)
    start.wait(120)
    began = time.perf_counter()
    train_model(model, data.train_images, data.train_labels, train=TrainSpec(epochs=epochs, batch_size=64, lr=0.05),
                distill=DistillSpec(loss="none"), policy=AugmentPolicy(crop_pad=1, flip=False, seed=0))
    result.value = time.perf_counter() - began


def run(threads: int, processes: int, epochs: int, wait_policy: str) -> list[float]:
    """``processes`` trainings at once on ``threads`` threads each (OpenMP ``wait_policy``); each one's seconds."""
    start = SPAWN.Event()
    results = [SPAWN.Value("d", -1.0) for _ in range(processes)]
    procs = [SPAWN.Process(target=train_once, args=(threads, epochs, start, r)) for r in results]
    os.environ["OMP_WAIT_POLICY"] = wait_policy  # read by each child's OpenMP when torch loads it
    for p in procs:
        p.start()
    time.sleep(3.0)  # imports and data loading finish before the clock starts
    start.set()
    for p in procs:
        p.join(600)
    return [round(r.value, 3) for r in results]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    load_before = os.getloadavg()
    # one thread never waits for another: the wait policy matters from 2 threads on
    settings = [(mode, t, policy) for mode in ("alone", "pair") for t in args.threads
                for policy in (("ACTIVE", "PASSIVE") if t > 1 else ("PASSIVE",))]
    figures: dict[str, list[float]] = {f"{m}-{t}thr-{p.lower()}": [] for m, t, p in settings}
    for round_ in range(args.repeats):
        for mode, threads, policy in settings:
            seconds = run(threads, 1 if mode == "alone" else 2, args.epochs, policy)
            figures[f"{mode}-{threads}thr-{policy.lower()}"].extend(seconds)
            print(f"round {round_}: {mode} at {threads} thread(s), OMP_WAIT_POLICY={policy}: {seconds} s", flush=True)
    medians = {k: statistics.median(v) for k, v in figures.items()}
    path = write_result("trial_threads", {
        "what": __doc__.splitlines()[0], "commit": repo_commit(Path(__file__).resolve().parents[1]),
        "cpus": len(os.sched_getaffinity(0)), "epochs": args.epochs,
        "repeats": args.repeats, "student": "cnn5(width=0.5, hidden=64), digits, labels only, batch 64",
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "seconds": figures, "median_seconds": medians}, device=__import__("torch").device("cpu"))
    print(f"medians (s): {medians}; wrote {path}")


if __name__ == "__main__":
    main()
