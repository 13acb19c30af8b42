"""Clean failure everywhere: one line and exit 2 before any work, nothing left half-written, no Ray left running.

Fast tests drive the real CLI in-process (``CliRunner``) with inputs that fail before training;
PostgreSQL tests use a fresh database each; the slow one kills a real Ray worker, then the real
driver, and watches the processes.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
import torch
from ray_support import cmdline, descendants, kill_tree, start_search, wait_for, write_study
from typer.testing import CliRunner

from autokd.checkpoint import save_state
from autokd.cli import app
from autokd.errors import AutokdError
from autokd.export import export_model
from autokd.search import ray_reaper
from autokd.search.ray_runtime import _check_reachable
from tests.tiny import write_tiny_study

runner = CliRunner()


def one_error_line(result) -> str:
    """The CLI exited 2 with exactly one line, ``error: ...; fix: ...``, and no traceback."""
    lines = [line for line in result.output.strip().splitlines() if line.strip()]
    assert result.exit_code == 2, result.output
    assert len(lines) == 1 and lines[0].startswith("error: ") and "; fix: " in lines[0], result.output
    assert "Traceback" not in result.output
    return lines[0]


def tree(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


def _tmpfs(mount: Path, options: str):
    """Mount a tiny tmpfs at ``mount`` for one test; skips where mounting is not allowed."""
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()[:120]}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], capture_output=True)


@pytest.fixture
def small_disk(tmp_path):
    """A 64 KiB disk: full after a few writes."""
    yield from _tmpfs(tmp_path / "small", "size=64k")


@pytest.fixture
def read_only_dir(tmp_path):
    """A read-only mount: not writable even by root, for whom permission bits mean nothing."""
    yield from _tmpfs(tmp_path / "ro", "ro,size=64k")


# --------------------------------------------------------------------------- output and export paths


@pytest.mark.parametrize("case", ["is_a_file", "under_a_file", "read_only"])
def test_a_bad_output_folder_is_one_line_before_any_work(tmp_path, case, request):
    study = write_tiny_study(tmp_path / "study")
    if case == "is_a_file":
        output = tmp_path / "taken"
        output.write_text("not a folder")
    elif case == "under_a_file":
        (tmp_path / "taken").write_text("not a folder")
        output = tmp_path / "taken" / "out"
    else:
        output = request.getfixturevalue("read_only_dir") / "out"
    before = tree(tmp_path)
    line = one_error_line(runner.invoke(app, ["search", str(study), "--output", str(output)]))
    assert "--output" in line
    assert tree(tmp_path) == before  # no output folder, no study, no teacher


def test_export_out_that_is_a_folder_or_unwritable_is_refused_before_loading_anything(tmp_path, read_only_dir):
    study = write_tiny_study(tmp_path / "study")  # never searched: the check comes before the study is read
    folder = tmp_path / "exports"
    folder.mkdir()
    before = tree(tmp_path)
    line = one_error_line(runner.invoke(app, ["export", str(study), "--trial", "0", "--out", str(folder)]))
    assert "is a folder" in line
    line = one_error_line(runner.invoke(app, ["export", str(study), "--trial", "0", "--out",
                                              str(read_only_dir / "m.onnx")]))
    assert "not writable" in line
    assert tree(tmp_path) == before


def test_an_export_that_fills_the_disk_leaves_the_old_file_and_no_temporary(small_disk):
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    target = small_disk / "model.ts"
    target.write_bytes(b"previous export")
    model_too_big = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 4000))  # ~1 MB of weights
    with pytest.raises(AutokdError, match="cannot write"):
        export_model(model_too_big, "torchscript", target, torch.zeros(1, 1, 8, 8))
    assert target.read_bytes() == b"previous export" and os.listdir(small_disk) == ["model.ts"]
    target.unlink()
    export_model(model, "torchscript", target, torch.zeros(1, 1, 8, 8))  # a model that fits is written whole
    assert torch.jit.load(str(target))(torch.zeros(2, 1, 8, 8)).shape == (2, 10)


def test_a_checkpoint_write_that_fills_the_disk_leaves_no_temporary(small_disk):
    target = small_disk / "epoch.pt"
    save_state(target, {"epoch": 1})
    with pytest.raises(OSError):
        save_state(target, {"epoch": 2, "weights": torch.zeros(100_000)})  # 400 kB on a 64 kB disk
    assert os.listdir(small_disk) == ["epoch.pt"] and torch.load(target)["epoch"] == 1


# --------------------------------------------------------------------------- report and export never create a schema


@pytest.mark.postgres
@pytest.mark.parametrize("command", [["report"], ["export", "--trial", "0"]])
def test_report_and_export_on_an_empty_database_create_nothing(tmp_path, postgres_url, command):
    import sqlalchemy

    line = one_error_line(runner.invoke(app, [*command, "--storage", postgres_url]))
    assert "no study named 'digits-default'" in line
    engine = sqlalchemy.create_engine(postgres_url)
    try:
        with engine.connect() as conn:
            assert sqlalchemy.inspect(conn).get_table_names() == []  # Optuna's schema was not created
    finally:
        engine.dispose()


def test_report_on_a_missing_sqlite_file_creates_no_file(tmp_path):
    url = f"sqlite:///{tmp_path / 'nothing.db'}"
    line = one_error_line(runner.invoke(app, ["report", "--storage", url]))
    assert "no study named" in line and list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- PostgreSQL from empty


def _open_at(url: str, barrier, results) -> None:
    from autokd.config import StudyConfig
    from autokd.search.study import open_study

    try:
        cfg = StudyConfig(name="together", storage=url)
        barrier.wait(timeout=120)  # every process has imported autokd: all open at once
        open_study(cfg, heartbeat=False)
        results.put("ok")
    except BaseException as err:  # what a driver would have printed
        results.put(f"{type(err).__name__}: {err}")


@pytest.mark.postgres
def test_drivers_starting_together_on_a_fresh_postgres_database_all_open_the_study(postgres_url):
    """Four processes create the schema and the study at the same instant (the race was ``pg_type_typname_nsp_index``)."""
    spawn = multiprocessing.get_context("spawn")
    results, barrier = spawn.Queue(), spawn.Barrier(4)
    drivers = [spawn.Process(target=_open_at, args=(postgres_url, barrier, results)) for _ in range(4)]
    for proc in drivers:
        proc.start()
    outcomes = [results.get(timeout=180) for _ in drivers]
    for proc in drivers:
        proc.join(timeout=30)
    assert outcomes == ["ok"] * 4, outcomes


@pytest.mark.postgres
def test_an_unreachable_database_keeps_its_one_line():
    line = one_error_line(runner.invoke(app, ["report", "--storage", "postgresql+psycopg://postgres@127.0.0.1:1/x"]))
    assert line.startswith("error: cannot open storage postgresql+psycopg://postgres@127.0.0.1:1/x: ")
    assert line.endswith("fix: start the database server, or correct the host and port in the URL in --storage")


# --------------------------------------------------------------------------- Ray: resources and addresses


@pytest.mark.parametrize("flags, names", [(["--gpus-per-trial", "64"], "--gpus-per-trial"),
                                          (["--cpus-per-trial", "4096"], "--cpus-per-trial")])
def test_more_gpus_or_cpus_per_trial_than_the_machine_has_is_one_line_before_the_teacher(tmp_path, flags, names):
    study = write_study(tmp_path)  # its teacher would train first: the check comes before
    before = tree(tmp_path)
    line = one_error_line(runner.invoke(app, ["search", str(study), *flags]))
    assert names in line and "this machine has" in line
    assert tree(tmp_path) == before


def test_a_ray_client_address_is_checked_before_the_teacher_trains(tmp_path):
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    study = write_study(tmp_path)
    before = tree(tmp_path)
    line = one_error_line(runner.invoke(app, ["search", str(study), "--address", f"ray://127.0.0.1:{port}"]))
    assert "Ray Client" in line  # not installed (ray[client]), or installed and nobody answers
    assert tree(tmp_path) == before
    with pytest.raises(AutokdError, match="cannot reach the Ray Client server at ray://127.0.0.1"):
        _check_reachable(f"ray://127.0.0.1:{port}", f"ray://127.0.0.1:{port}", "the Ray Client server", "start it")


def test_an_unreachable_cluster_address_is_one_line(tmp_path):
    study = write_study(tmp_path)
    line = one_error_line(runner.invoke(app, ["search", str(study), "--address", "127.0.0.1:1"]))
    assert "cannot reach the Ray cluster at 127.0.0.1:1" in line


# --------------------------------------------------------------------------- Ray: worker deaths and driver deaths


def _alive(processes: dict[int, str | None]) -> list[int]:
    return [pid for pid, ticks in processes.items() if ticks is not None and ray_reaper.start_ticks(pid) == ticks]


@pytest.mark.slow
def test_a_worker_death_is_one_line_and_a_sigkilled_driver_leaves_no_ray_process(tmp_path, tiny_teacher):
    study = write_study(tmp_path, n_trials=1, epochs=60, batch_size=32, max_concurrent=1, teacher=tiny_teacher)
    log = tmp_path / "driver.log"
    proc = start_search(study, log=log)
    checkpoint = tmp_path / "out" / "trials" / "00000" / "epoch" / "epoch.pt"
    session: dict[int, str | None] = {}
    try:
        wait_for(checkpoint.is_file, 150, "the first epoch checkpoint", proc)
        workers = [pid for pid in descendants(proc.pid) if "ImplicitFunc" in cmdline(pid)]
        assert workers, [cmdline(p) for p in descendants(proc.pid)]
        for pid in workers:
            os.kill(pid, signal.SIGKILL)
        wait_for(lambda: "retried from its last epoch checkpoint" in log.read_text(), 120, "the worker's line", proc)
        wait_for(lambda: any("ImplicitFunc" in cmdline(p) for p in descendants(proc.pid) if p not in workers),
                 120, "the retried trial's new worker", proc)
        # Every process of this Ray session: GCS, raylet, agents, workers (and the reaper itself).
        session = {pid: ray_reaper.start_ticks(pid) for pid in descendants(proc.pid)}
        os.kill(proc.pid, signal.SIGKILL)  # the driver alone
        proc.wait(timeout=10)
        deadline = time.monotonic() + 10
        while _alive(session) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not _alive(session), [cmdline(p) for p in _alive(session)]
    finally:
        if proc.poll() is None:
            kill_tree(proc)
        for pid in _alive(session):  # clean up even when the assertion failed
            os.kill(pid, signal.SIGKILL)
    text = log.read_text()
    assert text.count("worker died") == 1, text[-3000:]  # rich wraps the line at the console's width
    died = " ".join(text.split("trial   0 its worker died", 1)[1].split())
    assert died.startswith("; retried from its last epoch checkpoint (1 of 2 retries) (log: "), text[-3000:]
    assert "trials/00000/trial.log" in died.replace(" ", ""), text[-3000:]
    for noise in ("Traceback", "ActorDiedError", "(raylet)", "A worker died or was killed"):
        assert noise not in text, text[-3000:]
    trial_log = (tmp_path / "out" / "trials" / "00000" / "trial.log").read_text()
    assert "worker failed: ActorDiedError" in trial_log
    assert "ActorDiedError" in (tmp_path / "out" / "ray.log").read_text()  # Tune's traceback, kept
