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


@pytest.mark.parametrize("lost_in", ["driver", "session"])
def test_a_trial_whose_creation_committed_but_whose_answer_was_lost_is_not_created_twice(postgres_url, lost_in):
    """The database commits the new trial, then the answer is lost. ``driver``: the DBAPI commit
    raises a dropped connection after committing, and Optuna retries the creation itself; ``session``:
    the error comes after SQLAlchemy's commit, and autokd's storage retries. Either way one trial
    goes on (the budget counts trials), and a copy Optuna made is told FAIL, naming the trial."""
    import optuna
    from sqlalchemy import event
    from sqlalchemy.exc import OperationalError

    from autokd.search.storage import open_storage

    storage = open_storage(postgres_url, heartbeat=False, retry_seconds=30, notify=lambda line: None)
    study = optuna.create_study(storage=storage, study_name="ack", directions=["maximize"])
    dialect = storage.rdb.engine.dialect
    lost, creating = [], [False]

    def trial_inserted(session, flush_context, instances):
        creating[0] = creating[0] or any(type(row).__name__ == "TrialModel" for row in session.new)

    def lose_the_answer(error):
        if creating[0] and not lost:
            lost.append(True)
            raise error

    def do_commit(dbapi_connection):
        type(dialect).do_commit(dialect, dbapi_connection)
        lose_the_answer(dialect.dbapi.OperationalError("server closed the connection unexpectedly"))

    def after_commit(session):
        lose_the_answer(OperationalError("COMMIT", {}, Exception("server closed the connection unexpectedly")))

    hooks = [("before_flush", trial_inserted)] + ([("after_commit", after_commit)] if lost_in == "session" else [])
    for name, hook in hooks:
        event.listen(storage.rdb.scoped_session, name, hook)
    if lost_in == "driver":
        dialect.do_commit = do_commit
    try:
        trial = study.ask()
    finally:
        for name, hook in hooks:
            event.remove(storage.rdb.scoped_session, name, hook)
        dialect.__dict__.pop("do_commit", None)
    assert lost == [True]  # the creation's commit did lose its answer
    trials = study.get_trials(deepcopy=False)
    assert trial.number == 0 and trials[0].state == TrialState.RUNNING
    assert len(trials) == (2 if lost_in == "driver" else 1)
    for copy_ in trials[1:]:  # Optuna's own retry made one: told FAIL, naming the trial it copies
        assert copy_.state == TrialState.FAIL and "second copy of trial 0" in copy_.user_attrs["failed_because"]
    assert len(study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))) == 1
    trial.suggest_float("x", 0.0, 1.0)
    study.tell(trial, 0.5)
    assert study.get_trials(deepcopy=False)[0].state == TrialState.COMPLETE
