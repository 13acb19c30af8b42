"""The demo's search beside other work on the host: Ray's workers at nice 15 (Ray's default) or 0.

Starts ``--hogs`` busy-looping processes at normal priority (another job on a shared machine), then
runs ``autokd search`` with no arguments in a fresh folder with this checkout and, with
``--before PATH``, an older one, alternating; each search is stopped after ``--timeout`` seconds
(recorded as not finished). A private Ray starts its workers at nice 15 unless told otherwise, so
beside work at nice 0 the trials get a few percent of a core; autokd now starts them at nice 0.

    python -m bench.ray_niceness --before OLD_CHECKOUT [--hogs 2] [--repeats 1] [--timeout 300]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from bench.common import write_result
from bench.latency_isolation import repo_commit

HOG = "while True: pass"


def timed_search(repo: Path, timeout: float) -> dict:
    env = {**os.environ, "PYTHONPATH": str(repo), "COLUMNS": "200"}
    env.pop("RAY_ADDRESS", None)
    with tempfile.TemporaryDirectory(prefix="autokd-nice-") as folder:
        started = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-m", "autokd", "search"], cwd=folder, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            log, _ = proc.communicate(timeout=timeout)
            finished = proc.returncode == 0
        except subprocess.TimeoutExpired:
            proc.terminate()  # Ctrl-C's path: the driver stops Ray and its workers
            try:
                log, _ = proc.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                log, _ = proc.communicate()
            finished = False
        wall = time.perf_counter() - started
    line = next((l for l in log.splitlines() if l.startswith("search wall time")), None)
    done = sum(1 for l in log.splitlines() if l.lstrip().startswith("trial "))
    return {"code": str(repo), "commit": repo_commit(repo), "finished": finished,
            "wall_s": round(wall, 2), "search_wall_line": line, "trials_finished": done}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", default=None, help="An older checkout to run alternately.")
    parser.add_argument("--hogs", type=int, default=2, help="Busy-looping processes beside the search.")
    parser.add_argument("--repeats", type=int, default=1, help="Runs of each checkout.")
    parser.add_argument("--timeout", type=float, default=300.0, help="Seconds before a search is stopped.")
    parser.add_argument("--out", default="ray_niceness", help="Result name under bench/results/.")
    args = parser.parse_args()
    here = Path(__file__).resolve().parents[1]
    checkouts = {"after": here, **({"before": Path(args.before).resolve()} if args.before else {})}
    hogs = [subprocess.Popen([sys.executable, "-c", HOG]) for _ in range(args.hogs)]
    runs: dict[str, list[dict]] = {name: [] for name in checkouts}
    try:
        for _ in range(args.repeats):
            for name, repo in checkouts.items():
                runs[name].append(timed_search(repo, args.timeout))
                print(name, runs[name][-1], flush=True)
    finally:
        for hog in hogs:
            hog.kill()
    payload = {"what": "autokd search (no arguments) beside busy-looping processes at nice 0", "hogs": args.hogs,
               "timeout_s": args.timeout, "load_average_end": os.getloadavg(), "runs": runs}
    print(write_result(args.out, payload, torch.device("cpu")))


if __name__ == "__main__":
    main()
