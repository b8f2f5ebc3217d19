"""Fixtures: a real database per test, the real app served over real HTTP."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import psycopg
import pytest
import uvicorn
from sqlalchemy import Engine, make_url

from ordercancel import database, service
from ordercancel.app import create_app
from ordercancel.config import Environment, Settings
from ordercancel.domain import Order
from ordercancel.store import open_store


@pytest.fixture(scope="session")
def migrated_sqlite(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite file migrated once; each test gets a copy (migrating per test costs 10x more)."""
    path = tmp_path_factory.mktemp("template") / "template.db"
    engine = database.create_sync_engine(Settings(database_url=f"sqlite:///{path}"))
    database.upgrade(engine)
    engine.dispose()
    return path


#: The server the PostgreSQL variants run against (the machine's and CI's, trust auth).
POSTGRES_URL = os.environ.get("ORDERCANCEL_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
#: Pool per server process in tests: small, since the server's connection limit is shared.
TEST_POOL_SIZE = 2


def postgres_url(database: str) -> str:
    return make_url(POSTGRES_URL).set(database=database).render_as_string(hide_password=False)


class PostgresTemplate:
    """A database migrated once by Alembic; each test gets a fresh copy of it.

    Copying a template database (about 20 ms) beats running the migrations per test, and
    a database per test isolates as well as a schema while needing no search_path games.
    """

    def __init__(self, admin: psycopg.Connection[tuple[object, ...]], name: str) -> None:
        self._admin = admin
        self.name = name

    def copy(self) -> str:
        name = f"{self.name}_{uuid.uuid4().hex[:8]}"
        self._admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{self.name}"')
        return name

    def drop(self, name: str) -> None:
        self._admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def postgres_template() -> Iterator[PostgresTemplate]:
    try:
        admin = psycopg.connect(POSTGRES_URL, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as error:
        reason = f"PostgreSQL is not reachable at {POSTGRES_URL}: {str(error).strip()}"
        if os.environ.get("ORDERCANCEL_REQUIRE_POSTGRES") == "1":
            pytest.fail(f"{reason} (ORDERCANCEL_REQUIRE_POSTGRES=1)", pytrace=False)
        pytest.skip(reason)
    template = PostgresTemplate(admin, f"ordercancel_test_{uuid.uuid4().hex[:8]}")
    admin.execute(f'CREATE DATABASE "{template.name}"')
    try:
        engine = database.create_sync_engine(Settings(database_url=postgres_url(template.name)))
        database.upgrade(engine)
        engine.dispose()
        yield template
    finally:
        template.drop(template.name)
        admin.close()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def settings(request: pytest.FixtureRequest, migrated_sqlite: Path, tmp_path: Path) -> Iterator[Settings]:
    """Settings for a fresh, migrated database: every test using it runs on both backends."""
    if request.param == "sqlite":
        path = tmp_path / "ordercancel.db"
        shutil.copy(migrated_sqlite, path)
        yield Settings(database_url=f"sqlite:///{path}", environment=Environment.SANDBOX)
        return
    template: PostgresTemplate = request.getfixturevalue("postgres_template")
    name = template.copy()
    try:
        yield Settings(database_url=postgres_url(name), environment=Environment.SANDBOX, pool_size=TEST_POOL_SIZE)
    finally:
        template.drop(name)


@pytest.fixture
def engine(settings: Settings) -> Iterator[Engine]:
    engine = database.create_sync_engine(settings)
    yield engine
    engine.dispose()


class LiveServer:
    """The real app on uvicorn, on a free loopback port, in a thread of the test process."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._socket = socket.socket()
        self._socket.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._socket.getsockname()[1]}"
        config = uvicorn.Config(
            create_app(settings, open_store(settings)), log_level="warning", access_log=False, lifespan="on"
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.run(self._server.serve(sockets=[self._socket]))

    def __enter__(self) -> LiveServer:
        self._thread.start()
        while not self._server.started:
            if not self._thread.is_alive():
                raise RuntimeError("the server did not start")
            threading.Event().wait(0.005)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)
        self._socket.close()


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


OrderFactory = Callable[..., Order]


@pytest.fixture
def make_order(engine: Engine, settings: Settings, api_code: str) -> OrderFactory:
    """Create an order for the test's API code (or another one), in any state."""

    def make(**fields: str | None) -> Order:
        code = fields.pop("api_code", None) or api_code
        return service.create_order(engine, settings.environment, code, **fields)  # type: ignore[arg-type]

    return make
