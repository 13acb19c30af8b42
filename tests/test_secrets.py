"""No secret written anywhere: a storage password never reaches a file, the console or the process list.

End-to-end tests run real searches on the PostgreSQL at 127.0.0.1:5432 with a password in the URL
(trust authentication ignores it, so it stands in for a real secret), then read every file the
search wrote, its output, and the command lines of its processes, looking for the password.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from ray_support import cmdline, descendants, wait_for, write_study

from autokd.argv import ARGV_PASSWORD
from autokd.search.snapshot import write_snapshot
from autokd.config import StudyConfig, load_study_config
from autokd.search import ray_reaper
from autokd.search.storage import open_storage, redact_url, stored_study_names, strip_password, with_env_password
from tests.tiny import write_tiny_study

SECRET = "Pw-7f3kQz9"
pytestmark = pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed to be used")


def with_password(url: str, password: str = SECRET) -> str:
    return url.replace("postgresql+psycopg://postgres@", f"postgresql+psycopg://postgres:{password}@", 1)


def files_holding(secret: str, *roots: Path) -> list[str]:
    """Every regular file under ``roots`` whose name or bytes hold ``secret`` (like ``grep -r``)."""
    found = []
    for root in roots:
        for folder, _, names in os.walk(root):
            for name in names:
                path = Path(folder) / name
                if secret in str(path):
                    found.append(str(path))
                elif path.is_file() and not path.is_symlink():
                    try:
                        if secret.encode() in path.read_bytes():
                            found.append(str(path))
                    except OSError:
                        pass
    return found


def cli(*args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "COLUMNS": "200", **(env or {})}
    for key in ("AUTOKD_STORAGE", "PGPASSWORD"):
        if env is None or key not in env:
            full_env.pop(key, None)
    return subprocess.run([sys.executable, "-m", "autokd", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=full_env)


# --------------------------------------------------------------------------- URLs


def test_urls_are_printed_redacted_and_written_without_their_password():
    url = f"postgresql+psycopg://me:{SECRET}@db.example:5433/studies"
    assert redact_url(url) == "postgresql+psycopg://me:***@db.example:5433/studies"
    assert strip_password(url) == "postgresql+psycopg://me@db.example:5433/studies"
    query = f"postgresql+psycopg://me@db.example/studies?password={SECRET}&sslmode=require"
    assert SECRET not in redact_url(query) and "password=***" in redact_url(query)
    assert strip_password(query) == "postgresql+psycopg://me@db.example/studies?sslmode=require"
    assert strip_password("sqlite:////tmp/x/study.db") == "sqlite:////tmp/x/study.db"


def test_autokd_storage_gives_its_password_only_to_the_same_database(monkeypatch):
    monkeypatch.setenv("AUTOKD_STORAGE", f"postgresql://me:{SECRET}@db.example:5432/studies")
    assert with_env_password("postgresql+psycopg://me@db.example/studies") == \
        f"postgresql+psycopg://me:{SECRET}@db.example/studies"
    for other in ("postgresql+psycopg://me@db.example/other", "postgresql+psycopg://you@db.example/studies",
                  "postgresql+psycopg://me@elsewhere/studies", "postgresql+psycopg://me:given@db.example/studies"):
        assert with_env_password(other) == other


def test_a_password_on_the_command_line_is_recognised_for_hiding():
    def hide(arg: str) -> str:
        return ARGV_PASSWORD.sub(lambda m: (m.group("head") or m.group("query")) + "***", arg)

    assert hide(f"postgresql+psycopg://me:{SECRET}@db/studies") == "postgresql+psycopg://me:***@db/studies"
    assert hide(f"--storage=postgresql://me:{SECRET}@db:5432/s") == "--storage=postgresql://me:***@db:5432/s"
    assert hide(f"postgresql://me@db/s?password={SECRET}") == "postgresql://me@db/s?password=***"
    for untouched in ("ray://10.0.0.1:10001", "postgresql+psycopg://me@db/studies", "sqlite:///runs/x.db"):
        assert hide(untouched) == untouched


def test_the_study_snapshot_holds_no_password(tmp_path):
    cfg = StudyConfig(name="snap", output=str(tmp_path), storage=f"postgresql+psycopg://me:{SECRET}@db/studies")
    path = write_snapshot(cfg)
    assert SECRET not in path.read_text() and list(tmp_path.iterdir()) == [path]  # no temporary left
    assert load_study_config(path).storage == "postgresql+psycopg://me@db/studies"


@pytest.mark.postgres
def test_a_snapshot_url_finds_its_password_in_autokd_storage(postgres_url, monkeypatch):
    monkeypatch.setenv("AUTOKD_STORAGE", with_password(postgres_url))
    storage = open_storage(postgres_url, heartbeat=False)  # the snapshot's URL, without the password
    try:
        assert storage.engine.url.password == SECRET  # AUTOKD_STORAGE supplied it to the connection
    finally:
        storage.engine.dispose()


# --------------------------------------------------------------------------- real searches


def _alive(processes: dict[int, str | None]) -> list[int]:
    return [pid for pid, ticks in processes.items() if ticks is not None and ray_reaper.start_ticks(pid) == ticks]


@pytest.mark.slow
@pytest.mark.postgres
def test_a_local_search_from_autokd_storage_writes_no_password_and_reruns_from_its_snapshot(
        tmp_path, postgres_url, tiny_teacher):
    study = write_tiny_study(tmp_path, n_trials=1, teacher={"checkpoint": str(tiny_teacher)})  # names no storage
    out = tmp_path / "tiny"
    first = cli("search", str(study), cwd=tmp_path, env={"AUTOKD_STORAGE": with_password(postgres_url)})
    assert first.returncode == 0, first.stdout + first.stderr
    assert stored_study_names(postgres_url) == ["tiny"]  # the study went to AUTOKD_STORAGE, not to SQLite
    assert not (out / "study.db").exists()
    assert load_study_config(out / "study.yaml").storage == postgres_url  # recorded, without the password
    # Re-run from the snapshot: the password comes from AUTOKD_STORAGE, or from libpq's PGPASSWORD.
    again = cli("search", str(out), "--n-trials", "2", cwd=tmp_path, env={"AUTOKD_STORAGE": with_password(postgres_url)})
    assert again.returncode == 0, again.stdout + again.stderr
    libpq = cli("report", str(out), cwd=tmp_path, env={"PGPASSWORD": SECRET})
    assert libpq.returncode == 0 and "Pareto front of 'tiny'" in libpq.stdout, libpq.stdout + libpq.stderr
    for run in (first, again, libpq):
        assert SECRET not in run.stdout + run.stderr
    assert files_holding(SECRET, tmp_path) == []


@pytest.mark.slow
@pytest.mark.postgres
def test_a_ray_search_with_a_password_in_storage_writes_it_nowhere_and_hides_it_from_ps(
        tmp_path, postgres_url, tiny_teacher):
    study = write_study(tmp_path, n_trials=1, epochs=3, max_concurrent=1, teacher=tiny_teacher)
    log = tmp_path / "driver.log"
    env = {k: v for k, v in os.environ.items() if k not in ("AUTOKD_STORAGE", "PGPASSWORD", "RAY_ADDRESS")}
    with open(log, "w") as sink:
        proc = subprocess.Popen([sys.executable, "-m", "autokd", "search", str(study), "--storage",
                                 with_password(postgres_url)], cwd=tmp_path, stdout=sink, stderr=subprocess.STDOUT,
                                env={**env, "COLUMNS": "200"})
    seen: dict[int, str] = {}
    ray_processes: dict[int, str | None] = {}
    try:
        def a_trial_is_running() -> bool:
            for pid in descendants(proc.pid):
                seen[pid] = cmdline(pid)
                ray_processes[pid] = ray_reaper.start_ticks(pid)
            seen[proc.pid] = cmdline(proc.pid)
            return any("ImplicitFunc" in line for line in seen.values())

        wait_for(a_trial_is_running, 240, "a Ray worker training the trial", proc)
        assert proc.wait(timeout=240) == 0, log.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
    deadline = time.monotonic() + 10  # a driver's normal end takes its private Ray along
    while _alive(ray_processes) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _alive(ray_processes), [cmdline(p) for p in _alive(ray_processes)]
    assert "--storage postgresql+psycopg://postgres:***@" in seen[proc.pid]  # what ps showed of the driver
    assert not [line for line in seen.values() if SECRET in line]  # nor of any Ray process
    text = log.read_text()
    assert SECRET not in text and "warning: a password on the command line" in text
    ray_sessions = list(Path(tempfile.gettempdir(), "ray").glob(f"session_*_{proc.pid}"))
    assert (tmp_path / "out" / "ray_results").is_dir() and ray_sessions
    assert files_holding(SECRET, tmp_path, *ray_sessions) == []  # study.yaml, tuner.pkl, logs, Ray's session
