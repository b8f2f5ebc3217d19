"""The bench's webhook receiver: answers every POST with 204 at as little CPU as it can.

A raw asyncio protocol on loopback (uvloop when installed), HTTP/1.1 with keep-alive: it finds
each request's end by its Content-Length (chunked bodies are not expected: the dispatcher sends
a sized body), answers `204 No Content`, and counts. It neither parses JSON nor checks
signatures: the tests do that (tests/support/receiver.py); here the receiver must not take CPU
the server under test would otherwise have. `GET /count` answers the number of POSTs so far
(that GET is not counted). On start it prints `listening on PORT` on stdout; on SIGINT or
SIGTERM it prints `received N` and stops.

    python bench/webhook_receiver.py [--port 0]
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from typing import cast

NO_CONTENT = b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n"
BAD_REQUEST = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
#: A request head longer than this is refused (the dispatcher's are well under 1 KiB).
MAX_HEAD = 16 * 1024


class Counter:
    """The requests all connections have answered."""

    def __init__(self) -> None:
        self.posts = 0


class Connection(asyncio.Protocol):
    """One keep-alive connection: requests in, one 204 per POST out, in order."""

    def __init__(self, counter: Counter) -> None:
        self._counter = counter
        self._buffer = bytearray()
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        answers: list[bytes] = []
        while True:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(buffer) > MAX_HEAD:
                    answers.append(BAD_REQUEST)
                break
            length = content_length(buffer, end)
            if length < 0:
                answers.append(BAD_REQUEST)
                break
            total = end + 4 + length
            if len(buffer) < total:
                break
            if buffer.startswith(b"GET /count"):
                count = str(self._counter.posts).encode()
                answers.append(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(count), count))
            else:
                self._counter.posts += 1
                answers.append(NO_CONTENT)
            del buffer[:total]
        if answers and self._transport is not None:
            self._transport.write(b"".join(answers))
            if answers[-1] is BAD_REQUEST:
                self._transport.close()


def content_length(buffer: bytearray, end: int) -> int:
    """The Content-Length of the request head ending at `end` (0 when absent, -1 when unreadable)."""
    start = buffer.find(b"\nContent-Length:", 0, end)  # httpx's spelling
    if start < 0:
        start = buffer.find(b"\ncontent-length:", 0, end)
    if start < 0:
        start = bytes(buffer[:end]).lower().find(b"\ncontent-length:")  # any other spelling
        if start < 0:
            return 0
    start += len(b"\ncontent-length:")
    stop = buffer.find(b"\r\n", start, end + 2)
    try:
        return int(buffer[start:stop])
    except ValueError:
        return -1


async def serve(port: int) -> int:
    counter = Counter()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Connection(counter), "127.0.0.1", port, backlog=1024)
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    print(f"listening on {server.sockets[0].getsockname()[1]}", flush=True)
    await stop.wait()
    server.close()
    print(f"received {counter.posts}", flush=True)
    return counter.posts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=0, help="the port on 127.0.0.1 (default: any free one)")
    options = parser.parse_args(sys.argv[1:] if argv is None else argv)
    try:
        import uvloop
    except ImportError:  # pragma: no cover: the server's own dependencies bring it
        asyncio.run(serve(options.port))
    else:
        uvloop.run(serve(options.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
