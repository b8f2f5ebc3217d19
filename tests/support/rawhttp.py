"""HTTP/1.1 over a bare socket: for requests no well-behaved client library would send."""

from __future__ import annotations

import select
import socket
import time
from collections.abc import Iterable
from dataclasses import dataclass, field


@dataclass
class RawResponse:
    status: int
    headers: dict[str, str]
    body: bytes
    #: Body bytes the client managed to send before it stopped (the server answered or hung up).
    sent: int = 0
    raw_head: bytes = field(default=b"", repr=False)


class NoResponse(Exception):
    """The server closed the connection without answering."""


def read_response(sock: socket.socket, timeout: float = 10.0) -> RawResponse:
    """Read one response from a connection the caller manages."""
    return _read_response(sock, time.monotonic() + timeout)


def _read_response(sock: socket.socket, deadline: float) -> RawResponse:
    data = b""
    while b"\r\n\r\n" not in data:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, BrokenPipeError):
            chunk = b""
        if not chunk:
            raise NoResponse(data.decode("latin-1"))
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers: dict[str, str] = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return RawResponse(int(status_line.split()[1]), headers, body[:length], raw_head=head)


def request(
    port: int,
    head: bytes,
    body: bytes | Iterable[bytes] = b"",
    *,
    timeout: float = 15.0,
    pause: float = 0.0,
) -> RawResponse:
    """Send a request head, then the body (all at once, or chunk by chunk with pauses).

    A streamed body stops as soon as the server answers or refuses to take more: the client
    never pushes more than the server is willing to read.
    """
    deadline = time.monotonic() + timeout
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(head)
        sent = 0
        for chunk in [body] if isinstance(body, bytes) else body:
            if select.select([sock], [], [], 0)[0]:
                break  # the server has answered (or closed): stop sending
            sock.settimeout(2.0)  # a server that stopped reading leaves sendall blocked
            try:
                sock.sendall(chunk)
            except (BrokenPipeError, ConnectionResetError, TimeoutError):
                break
            sent += len(chunk)
            if pause:
                time.sleep(pause)
        response = _read_response(sock, deadline)
        response.sent = sent
        return response


def head(method: str, path: str, headers: dict[str, str] | list[tuple[str, str]]) -> bytes:
    items = headers.items() if isinstance(headers, dict) else headers
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", *(f"{k}: {v}" for k, v in items)]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def chunked(chunks: Iterable[bytes]) -> Iterable[bytes]:
    """Frame a stream of chunks in HTTP/1.1 chunked transfer coding."""
    for chunk in chunks:
        yield b"%x\r\n%s\r\n" % (len(chunk), chunk)
    yield b"0\r\n\r\n"


def read_until_closed(sock: socket.socket, timeout: float = 10.0) -> bytes:
    """Read everything the server sends until it closes the connection (a reset counts as closed)."""
    deadline = time.monotonic() + timeout
    data = b""
    while time.monotonic() < deadline:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, BrokenPipeError):
            return data
        if not chunk:
            return data
        data += chunk
    raise TimeoutError(f"the connection is still open after {timeout} s")


def split_responses(data: bytes) -> list[RawResponse]:
    """Cut the bytes of pipelined answers (each with a Content-Length) into responses."""
    responses = []
    while data:
        head, _, rest = data.partition(b"\r\n\r\n")
        status_line, *lines = head.decode("latin-1").split("\r\n")
        headers = {name.strip().lower(): value.strip() for name, _, value in (x.partition(":") for x in lines)}
        length = int(headers.get("content-length", "0"))
        responses.append(RawResponse(int(status_line.split()[1]), headers, rest[:length], raw_head=head))
        data = rest[length:]
    return responses
