"""Every reach into Optuna's and Ray's private parts, behind named functions: the one module that owns them.

Optuna gives users ``Study`` and ``Trial`` and keeps the storage behind them; autokd's search needs a
little more than that public surface, because it asks and tells outside ``Study.optimize`` (whose
loop is where Optuna itself reaches into ``study._storage``):

* the storage behind a study (:func:`storage_of`) and a trial's storage id (:func:`trial_id`), to
  give a RUNNING trial a system attribute (:func:`set_system_attr`: which driver holds it), read a
  live trial's (:func:`system_attrs`), keep its heartbeat (:func:`record_heartbeat`) and fail a trial
  another driver left RUNNING (:func:`fail_trial`);
* Optuna's heartbeat mixin and the private method :func:`optuna.storages.fail_stale_trials` asks a
  storage for (``_get_stale_trial_ids``), so a storage that wraps another (:class:`DelegatingStorage`,
  the retrying storage of :mod:`autokd.search.storage`) keeps the heartbeat working;
* the names of Optuna's tables, to list a database's studies without creating any (:func:`study_names_in`);
* Ray's driver-side printer of worker and raylet output (:func:`intercept_ray_prints`), which has no
  setting to silence it.

``tests/test_internals.py`` pins each of these on a real study, so an Optuna or Ray upgrade that moves
one fails there, by name, instead of somewhere in a search. Nothing else in autokd (tests included)
touches a private attribute of either library.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable

import optuna
from optuna.trial import TrialState

#: Optuna's table of studies and its columns, read by :func:`study_names_in` (``optuna/storages/_rdb/models.py``).
STUDIES_TABLE = "studies"
#: Where Ray's driver prints what its log monitor forwards (worker output, raylet errors): module, function.
RAY_PRINTER = ("ray._private.worker", "print_to_stdstream")


# --------------------------------------------------------------------------- Optuna


def storage_of(study: optuna.Study) -> optuna.storages.BaseStorage:
    """The storage behind ``study`` (for every study :func:`autokd.search.open_study` opens, the retrying
    storage around Optuna's ``RDBStorage``: :class:`autokd.search.storage.RetryingStorage`).

    Its public methods (``record_heartbeat``, ``get_heartbeat_interval``, ...) are fine to call; the
    study just does not expose it (``Study._storage``).
    """
    return study._storage


def trial_id(trial: optuna.Trial | optuna.trial.FrozenTrial) -> int:
    """The storage's id of a live or frozen trial (not its ``number``; ``_trial_id`` on both classes)."""
    return trial._trial_id


def set_system_attr(study: optuna.Study, trial: optuna.Trial | optuna.trial.FrozenTrial, key: str, value: Any) -> None:
    """Set a system attribute of ``trial`` (``Trial.set_system_attr`` is gone since Optuna 5)."""
    storage_of(study).set_trial_system_attr(trial_id(trial), key, value)


def system_attrs(study: optuna.Study, trial: optuna.Trial) -> dict[str, Any]:
    """The system attributes of a live trial (a ``FrozenTrial`` has them as ``.system_attrs``)."""
    return storage_of(study).get_trial_system_attrs(trial_id(trial))


def heartbeat_enabled(study: optuna.Study) -> bool:
    """True when the study's storage keeps heartbeats (opened with a heartbeat interval)."""
    return storage_of(study).get_heartbeat_interval() is not None


def record_heartbeat(study: optuna.Study, trial: optuna.Trial | optuna.trial.FrozenTrial) -> None:
    """Mark ``trial`` alive now, when the storage keeps heartbeats (a no-op otherwise)."""
    if heartbeat_enabled(study):
        storage_of(study).record_heartbeat(trial_id(trial))


def fail_trial(study: optuna.Study, trial: optuna.trial.FrozenTrial, record: Callable[[Any], None]) -> bool:
    """Tell FAIL a RUNNING trial this process does not hold (another driver's), after ``record(writer)``
    wrote why through ``writer.set_user_attr`` (a frozen trial has no writer of its own).

    True when this call made the transition; False when another driver finished or failed the
    trial first (the storage locks the row, so exactly one caller wins).
    """
    from optuna.exceptions import UpdateFinishedTrialError

    storage, tid = storage_of(study), trial_id(trial)
    try:
        record(_UserAttrWriter(storage, tid))
        return bool(storage.set_trial_state_values(tid, TrialState.FAIL))
    except UpdateFinishedTrialError:
        return False


class _UserAttrWriter:
    """``set_user_attr`` of a trial, by its storage id: what :func:`fail_trial` hands its ``record``."""

    def __init__(self, storage: optuna.storages.BaseStorage, tid: int):
        self.storage, self.tid = storage, tid

    def set_user_attr(self, key: str, value: Any) -> None:
        self.storage.set_trial_user_attr(self.tid, key, value)


#: Optuna's heartbeat mixin of storages (``optuna.storages._heartbeat.BaseHeartbeat``): only a storage of this
#: class has its stale trials failed by ``fail_stale_trials``.
HEARTBEAT_BASE = optuna.storages._heartbeat.BaseHeartbeat
#: The private method of :data:`HEARTBEAT_BASE` that ``fail_stale_trials`` calls on the study's storage.
STALE_TRIALS_METHOD = "_get_stale_trial_ids"


def _storage_methods() -> tuple[str, ...]:
    bases = (optuna.storages.BaseStorage, HEARTBEAT_BASE)
    public = {name for base in bases for name in getattr(base, "__abstractmethods__", ()) if not name.startswith("_")}
    optional = {name for name, value in vars(optuna.storages.BaseStorage).items()
                if callable(value) and not name.startswith("_")}
    return tuple(sorted(public | optional | {STALE_TRIALS_METHOD}))


def _passed_on(name: str) -> Callable[..., Any]:
    def method(self: "DelegatingStorage", *args: Any, **kwargs: Any) -> Any:
        return self._call(name, args, kwargs)

    method.__name__ = method.__qualname__ = name
    return method


class DelegatingStorage(optuna.storages.BaseStorage, HEARTBEAT_BASE):
    """A storage that passes every call (public, and the heartbeat's private one) to ``inner`` through
    :meth:`_call`, which a subclass overrides to act around each call (retry it, time it).

    ``inner`` is what ``optuna.storages.get_storage`` makes of an ``RDBStorage`` (its caching
    front), so trials read through this storage are cached as Optuna caches them.
    """

    def __init__(self, inner: optuna.storages.BaseStorage):
        self.inner = inner

    def _call(self, name: str, args: tuple, kwargs: dict) -> Any:
        return getattr(self.inner, name)(*args, **kwargs)

    locals().update({_name: _passed_on(_name) for _name in _storage_methods()})


def study_names_in(connection: Any) -> list[str] | None:
    """The study names in the database behind a SQLAlchemy ``connection``, oldest first; None when it
    holds no Optuna schema. Reads only, so it never creates the tables ``RDBStorage`` would."""
    import sqlalchemy

    if not sqlalchemy.inspect(connection).has_table(STUDIES_TABLE):
        return None
    rows = connection.execute(sqlalchemy.text(f"SELECT study_name FROM {STUDIES_TABLE} ORDER BY study_id"))
    return [row[0] for row in rows]


# --------------------------------------------------------------------------- Ray


def ray_printer_module() -> Any | None:
    """The Ray module holding the driver's printer (:data:`RAY_PRINTER`), or None when Ray moved it."""
    try:
        return importlib.import_module(RAY_PRINTER[0])
    except ImportError:
        return None


def intercept_ray_prints(handle: Callable[[dict], bool]) -> bool:
    """Offer each message Ray prints on the driver (a dict: ``pid``, ``lines``, ...) to ``handle`` first.

    ``handle(data)`` returns True when it dealt with the message; otherwise Ray prints it as it
    would. Ray prints these from a thread of its own straight to stdout, with no setting to
    silence them, so wrapping its printer is the only way. Installed once per process (later
    calls keep the first ``handle``); returns False when this Ray release has no such printer, in
    which case its messages print as before.
    """
    module = ray_printer_module()
    original = getattr(module, RAY_PRINTER[1], None)
    if original is None:
        return False
    if getattr(original, "_autokd_original", None) is not None:
        return True

    def print_to_stdstream(data: dict, *args: Any, **kwargs: Any) -> None:
        if not (isinstance(data, dict) and handle(data)):
            original(data, *args, **kwargs)

    print_to_stdstream._autokd_original = original  # type: ignore[attr-defined]
    setattr(module, RAY_PRINTER[1], print_to_stdstream)
    return True
