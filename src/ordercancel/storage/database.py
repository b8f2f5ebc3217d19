"""Connections and migrations: one SQLAlchemy engine per database URL, schema by Alembic."""

from __future__ import annotations

import math
import sqlite3
from datetime import UTC, datetime
from importlib.resources import files
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, event

from ordercancel.config import DEFAULT_SQLITE_BUSY_TIMEOUT, Settings

#: Seconds a SQLite connection waits for another writer before giving up, unless
#: ORDERCANCEL_SQLITE_BUSY_TIMEOUT (Settings.sqlite_busy_timeout) says otherwise.
SQLITE_BUSY_TIMEOUT = DEFAULT_SQLITE_BUSY_TIMEOUT


class DatabaseNotReady(RuntimeError):
    """The database is missing or its schema is not the one this version needs."""


def configure_sqlite(connection: sqlite3.Connection, *, busy_timeout: float = SQLITE_BUSY_TIMEOUT) -> None:
    """Apply the settings every SQLite connection of ours uses.

    WAL lets readers go on while one writer commits; synchronous=FULL makes every commit
    durable before it is acknowledged (the writer groups commits to pay for that).
    """
    connection.execute(f"PRAGMA busy_timeout = {math.ceil(busy_timeout * 1000)}")
    connection.execute("PRAGMA journal_mode = WAL")
    connection.execute("PRAGMA synchronous = FULL")
    connection.execute("PRAGMA foreign_keys = ON")


def sqlalchemy_url(settings: Settings) -> str:
    """Return the URL with the driver we install spelled out (psycopg 3 for PostgreSQL)."""
    url = settings.database_url
    for plain in ("postgresql://", "postgres://"):
        if url.startswith(plain):
            return "postgresql+psycopg://" + url[len(plain) :]
    return url


def create_sync_engine(settings: Settings, *, pool_size: int | None = None) -> Engine:
    """Build the engine the CLI and the admin use cases work through (pool_size: PostgreSQL's).

    Its errors never show the statement's parameters: they may hold a webhook's secret.
    """
    path = settings.sqlite_path()
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        timeout = settings.sqlite_busy_timeout
        engine = create_engine(sqlalchemy_url(settings), connect_args={"timeout": timeout}, hide_parameters=True)

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_connection: Any, _record: Any) -> None:
            configure_sqlite(dbapi_connection, busy_timeout=timeout)

        return engine
    if pool_size is not None:
        return create_engine(
            sqlalchemy_url(settings), pool_pre_ping=True, pool_size=pool_size, max_overflow=0, hide_parameters=True
        )
    return create_engine(sqlalchemy_url(settings), pool_pre_ping=True, hide_parameters=True)


def alembic_config(engine: Engine) -> Config:
    config = Config()
    config.set_main_option("script_location", str(files("ordercancel.storage") / "migrations"))
    config.attributes["engine"] = engine
    return config


def upgrade(engine: Engine) -> None:
    """Create the database or bring its schema up to this version's."""
    command.upgrade(alembic_config(engine), "head")


def ensure_current(engine: Engine) -> None:
    """Raise DatabaseNotReady unless the schema is at this version's head."""
    head = ScriptDirectory.from_config(alembic_config(engine)).get_current_head()
    with engine.connect() as connection:
        current = MigrationContext.configure(connection).get_current_revision()
    if current != head:
        raise DatabaseNotReady(
            f"database schema is at {current or 'nothing'}, this version needs {head}: run 'ordercancel db upgrade'"
        )


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(value: datetime | str | None) -> datetime | None:
    """Read a stored timestamp back as an aware UTC datetime (SQLite keeps them naive)."""
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def sqlite_timestamp(value: datetime) -> str:
    """Format a timestamp the way SQLAlchemy stores DateTime in SQLite (naive UTC)."""
    # isoformat, not strftime("%Y-%m-%d %H:%M:%S.%f"): the same text at about half the cost, once a cancellation.
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")
