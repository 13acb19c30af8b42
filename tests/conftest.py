"""Shared pytest fixtures."""

from __future__ import annotations

import os
import tarfile
from pathlib import Path

import pytest

import autokd  # noqa: F401  before any test module loads torch: see the note below
from tests.tiny import TEST_SEED

# `import autokd` sets OMP_WAIT_POLICY=PASSIVE unless it is set, as the CLI and its Ray workers have it; it
# only takes effect before torch loads OpenMP. Test modules import torch first, so without this every
# test that trains in the pytest process ran with spinning OpenMP threads: on this busy 2-core host
# test_compress.py -m "not slow" took 88-240 s that way and 23-32 s passive (docs/testing.md). Waiting
# passively changes no figure: the threads and their summation order stay the same.

# --------------------------------------------------------------------------- other processors
# Training is deterministic per processor, not across processors: another CPU rounds float sums
# in another order and trains other networks. AUTOKD_TEST_SEED (tests/tiny.py) and
# AUTOKD_TEST_THREADS perturb the runs the same way; AUTOKD_TEST_FIGURES=FILE records every
# figure a test asserts after training. docs/testing.md: the procedure and the measured margins.


def pytest_configure(config):
    if os.environ.get("AUTOKD_TEST_THREADS"):
        import torch

        torch.set_num_threads(int(os.environ["AUTOKD_TEST_THREADS"]))


def pytest_report_header(config):
    if TEST_SEED or os.environ.get("AUTOKD_TEST_THREADS"):
        return f"autokd: AUTOKD_TEST_SEED={TEST_SEED} AUTOKD_TEST_THREADS={os.environ.get('AUTOKD_TEST_THREADS', '-')}"


@pytest.fixture
def figure(request):
    """``figure(name, value)`` returns ``value``; with ``AUTOKD_TEST_FIGURES=FILE`` it also appends it to FILE.

    Wrap each figure an assertion compares after training, so a seed or thread sweep shows its spread.
    """
    import json

    import torch

    def record(name: str, value):
        if os.environ.get("AUTOKD_TEST_FIGURES"):
            row = {"test": request.node.nodeid, "figure": name, "value": float(value), "seed": TEST_SEED,
                   "threads": torch.get_num_threads()}
            with open(os.environ["AUTOKD_TEST_FIGURES"], "a") as out:
                out.write(json.dumps(row) + "\n")
        return value

    return record


def _cifar_tarball() -> Path | None:
    candidates = []
    if os.environ.get("AUTOKD_CIFAR_TAR"):
        candidates.append(Path(os.environ["AUTOKD_CIFAR_TAR"]))
    candidates.append(Path(__file__).resolve().parents[2] / "shared/data/cifar10-jpg.tar.gz")
    candidates.append(Path("/work/shared/data/cifar10-jpg.tar.gz"))
    return next((p for p in candidates if p.is_file()), None)


@pytest.fixture(scope="session")
def cifar_subset_dir(tmp_path_factory) -> Path:
    """A small real CIFAR-10 image folder: train/<class>/ (20 each) and test/<class>/ (10 each).

    Streams the gzip tarball once per session and writes only the first images of each class;
    test images sit at the end of the archive, so the whole stream is read (about 1 s).
    """
    tarball = _cifar_tarball()
    if tarball is None:
        pytest.skip("CIFAR-10 JPEG tarball not found (set AUTOKD_CIFAR_TAR)")
    wanted = {"train": 20, "test": 10}
    num_classes = 10
    dest = tmp_path_factory.mktemp("cifar10-subset")
    counts: dict[tuple[str, str], int] = {}
    with tarfile.open(tarball, "r|gz") as tf:
        for member in tf:
            parts = Path(member.name).parts
            if not member.isfile() or len(parts) != 3 or parts[0] not in wanted:
                continue
            split, cls, fname = parts
            if counts.get((split, cls), 0) >= wanted[split]:
                continue
            target = dest / split / cls / fname
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(tf.extractfile(member).read())
            counts[(split, cls)] = counts.get((split, cls), 0) + 1
            full = [k for k, n in counts.items() if n >= wanted[k[0]]]
            if len(full) == len(wanted) * num_classes:
                break
    return dest


# --------------------------------------------------------------------------- PostgreSQL

POSTGRES_ADMIN = os.environ.get("AUTOKD_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")


@pytest.fixture
def postgres_url() -> str:
    """A fresh PostgreSQL database for one test (``postgresql+psycopg://`` URL), dropped afterwards.

    Skips when no server answers at ``AUTOKD_TEST_POSTGRES`` (default 127.0.0.1:5432, trust auth).
    """
    import uuid

    psycopg = pytest.importorskip("psycopg")
    try:
        admin = psycopg.connect(POSTGRES_ADMIN, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as err:
        pytest.skip(f"PostgreSQL not reachable at {POSTGRES_ADMIN}: {str(err).splitlines()[0]}")
    name = f"autokd_test_{uuid.uuid4().hex[:12]}"
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        base = POSTGRES_ADMIN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1)
        try:
            yield f"{base}/{name}"
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def tiny_teacher(tmp_path_factory) -> Path:
    """A 1-epoch cnn5 (width 0.25) digits teacher checkpoint, trained once per test session."""
    import torch

    from autokd.checkpoint import save_checkpoint
    from autokd.config import StudyConfig
    from autokd.teacher import train_teacher
    from autokd.context import augment_policy, load_study_data

    cfg = StudyConfig(dataset="digits", seed=TEST_SEED)
    data = load_study_data(cfg, show_progress=False)
    net, acc = train_teacher(data, family="cnn5", knobs={"width": 0.25}, epochs=1, lr=0.1, batch_size=128,
                             policy=augment_policy(cfg, data), device=torch.device("cpu"), seed=TEST_SEED)
    path = tmp_path_factory.mktemp("teacher") / "teacher.pt"
    save_checkpoint(path, net, family="cnn5", knobs=net.knobs, num_classes=data.num_classes,
                    in_channels=data.channels, image_size=data.image_size, mean=data.mean, std=data.std,
                    accuracy=acc, dataset="digits")
    return path
