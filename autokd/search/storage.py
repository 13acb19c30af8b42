"""Storage URLs become Optuna storages here and nowhere else; passwords never leave this module."""

from __future__ import annotations

from pathlib import Path

import warnings

import optuna
import sqlalchemy
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from autokd.errors import AutokdError

#: Seconds between heartbeats of a running trial; a trial silent for the grace period is failed
#: and re-enqueued by the next driver that opens the study.
HEARTBEAT_SECONDS = 30
GRACE_SECONDS = 90


def redact_url(url: str) -> str:
    """The URL with any password replaced by ``***`` (SQLAlchemy's own rendering)."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<unparseable storage URL>"


def open_storage(url: str, *, heartbeat: bool = True) -> optuna.storages.RDBStorage:
    """An RDB storage with engine options fit for the backend; one clear line if it cannot open.

    SQLite: a busy timeout so a second reader waits instead of failing. PostgreSQL and others:
    ``pool_pre_ping`` so connections dropped by the server are replaced transparently.
    """
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise AutokdError(f"storage URL {redact_url(url)} is not a valid SQLAlchemy URL",
                          "use e.g. sqlite:///runs/study.db or postgresql+psycopg://user@host/db") from None
    engine_kwargs: dict = {}
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            parent = Path(parsed.database).parent
            if not parent.exists():
                raise AutokdError(f"SQLite folder {parent} does not exist",
                                  "create it or point 'storage' at an existing folder")
        engine_kwargs["connect_args"] = {"timeout": 60}
    else:
        engine_kwargs["pool_pre_ping"] = True
        if parsed.get_backend_name() == "postgresql":
            engine_kwargs["connect_args"] = {"connect_timeout": 10}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=3)
            storage = optuna.storages.RDBStorage(
                url, engine_kwargs=engine_kwargs,
                heartbeat_interval=HEARTBEAT_SECONDS if heartbeat else None,
                grace_period=GRACE_SECONDS if heartbeat else None,
                heartbeat_stale_trial_callback=retry if heartbeat else None)
        if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
            _sqlite_wal(storage.engine)
        return storage
    except (SQLAlchemyError, ImportError, ValueError) as err:
        reason = str(getattr(err, "orig", None) or err).strip().splitlines()[0]
        reason = reason.replace(parsed.password or "\0", "***") if parsed.password else reason
        raise AutokdError(f"cannot open storage {redact_url(url)}: {reason[:200]}",
                          "start the database or correct the storage URL (--storage)") from None


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
    return sqlalchemy.create_engine(url, pool_pre_ping=True)
