"""The spread of every figure the suite asserts after training, over seeds and thread counts.

Runs the chosen tests once per (AUTOKD_TEST_SEED, AUTOKD_TEST_THREADS) with AUTOKD_TEST_FIGURES
set (tests/conftest.py), then prints one Markdown row per asserted figure: min / median / max and
the runs. Failing runs are kept: their figures are the point. Procedure and results: docs/testing.md.

    .venv/bin/python -m bench.test_margins --seeds 0 1 2 3 4 5 --threads 1 2 -- tests/test_compress.py -m "not slow"
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path


def sweep(runs: list[tuple[int, int | None]], pytest_args: list[str], figures: Path) -> None:
    for seed, threads in runs:
        env = {**os.environ, "AUTOKD_TEST_SEED": str(seed), "AUTOKD_TEST_FIGURES": str(figures)}
        if threads:
            env["AUTOKD_TEST_THREADS"] = str(threads)
        done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *pytest_args], env=env,
                              capture_output=True, text=True)
        print(f"seed {seed} threads {threads or 'default'}: {done.stdout.strip().splitlines()[-1:]}", file=sys.stderr)


def table(figures: Path) -> str:
    rows: dict[tuple[str, str], list[dict]] = {}
    for line in figures.read_text().splitlines():
        row = json.loads(line)
        rows.setdefault((row["test"], row["figure"]), []).append(row)
    out = ["| test | figure | min | median | max | runs (seed/threads) |", "|---|---|---|---|---|---|"]
    for (test, name), seen in sorted(rows.items()):
        values = [r["value"] for r in seen]
        runs = " ".join(f"{r['seed']}/{r['threads']}" for r in seen)
        out.append(f"| {test} | {name} | {min(values):.4f} | {statistics.median(values):.4f} | {max(values):.4f} "
                   f"| {runs} |")
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4, 5],
                        help="AUTOKD_TEST_SEED values, each at the default thread count")
    parser.add_argument("--threads", type=int, nargs="*", default=[1, 2],
                        help="AUTOKD_TEST_THREADS values, each at seed 0")
    parser.add_argument("--figures", type=Path, help="JSON-lines file to append to (default: a temporary one)")
    parser.add_argument("--table-only", action="store_true", help="only summarise --figures")
    parser.add_argument("pytest_args", nargs="*", default=["tests/test_compress.py", "-m", "not slow"])
    args = parser.parse_args()
    figures = args.figures or Path(tempfile.mkstemp(suffix=".jsonl")[1])
    if not args.table_only:
        sweep([(s, None) for s in args.seeds] + [(0, t) for t in args.threads], args.pytest_args, figures)
    print(table(figures))


if __name__ == "__main__":
    main()
