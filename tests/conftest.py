"""Fixtures: a real database per test, the real app served over real HTTP; helpers live in tests/support."""

from __future__ import annotations

import dataclasses
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import Engine

from ordercancel.config import Environment, Settings
from ordercancel.storage import database, service
from tests.support.live import ADMIN_TOKEN, LiveServer
from tests.support.orders import OrderFactory, order_factory
from tests.support.postgres import TEST_POOL_SIZE, PostgresSchemas, connect_postgres, postgres_url


@pytest.fixture(scope="session")
def migrated_sqlite(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite file migrated once; each test gets a copy (migrating per test costs 10x more)."""
    path = tmp_path_factory.mktemp("template") / "template.db"
    engine = database.create_sync_engine(Settings(database_url=f"sqlite:///{path}"))
    database.upgrade(engine)
    engine.dispose()
    return path


@pytest.fixture(scope="session")
def postgres_schemas() -> Iterator[PostgresSchemas]:
    with connect_postgres() as admin:
        schemas = PostgresSchemas(admin)
        schemas.record_migration()
        yield schemas


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def settings(request: pytest.FixtureRequest, migrated_sqlite: Path, tmp_path: Path) -> Iterator[Settings]:
    """Settings for a fresh, migrated database: every test using it runs on both backends.

    No webhook dispatcher runs in the servers of these settings: a test about webhooks turns it on
    (`dataclasses.replace(settings, webhook_dispatcher=True)`), and its server is then stopped
    and waited for before the database goes.
    """
    if request.param == "sqlite":
        path = tmp_path / "ordercancel.db"
        shutil.copy(migrated_sqlite, path)
        yield Settings(database_url=f"sqlite:///{path}", environment=Environment.SANDBOX, webhook_dispatcher=False)
        return
    schemas: PostgresSchemas = request.getfixturevalue("postgres_schemas")
    name = schemas.create()
    try:
        yield Settings(
            database_url=postgres_url(name),
            environment=Environment.SANDBOX,
            pool_size=TEST_POOL_SIZE,
            webhook_dispatcher=False,
        )
    finally:
        schemas.drop(name)


@pytest.fixture
def engine(settings: Settings) -> Iterator[Engine]:
    engine = database.create_sync_engine(settings)
    yield engine
    engine.dispose()


@pytest.fixture
def server(settings: Settings) -> Iterator[LiveServer]:
    with LiveServer(settings) as live:
        yield live


@pytest.fixture
def http(server: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=10) as client:
        yield client


@pytest.fixture
def api_code(engine: Engine, settings: Settings) -> str:
    return service.create_key(engine, settings.environment, "test")


@pytest.fixture
def make_order(engine: Engine, settings: Settings, api_code: str) -> OrderFactory:
    """Create an order for the test's API code (or another one), in any state."""
    return order_factory(engine, settings.environment, api_code)


@pytest.fixture
def admin_server(settings: Settings) -> Iterator[LiveServer]:
    """The real app with the admin API enabled by a token."""
    with LiveServer(dataclasses.replace(settings, admin_token=ADMIN_TOKEN)) as live:
        yield live


@pytest.fixture
def admin_http(admin_server: LiveServer) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    with httpx.Client(base_url=admin_server.url, headers=headers, timeout=10) as client:
        yield client


#: The server the crash tests make databases of their own on.
POSTGRES_SERVER_URL = os.environ.get("ORDERCANCEL_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432")


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def own_database_url(request: pytest.FixtureRequest, migrated_sqlite: Path, tmp_path: Path) -> Iterator[str]:
    """A migrated database of the test's own (on PostgreSQL a database, not a schema): for crash tests,
    whose killed servers' connections and integrity checks must stay apart from the other tests'."""
    if request.param == "sqlite":
        path = tmp_path / "crash.db"
        shutil.copy(migrated_sqlite, path)
        yield f"sqlite:///{path}"
        return
    name = f"ordercancel_crash_{uuid.uuid4().hex[:8]}"
    with connect_postgres(f"{POSTGRES_SERVER_URL}/postgres") as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    url = f"{POSTGRES_SERVER_URL}/{name}"
    engine = database.create_sync_engine(Settings(database_url=url))
    database.upgrade(engine)
    engine.dispose()
    try:
        yield url
    finally:
        with connect_postgres(f"{POSTGRES_SERVER_URL}/postgres") as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
