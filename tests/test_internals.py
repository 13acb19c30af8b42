"""Pins every private Optuna and Ray reach-in of autokd (:mod:`autokd.search.internals`) on real objects.

If an upgrade of either library moves one of them, a test here fails and names what moved, instead of
a search failing somewhere in the middle of a trial.
"""

from __future__ import annotations

import importlib
import inspect
import time
import warnings

import optuna
import pytest
import sqlalchemy
from optuna.trial import TrialState

from autokd.search import internals
from autokd.search.storage import open_storage

pytestmark = pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed to be used")


@pytest.fixture
def study(tmp_path):
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        storage = open_storage(f"sqlite:///{tmp_path / 'study.db'}", heartbeat=True)
    return optuna.create_study(study_name="pinned", storage=storage)


def _moved(what: str) -> str:
    return f"{what} moved in this optuna/ray release: update autokd/search/internals.py (and this test)"


def test_storage_of_is_the_studys_storage(study):
    assert hasattr(study, "_storage"), _moved("Study._storage")
    storage = internals.storage_of(study)
    assert isinstance(storage, optuna.storages.BaseStorage), _moved("Study._storage")
    assert storage.get_study_id_from_name("pinned") is not None


def test_trial_id_matches_the_storages_public_lookup(study):
    study.ask()
    trial = study.ask()
    assert hasattr(trial, "_trial_id"), _moved("Trial._trial_id")
    storage = internals.storage_of(study)
    by_number = storage.get_trial_id_from_study_id_trial_number(storage.get_study_id_from_name("pinned"), trial.number)
    assert internals.trial_id(trial) == by_number, _moved("Trial._trial_id")
    frozen = study.get_trials(deepcopy=False)[trial.number]
    assert internals.trial_id(frozen) == by_number, _moved("FrozenTrial._trial_id")


def test_system_attrs_are_set_and_read_on_a_live_trial(study):
    trial = study.ask()
    internals.set_system_attr(study, trial, "autokd:driver", "host:1:2")
    assert internals.system_attrs(study, trial)["autokd:driver"] == "host:1:2"
    assert study.get_trials(deepcopy=False)[0].system_attrs["autokd:driver"] == "host:1:2"


def test_heartbeat_is_recorded_when_the_storage_keeps_heartbeats(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'beat.db'}", heartbeat_interval=1, grace_period=1)
    study = optuna.create_study(study_name="beat", storage=storage)
    silent, beating = study.ask(), study.ask()
    assert internals.heartbeat_enabled(study)
    internals.record_heartbeat(study, beating)
    time.sleep(2.1)  # SQLite keeps whole seconds: 2 of them are more than the 1 s grace period
    optuna.storages.fail_stale_trials(study)  # only a trial with a heartbeat can go stale
    states = {t.number: t.state for t in study.get_trials(deepcopy=False)}
    assert states == {silent.number: TrialState.RUNNING, beating.number: TrialState.FAIL}
    quiet = optuna.create_study(study_name="quiet", storage=open_storage(f"sqlite:///{tmp_path / 'q.db'}",
                                                                         heartbeat=False))
    assert not internals.heartbeat_enabled(quiet)
    internals.record_heartbeat(quiet, quiet.ask())  # a no-op without heartbeats


def test_a_delegating_storage_is_a_whole_storage_and_keeps_the_heartbeat(tmp_path):
    assert isinstance(internals.HEARTBEAT_BASE, type), _moved("optuna.storages._heartbeat.BaseHeartbeat")
    assert callable(getattr(internals.HEARTBEAT_BASE, internals.STALE_TRIALS_METHOD, None)), \
        _moved(f"BaseHeartbeat.{internals.STALE_TRIALS_METHOD}")
    assert not internals.DelegatingStorage.__abstractmethods__, _moved("the abstract methods of BaseStorage")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        rdb = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'wrapped.db'}", heartbeat_interval=1, grace_period=1)
    study = optuna.create_study(study_name="wrapped", storage=internals.DelegatingStorage(optuna.storages.get_storage(rdb)))
    assert isinstance(internals.storage_of(study), internals.DelegatingStorage)  # Optuna keeps it as given
    beating = study.ask()
    internals.record_heartbeat(study, beating)
    time.sleep(2.1)
    optuna.storages.fail_stale_trials(study)  # reaches the wrapped storage's stale trials through the wrapper
    assert study.get_trials(deepcopy=False)[0].state == TrialState.FAIL


def test_fail_trial_fails_once_whichever_driver_calls(study):
    trial = study.ask()
    frozen = study.get_trials(deepcopy=False)[0]
    why = lambda reason: lambda writer: writer.set_user_attr("failed_because", reason)  # noqa: E731
    assert internals.fail_trial(study, frozen, why("driver died")) is True
    assert internals.fail_trial(study, frozen, why("driver died again")) is False  # already finished: not ours
    [failed] = study.get_trials(deepcopy=False)
    assert failed.state == TrialState.FAIL and failed.user_attrs["failed_because"] == "driver died"
    assert trial.number == failed.number


def test_study_names_are_read_from_optunas_tables(study, tmp_path):
    optuna.create_study(study_name="second", storage=internals.storage_of(study))
    engine = sqlalchemy.create_engine(f"sqlite:///{tmp_path / 'study.db'}")
    empty = sqlalchemy.create_engine(f"sqlite:///{tmp_path / 'empty.db'}")
    try:
        with engine.connect() as conn:
            assert internals.study_names_in(conn) == ["pinned", "second"], _moved(f"table {internals.STUDIES_TABLE}")
        with empty.connect() as conn:
            assert internals.study_names_in(conn) is None
    finally:
        engine.dispose()
        empty.dispose()
    assert optuna.get_all_study_names(internals.storage_of(study)) == ["pinned", "second"]


def test_rays_driver_printer_is_where_autokd_wraps_it(monkeypatch):
    module_name, function = internals.RAY_PRINTER
    module = importlib.import_module(module_name)  # ImportError here: Ray moved its worker module
    original = getattr(module, function, None)
    assert callable(original), _moved(f"{module_name}.{function}")
    original = getattr(original, "_autokd_original", original)
    assert list(inspect.signature(original).parameters)[:2] == ["data", "ignore_prefix"], _moved(function)

    printed, handled = [], []
    monkeypatch.setattr(module, function, lambda data, ignore_prefix: printed.append(data))
    assert internals.intercept_ray_prints(lambda data: handled.append(data) or data.get("pid") == "raylet")
    assert internals.intercept_ray_prints(lambda data: True)  # installed once: the first handler stays
    getattr(module, function)({"pid": "raylet", "lines": ["worker died"]}, False)
    getattr(module, function)({"pid": 42, "lines": ["hello"]}, False)
    assert [d["pid"] for d in handled] == ["raylet", 42]
    assert [d["pid"] for d in printed] == [42]  # what the handler declines, Ray prints as before
