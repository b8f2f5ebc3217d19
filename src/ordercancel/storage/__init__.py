"""Storage: the cancellation's steps shared by both backends, SQLite, PostgreSQL, the schema and
its migrations, the importer, and the queries of the admin use cases.

Nothing here imports the HTTP layer or the command line.
"""

from __future__ import annotations

from ordercancel.config import Settings
from ordercancel.storage.cache import RememberedKeys, authenticate_now
from ordercancel.storage.sqlite import SqliteStore
from ordercancel.storage.steps import Attempt, Caller, Store

__all__ = ["Attempt", "Caller", "RememberedKeys", "SqliteStore", "Store", "authenticate_now", "open_store"]


def open_store(settings: Settings) -> Store:
    """Build the store the database URL names (not yet started)."""
    store: Store
    if settings.is_postgres:
        from ordercancel.storage.postgres import PostgresStore  # psycopg is loaded only when it is used

        store = PostgresStore(
            settings.database_url,
            settings.environment,
            pool_size=settings.pool_size,
            idempotency_ttl=settings.idempotency_ttl,
        )
    else:
        path = settings.sqlite_path()
        if path is None:
            raise ValueError(f"no store for the database URL {settings.database_url!r}")
        store = SqliteStore(
            str(path),
            settings.environment,
            busy_timeout=settings.sqlite_busy_timeout,
            idempotency_ttl=settings.idempotency_ttl,
        )
    if settings.key_cache_seconds > 0:
        store = RememberedKeys(store, seconds=settings.key_cache_seconds)
    return store
