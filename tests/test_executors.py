"""One behaviour for both executors, on both backends: the executor contract suite.

Every test drives real ``autokd search`` processes (``--executor local`` or ``ray``) on a tiny
digits study, on a SQLite file and on a fresh PostgreSQL database, and checks the study itself:

* a driver SIGKILLed mid-trial, then run again: exactly the budget complete, nothing left RUNNING
  or WAITING, the killed trial failed and resumed from its epoch checkpoint;
* two drivers started at the same moment: exactly the budget, all distinct (on SQLite the second
  driver is refused up front with one line; PostgreSQL takes both, from an empty database);
* Ctrl-C: exit 130 with one line, the running trial failed and queued, and the next run
  resumes it from its epoch checkpoint.
"""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
from optuna.trial import TrialState
from ray_support import (assert_exact, kill_tree, load, run_search, running_with_checkpoint, start_search, wait_for,
                         write_study)

from autokd.record import trial_figures

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed to be used")]

EXECUTORS = ["local", "ray"]


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def backend(request) -> str | None:
    """The study's storage URL: None (SQLite beside the study) or a fresh PostgreSQL database."""
    return request.getfixturevalue("postgres_url") if request.param == "postgres" else None


@pytest.mark.parametrize("executor", EXECUTORS)
def test_driver_sigkill_mid_trial_then_rerun(tmp_path, tiny_teacher, backend, executor):
    # a budget of one: the rerun runs only the killed trial's retry (a second retry or a fresh trial would
    # be a second COMPLETE or a trial left WAITING)
    study = write_study(tmp_path, n_trials=1, epochs=10, batch_size=32, storage=backend, teacher=tiny_teacher,
                        executor=executor, max_concurrent=1)
    proc = start_search(study)
    try:
        wait_for(lambda: running_with_checkpoint(study), 180, "a running trial's first epoch checkpoint", proc)
    finally:
        kill_tree(proc)
    killed = [t.number for t in load(study).get_trials(states=(TrialState.RUNNING,))]
    assert killed

    done = run_search(study, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "re-enqueued" in done.stdout
    complete = assert_exact(study, 1)
    after = load(study).trials
    for number in killed:
        assert after[number].state == TrialState.FAIL
        [retry] = [t for t in complete if t.user_attrs.get("retry_of") == number]
        assert retry.params == after[number].params
        if retry.user_attrs.get("resume_from"):
            assert trial_figures(retry)["resumed_from_epoch"] >= 1
    assert any(trial_figures(t).get("resumed_from_epoch", 0) >= 1 for t in complete)


@pytest.mark.parametrize("executor", EXECUTORS)
def test_two_drivers_started_together_finish_exactly_the_budget(tmp_path, tiny_teacher, backend, executor):
    study = write_study(tmp_path, n_trials=2, epochs=2, storage=backend, teacher=tiny_teacher, executor=executor,
                        max_concurrent=1)
    logs = [tmp_path / "driver-a.log", tmp_path / "driver-b.log"]
    drivers = [start_search(study, log=log) for log in logs]  # nothing created beforehand: a fresh database
    codes = [proc.wait(timeout=400) for proc in drivers]
    texts = [log.read_text() for log in logs]
    if backend is None:  # SQLite: one driver, the other refused before any work, in one line
        assert sorted(codes) == [0, 2], texts
        refused = texts[codes.index(2)].strip().splitlines()
        assert len(refused) == 1 and "SQLite takes one driver" in refused[0], refused
    else:
        assert codes == [0, 0], [t[-3000:] for t in texts]
    assert_exact(study, 2)


@pytest.mark.parametrize("executor", EXECUTORS)
def test_ctrl_c_fails_the_running_trial_and_the_next_run_resumes_it(tmp_path, tiny_teacher, executor):
    # long enough that Ctrl-C lands mid-trial (a local 5-epoch trial takes about a second); a budget of one:
    # the next run runs the interrupted trial's retry and nothing else
    study = write_study(tmp_path, n_trials=1, epochs=30, batch_size=32, max_concurrent=1, teacher=tiny_teacher,
                        executor=executor)
    proc = start_search(study)
    try:
        wait_for(lambda: running_with_checkpoint(study), 180, "a running trial's first epoch checkpoint", proc)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=120) == 130, study.with_suffix(".log").read_text()[-3000:]
    finally:
        kill_tree(proc)
    log = study.with_suffix(".log").read_text()
    assert "Traceback" not in log
    assert len([line for line in log.splitlines() if "interrupted" in line]) == 1, log[-3000:]
    trials = load(study).trials
    [interrupted] = [t for t in trials if t.state == TrialState.FAIL]
    assert f"interrupted: 1 running trial ({interrupted.number}) was marked FAIL" in log, log[-3000:]
    assert not (tmp_path / "out" / "study.db.driver.lock").exists()  # removed on Ctrl-C too
    [queued] = [t for t in trials if t.state == TrialState.WAITING]
    assert queued.user_attrs["retry_of"] == interrupted.number and queued.user_attrs.get("resume_from")

    done = run_search(study, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    complete = assert_exact(study, 1)
    [resumed] = [t for t in complete if t.user_attrs.get("retry_of") == interrupted.number]
    assert trial_figures(resumed)["resumed_from_epoch"] >= 1 and Path(resumed.user_attrs["weights_path"]).is_file()
