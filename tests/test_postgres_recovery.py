"""PostgreSQL briefly unreachable: requests fail with the documented 500, then the process recovers.

The machine's PostgreSQL is shared, so it is never stopped: the server under test reaches it
through a TCP proxy that the test stops (dropping every connection and refusing new ones)
and starts again on the same port.
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import time
from collections.abc import Coroutine, Iterator

import httpx
import pytest
from sqlalchemy import make_url

from ordercancel.config import Settings
from ordercancel.domain import UnknownError
from tests.support.live import LiveServer
from tests.support.orders import OrderFactory
from tests.support.postgres import POSTGRES_URL
from tests.support.serving import free_port
from tests.support.wire import BY_NUMBER


class TcpProxy:
    """Forward a loopback port to PostgreSQL; stop() is an outage, start() the end of it."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.port = free_port()
        self._target = (target_host, target_port)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._server: asyncio.Server | None = None
        self._streams: set[asyncio.StreamWriter] = set()

    def _call(self, coroutine: Coroutine[None, None, None]) -> None:
        asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout=10)

    def start(self) -> None:
        self._call(self._start())

    def stop(self) -> None:
        self._call(self._stop())

    def close(self) -> None:
        self.stop()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    async def _start(self) -> None:
        self._server = await asyncio.start_server(self._pipe, "127.0.0.1", self.port, reuse_address=True)

    async def _stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for stream in list(self._streams):
            stream.transport.abort()
        self._streams.clear()

    async def _pipe(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        server_reader, server_writer = await asyncio.open_connection(*self._target)
        self._streams |= {client_writer, server_writer}
        await asyncio.gather(_copy(client_reader, server_writer), _copy(server_reader, client_writer))


async def _copy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while chunk := await reader.read(65536):
            writer.write(chunk)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.transport.abort()


@pytest.fixture
def proxy() -> Iterator[TcpProxy]:
    url = make_url(POSTGRES_URL)
    proxy = TcpProxy(url.host or "127.0.0.1", url.port or 5432)
    proxy.start()
    yield proxy
    proxy.close()


def cancel(http: httpx.Client, api_code: str, number: str) -> httpx.Response:
    return http.post(
        BY_NUMBER, json={"orderNumber": number}, headers={"apiCode": api_code, "Accept": "application/json"}
    )


@pytest.mark.postgres
@pytest.mark.parametrize("settings", ["postgres"], indirect=True)
def test_while_postgres_is_unreachable_requests_get_the_documented_500_and_then_the_process_recovers(
    settings: Settings, proxy: TcpProxy, api_code: str, make_order: OrderFactory
) -> None:
    through_proxy = make_url(settings.database_url).set(port=proxy.port).render_as_string(hide_password=False)
    first, second = make_order(), make_order()
    with (
        LiveServer(dataclasses.replace(settings, database_url=through_proxy)) as server,
        httpx.Client(base_url=server.url, timeout=30) as http,
    ):
        assert cancel(http, api_code, first.order_number).json()["isCanceled"] is True

        proxy.stop()  # every pooled connection is cut, and new ones are refused
        failed = cancel(http, api_code, second.order_number)
        assert failed.status_code == 500
        assert failed.json() == {
            "isCanceled": False,
            "requestError": {"message": UnknownError.message, "code": 500},
        }
        assert "Traceback" not in failed.text
        assert http.get("/healthz").status_code == 503

        proxy.start()
        deadline = time.monotonic() + 30
        while (response := cancel(http, api_code, second.order_number)).status_code != 200:
            assert response.status_code == 500
            assert time.monotonic() < deadline, "the server did not recover within 30 s"
            time.sleep(0.2)
        assert response.json()["isCanceled"] is True
        assert http.get("/healthz").status_code == 200
