"""Measure what the connection bounds add to reading one request, in microseconds.

Run: .venv/bin/python bench/protocol_cost.py
Feeds a typical cancellation request (head and JSON body in one read) to uvicorn's httptools
protocol and to ours, on a connection that answers nothing: the difference is the bounds'
cost per request (counting the head, the parser callbacks' additions, the pipeline check).
The ASGI task each request starts is created and cancelled the same way for both.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from ordercancel.config import Settings
from ordercancel.http.app import admin_engine, create_app
from ordercancel.http.protocol import BoundedHttpToolsProtocol
from ordercancel.storage import open_store

BATCH = 200
BATCHES = 100
BODY = b'{"orderNumber": "IMC000001"}'
REQUEST = (
    b"POST /web-api/order/CancelOrderByNumber HTTP/1.1\r\nHost: api.example\r\nUser-Agent: bench/1\r\n"
    b"Accept: application/json\r\nContent-Type: application/json\r\n"
    b"apiCode: 0f8fad5b-d9cb-469f-a165-70867728950e\r\nContent-Length: %d\r\n\r\n%s" % (len(BODY), BODY)
)


class _Transport(asyncio.Transport):
    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 8080) if name in ("sockname", "peername") else default

    def write(self, data: Any) -> None:
        pass

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        pass

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def batch(protocol_class: type[HttpToolsProtocol], loop: asyncio.AbstractEventLoop, config: uvicorn.Config) -> float:
    """Return the mean microseconds of data_received over one batch of fresh connections."""
    state = ServerState()
    total = 0.0
    for _ in range(BATCH):
        protocol = protocol_class(config, state, {}, _loop=loop)
        protocol.connection_made(_Transport())
        started = time.perf_counter()
        protocol.data_received(REQUEST)
        total += time.perf_counter() - started
        tasks = list(state.tasks)
        for task in tasks:
            task.cancel()
        protocol.connection_lost(None)
        loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
    return total / BATCH * 1e6


def main() -> None:
    loop = asyncio.new_event_loop()
    config = uvicorn.Config(
        create_app(Settings(), open_store(Settings()), admin_engine(Settings())), limit_concurrency=4096
    )
    # The machine is shared: batches of both alternate, and the fastest batch of each is the cost
    # without the neighbours' interference.
    plain, bounded = [], []
    for _ in range(BATCHES):
        plain.append(batch(HttpToolsProtocol, loop, config))
        bounded.append(batch(BoundedHttpToolsProtocol, loop, config))
    loop.close()
    fastest_plain, fastest_bounded = min(plain), min(bounded)
    print(f"data_received of one request, fastest of {BATCHES} batches of {BATCH}:")
    bounds = fastest_bounded - fastest_plain
    print(f"uvicorn {fastest_plain:.2f} us, bounded {fastest_bounded:.2f} us, bounds {bounds:+.2f} us")
    print(f"medians: uvicorn {statistics.median(plain):.2f} us, bounded {statistics.median(bounded):.2f} us")


if __name__ == "__main__":
    main()
