"""The study on the real PostgreSQL at 127.0.0.1:5432: resume helpers and the direction check
(several drivers sharing one budget: tests/test_executors.py). Each test gets a fresh database (``postgres_url``), dropped after.
"""

from __future__ import annotations

import socket

import pytest
from optuna.trial import TrialState
from ray_support import write_study

from autokd.config import load_study_config
from autokd.errors import AutokdError
from autokd.record import DRIVER_ATTR
from autokd.search.internals import set_system_attr
from autokd.search.study import open_study, reclaim_stale_trials

pytestmark = [pytest.mark.postgres, pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed to be used")]


def test_reclaim_on_postgres_is_once_per_dead_trial(tmp_path, postgres_url):
    study = write_study(tmp_path, storage=postgres_url)
    (tmp_path / "out").mkdir()
    cfg = load_study_config(study)
    s = open_study(cfg)
    live, dead = s.ask(), s.ask()
    dead.suggest_float("lr", 0.01, 0.1)
    set_system_attr(s, live, DRIVER_ATTR, "another-host:1:1")
    set_system_attr(s, dead, DRIVER_ATTR, f"{socket.gethostname()}:999999999:1")
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
