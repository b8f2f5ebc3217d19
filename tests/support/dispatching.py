"""A real webhook dispatcher on its own event loop in a thread of the test process, and the outbox as tests read it."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import Engine, func, select

from ordercancel.delivery import Dispatcher
from ordercancel.storage.schema import webhook_deliveries


class DispatcherThread:
    """`with DispatcherThread(engine, ...) as dispatcher:` runs Dispatcher(engine, ...) until the block ends."""

    def __init__(self, engine: Engine, **options: Any) -> None:
        self.outcomes: list[str] = []
        options.setdefault("poll", 0.05)
        options.setdefault("on_outcome", self.outcomes.append)
        self._engine = engine
        self._options = options
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self.dispatcher: Dispatcher | None = None

    def __enter__(self) -> Dispatcher:
        self._thread.start()

        async def start() -> Dispatcher:
            dispatcher = Dispatcher(self._engine, **self._options)
            await dispatcher.start()
            return dispatcher

        self.dispatcher = asyncio.run_coroutine_threadsafe(start(), self._loop).result(timeout=10)
        return self.dispatcher

    def __exit__(self, *exc_info: object) -> None:
        if self.dispatcher is not None:
            asyncio.run_coroutine_threadsafe(self.dispatcher.stop(), self._loop).result(timeout=30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()


def states(engine: Engine) -> dict[str, int]:
    """How many deliveries are in each state."""
    with engine.connect() as connection:
        rows = connection.execute(
            select(webhook_deliveries.c.state, func.count()).group_by(webhook_deliveries.c.state)
        ).all()
    return {state: int(n) for state, n in rows}


def wait_until(condition: Callable[[], bool], timeout: float = 15.0, what: str = "the condition") -> None:
    """Wait, bounded, for a condition; fail saying what did not happen."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {timeout} s")
        time.sleep(0.02)
