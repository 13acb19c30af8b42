"""Shared by the benchmark scripts: where CIFAR-10 comes from and how results are written.

Every result file records the device, CPU model, GPU name, library versions and date next to the
numbers, so a figure is never quoted without where it was measured.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import tarfile
from pathlib import Path

import torch

from autokd.measure import environment

RESULTS = Path(__file__).resolve().parent / "results"
TARBALLS = [Path(os.environ["AUTOKD_CIFAR_TAR"])] if os.environ.get("AUTOKD_CIFAR_TAR") else []
TARBALLS += [Path(__file__).resolve().parents[2] / "shared/data/cifar10-jpg.tar.gz",
             Path(__file__).resolve().parents[1] / ".devdata/cifar10-jpg.tar.gz"]


def cifar10_folder(target: Path = Path("/tmp/autokd-cifar10")) -> Path:
    """The JPEG CIFAR-10 as an image folder (extracted once from the shared tarball)."""
    if (target / "train").is_dir() and (target / "test").is_dir():
        return target
    tarball = next((t for t in TARBALLS if t.is_file()), None)
    if tarball is None:
        raise SystemExit("CIFAR-10 tarball not found: set AUTOKD_CIFAR_TAR")
    target.mkdir(parents=True, exist_ok=True)
    with tarfile.open(tarball) as tar:
        tar.extractall(target, filter="data")
    return target


def cifar10_subset(dest: Path, per_class: dict[str, int]) -> Path:
    """The first ``per_class[split]`` images of each class of the CIFAR-10 JPEG tarball, streamed into the
    image folder ``dest`` (``train/<class>/``, ``test/<class>/``)."""
    tarball = next((t for t in TARBALLS if t.is_file()), None)
    if tarball is None:
        raise SystemExit("CIFAR-10 tarball not found: set AUTOKD_CIFAR_TAR")
    counts: dict[tuple[str, str], int] = {}
    with tarfile.open(tarball, "r|gz") as tar:
        for member in tar:
            parts = Path(member.name).parts
            if not member.isfile() or len(parts) != 3 or parts[0] not in per_class:
                continue
            split, cls, name = parts
            if counts.get((split, cls), 0) < per_class[split]:
                (dest / split / cls).mkdir(parents=True, exist_ok=True)
                (dest / split / cls / name).write_bytes(tar.extractfile(member).read())
                counts[(split, cls)] = counts.get((split, cls), 0) + 1
    return dest


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def write_result(name: str, payload: dict, device: torch.device) -> Path:
    """Write ``bench/results/{name}.json`` with the measuring environment attached."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    record = {
        "benchmark": name,
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "device": str(device),
        "cpu_threads": torch.get_num_threads(),
        "platform": platform.platform(),
        **environment(device),
        **payload,
    }
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(record, indent=2))
    return path


def merge_labelled_run(path: Path, label: str, record: dict, header: dict, figure: str) -> dict:
    """Add (or replace) the run ``label`` in the results file ``path``, keeping the other labels' runs;
    ``header`` goes on top, and ``figure`` (a key of every run) is summarised across runs."""
    data = json.loads(path.read_text()) if path.exists() else {}
    data.update(header)
    data.setdefault("runs", {})[label] = record
    data[figure] = {k: v[figure] for k, v in data["runs"].items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, default=str))
    return data


def autokd_cli(repo: Path, cwd: Path, *args: str, timeout: float = 900) -> tuple[float, str]:
    """Run ``autokd ARGS`` with ``repo``'s code first on the path (an older checkout for "before"
    figures); returns (wall seconds, output). A private Ray, as on a user's first run."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(repo), *filter(None, [os.environ.get("PYTHONPATH")])]),
           "COLUMNS": "200"}
    env.pop("RAY_ADDRESS", None)
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "autokd", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)
    log = proc.stdout + proc.stderr
    if proc.returncode != 0:
        raise SystemExit(f"autokd {' '.join(args)} exited {proc.returncode}:\n{log[-4000:]}")
    return time.perf_counter() - started, log
