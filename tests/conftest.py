"""Fixtures: a real database per test, the real app served over real HTTP."""

from __future__ import annotations

import asyncio
import shutil
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn
from sqlalchemy import Engine

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


@pytest.fixture
def settings(migrated_sqlite: Path, tmp_path: Path) -> Settings:
    path = tmp_path / "ordercancel.db"
    shutil.copy(migrated_sqlite, path)
    return Settings(database_url=f"sqlite:///{path}", environment=Environment.SANDBOX)


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
        self.stop(wait=False)

    def stop(self, *, wait: bool = True) -> None:
        """Ask the server to shut down; waiting costs uvicorn's 0.1 s ticks, which add up per test."""
        self._server.should_exit = True
        if wait:
            self._thread.join(timeout=10)


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
