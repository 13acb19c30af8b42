"""Storage URLs become Optuna storages here and nowhere else; passwords never leave this module.

A PostgreSQL password reaches autokd in one of four ways, in the order libpq and autokd try them:
in the URL itself, from ``AUTOKD_STORAGE`` (a full URL: the study's storage when neither
``--storage`` nor the study YAML names one, and the password of a password-less URL naming the same
database), from ``~/.pgpass`` or from ``PGPASSWORD``. A URL is never required to carry one, and
what autokd writes or prints (the study snapshot, Ray's experiment state, errors) goes through
:func:`strip_password` or :func:`redact_url` first.
"""

from __future__ import annotations

import contextlib
import copy
import os
import sys
import threading
import time
import uuid
import warnings
from pathlib import Path
from typing import Any, Iterator

import optuna
import sqlalchemy
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import (ArgumentError, DBAPIError, IntegrityError, OperationalError, ProgrammingError,
                            SQLAlchemyError)
from sqlalchemy.pool import NullPool

from autokd.errors import AutokdError
from autokd.record import DRIVER_ATTR
from autokd.search.driver import driver_id
from autokd.search.internals import DelegatingStorage, study_names_in, trial_id

#: Seconds between heartbeats of a driver's RUNNING trials (and its sweeps for trials of dead drivers,
#: :class:`autokd.search.lifecycle.Heartbeat`); declared to the storage as its heartbeat interval.
HEARTBEAT_SECONDS = 10
#: Seconds without a heartbeat after which a RUNNING trial counts as its driver's death: the next
#: driver that sweeps fails it and re-enqueues its parameters.
GRACE_SECONDS = 90
#: A full storage URL (password included) used when neither ``--storage`` nor the YAML names one.
ENV_STORAGE = "AUTOKD_STORAGE"
#: Key of the PostgreSQL advisory lock held while Optuna creates (or checks) its tables, so drivers
#: starting together on an empty database create the schema one after the other.
SCHEMA_LOCK_KEY = 0x6175746F6B64  # "autokd"
_SCHEMA_RETRIES = 3
#: Seconds a driver waits out a lost database (failover, restart, dropped connections) before it stops:
#: long enough for a PostgreSQL restart or a managed failover (typically 30-120 s), short enough that a
#: database that is really gone ends the run within minutes instead of hanging it.
STORAGE_RETRY_SECONDS = 300.0
_BACKOFF_SECONDS = (0.5, 1.0, 2.0, 5.0)


def redact_url(url: str) -> str:
    """The URL with any password (userinfo or ``?password=``) replaced by ``***``, for printing."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        return "<unparseable storage URL>"
    if "password" in parsed.query:
        parsed = parsed.update_query_dict({"password": "***"})
    return parsed.render_as_string(hide_password=True).replace("password=%2A%2A%2A", "password=***")


def strip_password(url: str | None) -> str | None:
    """The URL without its password, for files autokd writes (study snapshot, Ray's state).

    Re-running from such a file finds the password again where libpq looks (``~/.pgpass``,
    ``PGPASSWORD``) or in ``AUTOKD_STORAGE`` (:func:`with_env_password`).

    Example:
        >>> strip_password("postgresql+psycopg://me:secret@db.example/studies")
        'postgresql+psycopg://me@db.example/studies'
    """
    if url is None:
        return None
    try:
        parsed = make_url(url)
    except ArgumentError:
        return "<unparseable storage URL>"
    if "password" in parsed.query:
        parsed = parsed.difference_update_query(["password"])
    return _without_password(parsed).render_as_string(hide_password=False)


def _without_password(url: URL) -> URL:
    # URL.set(password=None) means "leave it as is"; only a new URL drops it.
    return URL.create(url.drivername, username=url.username, password=None, host=url.host, port=url.port,
                      database=url.database, query=url.query)


def env_storage() -> str | None:
    """The storage URL in ``AUTOKD_STORAGE``, if set and not empty."""
    return os.environ.get(ENV_STORAGE, "").strip() or None


def with_env_password(url: str) -> str:
    """``url`` with the password of ``AUTOKD_STORAGE`` when ``url`` has none and both name one database.

    This is how a study snapshot (written without the password) re-opens its PostgreSQL study when
    the password lives in ``AUTOKD_STORAGE``. Any other URL comes back unchanged; libpq still reads
    ``~/.pgpass`` and ``PGPASSWORD`` for a URL without a password.
    """
    env = env_storage()
    if env is None:
        return url
    try:
        mine, theirs = make_url(url), make_url(env)
    except ArgumentError:
        return url
    if mine.password is not None or "password" in mine.query or theirs.password is None:
        return url
    if _same_database(mine, theirs):
        return mine.set(password=theirs.password).render_as_string(hide_password=False)
    return url


def _same_database(a: URL, b: URL) -> bool:
    default_port = {"postgresql": 5432, "mysql": 3306}.get(a.get_backend_name())
    return (a.get_backend_name() == b.get_backend_name() and a.username == b.username
            and (a.host or "localhost") == (b.host or "localhost")
            and (a.port or default_port) == (b.port or default_port) and a.database == b.database)


def _parse(url: str) -> URL:
    try:
        return make_url(url)
    except ArgumentError:
        raise StorageUnavailable(f"storage URL {redact_url(url)} is not a valid SQLAlchemy URL", "invalid") from None


def _engine_kwargs(parsed: URL) -> dict[str, Any]:
    """SQLite: a busy timeout so a second reader waits instead of failing. PostgreSQL and others:
    ``pool_pre_ping`` so connections dropped by the server are replaced transparently."""
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            parent = Path(parsed.database).parent
            if not parent.exists():
                raise AutokdError(f"SQLite folder {parent} does not exist",
                                  "create it or point 'storage' at an existing folder")
        return {"connect_args": {"timeout": 60}}
    if parsed.get_backend_name() == "postgresql":
        return {"pool_pre_ping": True, "connect_args": {"connect_timeout": 10}}
    return {"pool_pre_ping": True}


#: What a connection error's message says, by kind, in the words of libpq, psycopg, MySQL and SQLite.
_ERROR_KINDS = (
    ("no-password", ("no password supplied", "password is required", "password required")),
    ("login", ("password authentication failed", "authentication failed", "role \"", "no pg_hba.conf entry",
               "access denied for user", "invalid authorization")),
    ("no-database", ("database \"", "unknown database")),
    ("unreachable", ("connection refused", "could not connect", "timeout expired", "timed out",
                     "failed to resolve host", "could not translate host name", "name or service not known",
                     "no route to host", "network is unreachable", "can't connect", "server closed the connection")),
)


class StorageUnavailable(AutokdError):
    """The study's database cannot be opened; ``kind`` says why (``login``, ``no-password``,
    ``no-database``, ``unreachable``, ``driver`` or ``other``), and the fix follows from it.

    The message never holds the password. ``from_origin`` names where the URL came from
    (``--storage``, ``AUTOKD_STORAGE``, the study file), which only the command line knows.
    """

    def __init__(self, problem: str, kind: str, origin: str = "the storage URL", password_from_env: bool = False):
        self.kind, self.origin, self.password_from_env = kind, origin, password_from_env
        super().__init__(problem, _advice(kind, origin, password_from_env))

    def from_origin(self, origin: str) -> "StorageUnavailable":
        return StorageUnavailable(self.problem, self.kind, origin, self.password_from_env)


def _advice(kind: str, origin: str, password_from_env: bool) -> str:
    where = f"the URL in {origin}" if origin != "the storage URL" else origin
    password = f" (the password came from {ENV_STORAGE})" if password_from_env else ""
    return {
        "login": f"check the user name and password{password}: correct {where}, or the password in "
                 f"{ENV_STORAGE}, ~/.pgpass or PGPASSWORD",
        "no-password": f"give the password in {ENV_STORAGE} (the full URL), ~/.pgpass or PGPASSWORD, or correct {where}",
        "no-database": f"create the database (e.g. createdb NAME), or correct the database name in {where}",
        "unreachable": f"start the database server, or correct the host and port in {where}",
        "invalid": f"write {where} as e.g. sqlite:///runs/study.db or postgresql+psycopg://user@host/db",
        "driver": f"install the database driver (pip install 'psycopg[binary]'), or correct the scheme in {where}",
    }.get(kind, f"correct {where}")


def _error_kind(reason: str, err: BaseException) -> str:
    if isinstance(err, ImportError):
        return "driver"
    text = reason.lower()
    return next((kind for kind, words in _ERROR_KINDS if any(w in text for w in words)), "other")


def _cannot_open(url: str, parsed: URL, err: BaseException, password_from_env: bool = False) -> StorageUnavailable:
    text = str(getattr(err, "orig", None) or err).strip()
    reason = (text.splitlines() or [type(err).__name__])[0]
    for secret in (parsed.password, parsed.query.get("password")):
        if secret:
            reason, text = reason.replace(str(secret), "***"), text.replace(str(secret), "***")
    return StorageUnavailable(f"cannot open storage {redact_url(url)}: {reason[:200]}", _error_kind(text, err),
                              password_from_env=password_from_env and parsed.password is not None)


@contextlib.contextmanager
def _schema_lock(url: str, parsed: URL, engine_kwargs: dict[str, Any]) -> Iterator[None]:
    """Hold a PostgreSQL advisory lock while Optuna creates its tables (a no-op elsewhere).

    Two ``CREATE TABLE`` of one new table at once fail on PostgreSQL's catalog
    (``pg_type_typname_nsp_index``); under this lock the second driver finds the tables made. The
    lock belongs to the session, so the server drops it if this process dies holding it.
    """
    if parsed.get_backend_name() != "postgresql":
        yield
        return
    engine = sqlalchemy.create_engine(url, poolclass=NullPool, connect_args=engine_kwargs.get("connect_args", {}))
    try:
        with engine.connect() as conn:
            conn.execute(sqlalchemy.text("SELECT pg_advisory_lock(:key)"), {"key": SCHEMA_LOCK_KEY})
            conn.commit()
            try:
                yield
            finally:
                conn.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:key)"), {"key": SCHEMA_LOCK_KEY})
                conn.commit()
    finally:
        engine.dispose()


def _is_creation_race(err: SQLAlchemyError) -> bool:
    """A second process created the same table or row first (SQLite and others, which take no lock)."""
    text = str(getattr(err, "orig", None) or err).lower()
    return isinstance(err, IntegrityError) or (isinstance(err, (OperationalError, ProgrammingError))
                                               and "already exists" in text)


def open_storage(url: str, *, heartbeat: bool = True, on_stale: Any = None,
                 retry_seconds: float = STORAGE_RETRY_SECONDS, notify: Any = None) -> "RetryingStorage":
    """An RDB storage with engine options fit for the backend; one clear line if it cannot open.

    Creates Optuna's tables in an empty database; any number of drivers may do so at once.
    ``on_stale(study, trial)`` is called for each trial ``optuna.storages.fail_stale_trials``
    fails because its heartbeat stopped (default: Optuna's retry callback, 3 retries).
    Once open, a lost connection is waited out for ``retry_seconds`` (:class:`RetryingStorage`;
    ``notify(line)`` says when the wait starts and ends, default: on stderr).

    Example:
        >>> open_storage("postgresql+psycopg://autokd@db.example/studies")  # doctest: +SKIP
    """
    given, url = url, with_env_password(url)
    parsed = _parse(url)
    engine_kwargs = _engine_kwargs(parsed)
    for attempt in range(_SCHEMA_RETRIES):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                retry = on_stale or optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=3)
                with _schema_lock(url, parsed, engine_kwargs):
                    storage = optuna.storages.RDBStorage(
                        url, engine_kwargs=engine_kwargs,
                        heartbeat_interval=HEARTBEAT_SECONDS if heartbeat else None,
                        grace_period=GRACE_SECONDS if heartbeat else None,
                        heartbeat_stale_trial_callback=retry if heartbeat else None)
            if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
                _sqlite_wal(storage.engine)
            # SQLite is a local file: nothing to wait for (a locked file has its own busy timeout).
            waits = 0.0 if parsed.get_backend_name() == "sqlite" else retry_seconds
            return RetryingStorage(storage, redact_url(url), waits, notify or _stderr_line)
        except SQLAlchemyError as err:
            if attempt + 1 < _SCHEMA_RETRIES and _is_creation_race(err):
                continue  # the tables exist now: the next attempt only checks them
            raise _cannot_open(url, parsed, err, given != url) from None
        except (ImportError, ValueError) as err:
            raise _cannot_open(url, parsed, err, given != url) from None
    raise AssertionError("unreachable")


def _stderr_line(line: str) -> None:
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


#: What a lost or refused connection says, in the words of libpq/psycopg and MySQL (lower case).
_CONNECTION_LOST = ("connection refused", "could not connect", "server closed the connection", "connection is closed",
                    "connection already closed", "terminating connection", "not currently accepting connections",
                    "the database system is starting up", "the database system is shutting down",
                    "the database system is in recovery mode", "consuming input failed", "connection timeout expired",
                    "timeout expired", "ssl syscall error", "connection reset", "broken pipe", "no route to host",
                    "network is unreachable", "lost connection", "gone away", "can't connect")


def is_connection_lost(err: BaseException) -> bool:
    """True when ``err`` (or what caused it: Optuna wraps SQLAlchemy's errors) is a lost or refused
    connection, which waiting may cure; a wrong query, a full disk or a constraint never is."""
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, DBAPIError):
            if err.connection_invalidated:
                return True
            text = str(err.orig or err).lower()
            return any(words in text for words in _CONNECTION_LOST)
        err = err.__cause__ or err.__context__
    return False


class StorageLost(AutokdError):
    """The database stayed out of reach for longer than the study's ``storage_retry_seconds``."""


class _Outage:
    """The one outage of a storage at a time, shared by the threads that use it (driver, heartbeat)."""

    def __init__(self, where: str, limit: float, notify: Any):
        self.where, self.limit, self.notify = where, limit, notify
        self.lock = threading.Lock()
        self.since: float | None = None  # monotonic time the first call failed
        self.ended = 0.0  # monotonic time the last outage ended
        self.lost: StorageLost | None = None

    def failed(self, err: BaseException, tries: int) -> None:
        """Wait before the next try; raise :class:`StorageLost` once the outage outlasts the limit."""
        with self.lock:
            now = time.monotonic()
            if self.lost is None and self.since is None:
                self.since = now
                self.notify(f"storage: lost the connection to {self.where} ({_reason(err)}); "
                            f"waiting up to {self.limit:g} s for it to come back")
            if self.lost is None and now - self.since >= self.limit:
                self.lost = StorageLost(
                    f"lost the connection to storage {self.where} for {now - self.since:.0f} s "
                    f"(storage_retry_seconds {self.limit:g}; last error: {_reason(err)})",
                    "bring the database back (or raise --storage-retry-seconds), then run the same command "
                    "again: the trials that were running are resumed")
            if self.lost is not None:
                raise self.again() from None
            wait = min(_BACKOFF_SECONDS[min(tries, len(_BACKOFF_SECONDS) - 1)], self.since + self.limit - now)
        time.sleep(max(0.0, wait))

    def again(self) -> StorageLost:
        """The outage's error, new for each raise (one object raised by several threads would pile up their tracebacks)."""
        return StorageLost(self.lost.problem, self.lost.fix)

    def recovered(self) -> None:
        with self.lock:
            if self.since is None or self.lost is not None:
                return
            self.notify(f"storage: connection to {self.where} back after {time.monotonic() - self.since:.0f} s; "
                        "the study goes on")
            self.since, self.ended = None, time.monotonic()


def _reason(err: BaseException) -> str:
    cause = err
    while not isinstance(cause, DBAPIError) and (cause.__cause__ or cause.__context__) is not None:
        cause = cause.__cause__ or cause.__context__
    text = str(getattr(cause, "orig", None) or cause).strip()
    return (text.splitlines() or [type(cause).__name__])[0][:160]


#: System attribute of a new trial: a one-off token by which a retried creation finds it.
CREATION_TOKEN = "autokd:created"


def _with_creation_token(template_trial: optuna.trial.FrozenTrial | None = None
                         ) -> tuple[optuna.trial.FrozenTrial, str]:
    """``(template, token)``: the trial to create (a fresh RUNNING one unless a template is given)
    with a new token among its system attributes. A RUNNING trial also names this process as its
    driver from birth: one killed before it claimed the trial (:func:`~autokd.search.study.claim_trial`)
    left a RUNNING trial no heartbeat ever covered, which the next run could not reclaim and whose
    budget slot it waited for."""
    token = uuid.uuid4().hex
    if template_trial is None:
        template_trial = optuna.trial.create_trial(state=optuna.trial.TrialState.RUNNING)
    else:
        template_trial = copy.deepcopy(template_trial)
    template_trial.system_attrs[CREATION_TOKEN] = token
    if template_trial.state == optuna.trial.TrialState.RUNNING:
        template_trial.system_attrs[DRIVER_ATTR] = driver_id()
    return template_trial, token


class RetryingStorage(DelegatingStorage):
    """Optuna's RDB storage, each call of which waits out a lost database for up to ``retry_seconds``.

    A call that fails with a lost or refused connection (:func:`is_connection_lost`) is tried again
    with a growing pause (0.5 s to 5 s); the first failure of an outage prints one line and the first
    success after it another. Once the outage outlasts ``retry_seconds`` every call, in every thread,
    raises the same :class:`StorageLost` (one line, exit 2): the running trials stay RUNNING, and the
    next run re-enqueues them as after a kill. A write whose commit reached the database but whose
    answer was lost is not applied twice: a state change's retry finds the state already set, and
    a new trial carries a one-off token (system attribute ``autokd:created``) by which a retry finds
    the trial the first try made instead of adding a second (:meth:`_create_once`).
    """

    def __init__(self, rdb: optuna.storages.RDBStorage, where: str, retry_seconds: float, notify: Any):
        super().__init__(optuna.storages.get_storage(rdb))  # Optuna's caching front over the RDB storage
        self.rdb, self.engine = rdb, rdb.engine
        self.outage = _Outage(where, retry_seconds, notify)

    def settled(self, seconds: float) -> bool:
        """True when no outage is going on nor ended within the last ``seconds`` (heartbeats caught up)."""
        return self.outage.since is None and time.monotonic() - self.outage.ended >= seconds

    def _call(self, name: str, args: tuple, kwargs: dict) -> Any:
        token = None
        if name == "create_new_trial":
            template, token = _with_creation_token(*args[1:], **kwargs)
            args, kwargs = (args[0], template), {}
        tries = 0
        while True:
            if self.outage.lost is not None:
                raise self.outage.again()
            try:
                if token is None:
                    result = super()._call(name, args, kwargs)
                else:
                    result = self._create_once(args, token, retried=tries > 0)
            except optuna.exceptions.UpdateFinishedTrialError:
                if not (tries and name == "set_trial_state_values" and self._already_set(*args, **kwargs)):
                    raise
                result = True  # the first try's commit went through; only its answer was lost
            except Exception as err:
                if self.outage.limit <= 0 or not is_connection_lost(err):
                    raise
                self.outage.failed(err, tries)
                tries += 1
                continue
            if tries:
                self.outage.recovered()
            return result

    def _create_once(self, args: tuple, token: str, retried: bool) -> int:
        """``create_new_trial(*args)`` leaving one trial with ``token``: a retry first looks for the
        trial a try whose answer was lost made, and copies made by Optuna's own retry of a commit it
        did not hear back from are told FAIL (``failed_because`` names the trial they copy)."""
        study_id = args[0]
        if not (retried and self._made_with(study_id, token)):
            super()._call("create_new_trial", args, {})
        first, *copies = self._made_with(study_id, token)
        for copy_ in copies:
            super()._call("set_trial_user_attr", (trial_id(copy_), "failed_because",
                                                  f"a second copy of trial {first.number}, made when the "
                                                  "database's answer to its creation was lost"), {})
            super()._call("set_trial_state_values", (trial_id(copy_), optuna.trial.TrialState.FAIL), {})
        return trial_id(first)

    def _made_with(self, study_id: int, token: str) -> list[optuna.trial.FrozenTrial]:
        """The study's trials that carry ``token``, first made first (reads new rows into the cache)."""
        trials = super()._call("get_all_trials", (study_id,), {"deepcopy": False})
        return sorted((t for t in trials if t.system_attrs.get(CREATION_TOKEN) == token), key=lambda t: t.number)

    def _already_set(self, trial_id: int, state: Any, values: Any = None) -> bool:
        stored = super()._call("get_trial", (trial_id,), {})
        return stored.state == state and (values is None or list(stored.values or []) == list(values))


def stored_study_names(url: str) -> list[str] | None:
    """The names of the studies in the database at ``url``; ``None`` when it holds no Optuna schema.

    Reads only: unlike :func:`open_storage` it never creates a table, nor a SQLite file, so
    ``autokd report`` and ``export`` on a wrong or empty database leave it as they found it.
    """
    given, url = url, with_env_password(url)
    parsed = _parse(url)
    engine_kwargs = _engine_kwargs(parsed)
    if parsed.get_backend_name() == "sqlite" and (not parsed.database or parsed.database == ":memory:"
                                                  or not Path(parsed.database).is_file()):
        return None
    try:
        engine = sqlalchemy.create_engine(url, poolclass=NullPool, connect_args=engine_kwargs.get("connect_args", {}))
        try:
            with engine.connect() as conn:
                return study_names_in(conn)
        finally:
            engine.dispose()
    except (SQLAlchemyError, ImportError, ValueError) as err:
        raise _cannot_open(url, parsed, err, given != url) from None


def _sqlite_wal(engine: sqlalchemy.Engine) -> None:
    """WAL journal + synchronous=NORMAL: a trial writes ~30 small commits (one per user attribute);
    WAL makes each an append instead of a journal rewrite, and readers (report, dashboard) never
    block the driver. Safe on a local disk; SQLite on a network share is unsupported anyway."""

    def on_connect(dbapi_connection, _record) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    sqlalchemy.event.listen(engine, "connect", on_connect)
    engine.dispose()  # connections opened while creating the tables reconnect with the pragmas


def engine_for(url: str) -> sqlalchemy.Engine:
    """A bare engine for maintenance tasks (creating a test database); not for trial data."""
    return sqlalchemy.create_engine(with_env_password(url), pool_pre_ping=True)
