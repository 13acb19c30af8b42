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
import os
import warnings
from pathlib import Path
from typing import Any, Iterator

import optuna
import sqlalchemy
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, IntegrityError, OperationalError, ProgrammingError, SQLAlchemyError
from sqlalchemy.pool import NullPool

from autokd.errors import AutokdError
from autokd.search.internals import study_names_in

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


def open_storage(url: str, *, heartbeat: bool = True, on_stale: Any = None) -> optuna.storages.RDBStorage:
    """An RDB storage with engine options fit for the backend; one clear line if it cannot open.

    Creates Optuna's tables in an empty database; any number of drivers may do so at once.
    ``on_stale(study, trial)`` is called for each trial ``optuna.storages.fail_stale_trials``
    fails because its heartbeat stopped (default: Optuna's retry callback, 3 retries).

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
            return storage
        except SQLAlchemyError as err:
            if attempt + 1 < _SCHEMA_RETRIES and _is_creation_race(err):
                continue  # the tables exist now: the next attempt only checks them
            raise _cannot_open(url, parsed, err, given != url) from None
        except (ImportError, ValueError) as err:
            raise _cannot_open(url, parsed, err, given != url) from None
    raise AssertionError("unreachable")


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
