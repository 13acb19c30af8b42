"""Helpers for the Ray executor tests: tiny studies, CLI drivers as subprocesses, study checks.

Every driver is a real ``autokd search --executor ray`` process with its own private Ray; tests
that kill one also kill, by pid, every process it started (raylet, GCS, workers).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import yaml
from optuna.trial import TrialState

from autokd.config import load_study_config
from autokd.record import trial_figures
from autokd.search.study import open_study
from tests.tiny import TEST_SEED

TINY_TEACHER = {"family": "cnn5", "knobs": {"width": 0.25}, "epochs": 2}


def write_study(tmp_path: Path, *, name: str = "raystudy", n_trials: int = 3, epochs: int = 2, batch_size: int = 128,
                storage: str | None = None, max_concurrent: int = 2, cpus_per_trial: float = 1.0,
                objectives: list[str] | None = None, max_failures: int = 2, teacher: Path | None = None,
                asha: bool = False, executor: str = "ray", early_stopping: bool = False,
                retime_front: bool = False) -> Path:
    """A digits study with a tiny teacher and a cnn5-only search space, written into ``tmp_path``.

    ``executor``: ``ray`` (default) or ``local``; the executor settings are ignored by ``local``.

    ``teacher``: a checkpoint to distil from (the session's ``tiny_teacher``); without it the
    driver trains a 2-epoch cnn5 teacher itself.
    """
    space = {
        "students": {"cnn5": {"width": {"float": [0.125, 0.25]}, "hidden": {"int": [16, 32]}}},
        "distill": {"loss": "kd", "alpha": {"float": [0.5, 0.9]}, "temperature": 4.0},
        "train": {"epochs": epochs, "batch_size": batch_size, "lr": {"float": [0.02, 0.1], "log": True}},
    }
    (tmp_path / "space.yaml").write_text(yaml.safe_dump(space))
    study = {
        "name": name, "dataset": "digits", "teacher": {"checkpoint": str(teacher)} if teacher else TINY_TEACHER, "search_space": "space.yaml",
        "objectives": objectives or ["accuracy", "params", "latency_ms"], "n_trials": n_trials, "latency_runs": 5, "latency_min_seconds": 0,
        "output": "out", "constraints": {"max_params": 100000}, "seed": TEST_SEED, "early_stopping": early_stopping,
        "retime_front": retime_front,
        "executor": {"kind": executor, "max_concurrent": max_concurrent, "cpus_per_trial": cpus_per_trial,
                     "max_failures": max_failures, "asha": asha},
    }
    if storage:
        study["storage"] = storage
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(study))
    return path


def command(study: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "autokd", "search", str(study), *args]


def run_search(study: Path, *args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run(command(study, *args), cwd=study.parent, capture_output=True, text=True, timeout=timeout,
                          env=_env())


def start_search(study: Path, *args: str, log: Path | None = None) -> subprocess.Popen:
    out = open(log or study.with_suffix(".log"), "w")
    return subprocess.Popen(command(study, *args), cwd=study.parent, stdout=out, stderr=subprocess.STDOUT,
                            env=_env())


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("RAY_ADDRESS", None)
    env["COLUMNS"] = "200"
    return env


def load(study: Path) -> optuna.Study:
    return open_study(load_study_config(study), create=False, heartbeat=False)


def running_with_checkpoint(study: Path) -> bool:
    """A trial of the study is RUNNING with its parameters and has written an epoch checkpoint."""
    try:
        running = load(study).get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    except Exception:  # the study does not exist yet
        return False
    return any(t.params and (study.parent / "out" / "trials" / f"{t.number:05d}" / "epoch" / "epoch.pt").is_file()
               for t in running)


def assert_exact(study: Path, n_trials: int) -> list[optuna.trial.FrozenTrial]:
    """Exactly ``n_trials`` COMPLETE trials, all with distinct parameters, none RUNNING or WAITING; returns them."""
    trials = load(study).get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    states = [(t.number, t.state.name, t.user_attrs.get("failed_because")) for t in trials]
    assert len(complete) == n_trials, states
    assert len({json.dumps(t.params, sort_keys=True) for t in complete}) == n_trials, states
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)], states
    return complete


def wait_for(predicate, timeout: float, what: str, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"driver exited ({proc.returncode}) before {what}")
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (Ray's raylet, GCS and workers of a driver), from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def kill_tree(proc: subprocess.Popen) -> None:
    """SIGKILL a driver and everything it started, each by its pid."""
    tree = descendants(proc.pid)
    for pid in [proc.pid, *tree]:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait(timeout=30)


def assert_study_exact(study: optuna.Study, n_trials: int, *, pruned: bool = False) -> list[optuna.trial.FrozenTrial]:
    """The study holds exactly ``n_trials`` COMPLETE trials with their metrics, and nothing RUNNING.

    ``pruned``: ASHA was on, so the ``n_trials`` finished are COMPLETE or PRUNED (with their last
    epoch's accuracy). Returns the COMPLETE trials.
    """
    trials = study.get_trials(deepcopy=False)
    states = [t.state for t in trials]
    assert TrialState.RUNNING not in states, [(t.number, t.state.name) for t in trials]
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    stopped = [t for t in trials if t.state == TrialState.PRUNED]
    assert len(complete) + (len(stopped) if pruned else 0) == n_trials and (pruned or not stopped), \
        [(t.number, t.state.name, t.user_attrs.get("failed_because")) for t in trials]
    for t in stopped:
        assert 0.0 <= t.user_attrs["accuracy"] <= 1.0 and t.user_attrs["epoch"] >= 1
    objectives = study.user_attrs["objectives"]
    for t in complete:
        a = trial_figures(t)
        for key in ("accuracy", "params", "latency_ms", "config", "architecture", "weights_path", "history"):
            assert key in a, (t.number, key)
        assert t.values == [float(a[o]) for o in objectives]
        assert 0.0 <= a["accuracy"] <= 1.0
        assert t.constraints == {"max_params": a["params"] - 100000}  # set_constraint reached the trial
        assert t.params == {k: v for k, v in a["config"].items() if k in t.params}
    return complete
