"""The study on the real PostgreSQL at 127.0.0.1:5432: two Ray drivers sharing one budget, resume
helpers and the direction check. Each test gets a fresh database (``postgres_url``), dropped after.
"""

from __future__ import annotations

import socket

import pytest
from optuna.trial import TrialState
from ray_support import assert_study_exact, load, start_search, write_study

from autokd.config import load_study_config
from autokd.errors import AutokdError
from autokd.search.study import DRIVER_ATTR, open_study, reclaim_stale_trials

pytestmark = [pytest.mark.postgres, pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed to be used")]


def _with_password(url: str, password: str) -> str:
    # Trust authentication ignores the password, so it can stand in for a real secret.
    return url.replace("postgresql+psycopg://postgres@", f"postgresql+psycopg://postgres:{password}@", 1)


@pytest.mark.slow
def test_two_ray_drivers_finish_one_shared_budget_exactly(tmp_path, postgres_url, tiny_teacher):
    """Two drivers, ASHA on: together they finish exactly n_trials (COMPLETE or PRUNED), nothing clashes."""
    secret = "s3cret-Pw0rd"
    study = write_study(tmp_path, n_trials=6, epochs=4, batch_size=64, storage=_with_password(postgres_url, secret),
                        teacher=tiny_teacher, asha=True)
    (tmp_path / "out").mkdir()
    open_study(load_study_config(study))  # created once, so both drivers load the same study
    logs = [tmp_path / "driver-a.log", tmp_path / "driver-b.log"]
    drivers = [start_search(study, log=log) for log in logs]
    for proc, log in zip(drivers, logs):
        assert proc.wait(timeout=300) == 0, log.read_text()[-3000:]
    complete = assert_study_exact(load(study), 6, pruned=True)
    assert complete, "the best trial of each rung runs to the end"
    trials = load(study).trials
    assert TrialState.WAITING not in [t.state for t in trials]
    finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len({t.system_attrs[DRIVER_ATTR] for t in finished}) == 2  # both drivers ran trials
    for log in logs:
        text = log.read_text()
        assert secret not in text and "postgres:***@" in text


def test_reclaim_on_postgres_is_once_per_dead_trial(tmp_path, postgres_url):
    study = write_study(tmp_path, storage=postgres_url)
    (tmp_path / "out").mkdir()
    cfg = load_study_config(study)
    s = open_study(cfg)
    live, dead = s.ask(), s.ask()
    dead.suggest_float("lr", 0.01, 0.1)
    s._storage.set_trial_system_attr(live._trial_id, DRIVER_ATTR, "another-host:1:1")
    s._storage.set_trial_system_attr(dead._trial_id, DRIVER_ATTR, f"{socket.gethostname()}:999999999:1")
    other_driver = open_study(load_study_config(study))  # a second driver racing for the same trial
    assert reclaim_stale_trials(s, cfg) + reclaim_stale_trials(other_driver, cfg) == [dead.number]
    [waiting] = s.get_trials(deepcopy=False, states=(TrialState.WAITING,))
    assert waiting.params == {} or waiting.user_attrs["retry_of"] == dead.number
    assert s.trials[live.number].state == TrialState.RUNNING


def test_direction_mismatch_on_postgres_is_refused(tmp_path, postgres_url):
    study = write_study(tmp_path, storage=postgres_url, objectives=["accuracy", "params"])
    (tmp_path / "out").mkdir()
    open_study(load_study_config(study))
    flipped = write_study(tmp_path, storage=postgres_url, objectives=["params", "accuracy"])
    with pytest.raises(AutokdError, match="objectives"):
        open_study(load_study_config(flipped))
