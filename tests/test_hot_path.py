"""The cancellation hot path under concurrency and slow clients, over real HTTP."""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import socket
import time

import httpx
from sqlalchemy import Engine, func, select

from ordercancel.config import Settings
from ordercancel.storage.schema import cancellation_attempts, orders
from tests.support.live import LiveServer
from tests.support.orders import OrderFactory
from tests.support.wire import BY_NUMBER


def test_of_many_concurrent_requests_for_one_order_exactly_one_cancels_it(
    server: LiveServer, engine: Engine, api_code: str, make_order: OrderFactory
) -> None:
    contested = make_order()
    distinct = [make_order() for _ in range(30)]
    headers = {"apiCode": api_code, "Accept": "application/json"}

    async def storm() -> list[dict[str, object]]:
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
            numbers = [contested.order_number] * 30 + [order.order_number for order in distinct]
            answers = await asyncio.gather(
                *(client.post(BY_NUMBER, json={"orderNumber": number}, headers=headers) for number in numbers)
            )
        return [answer.json() for answer in answers]

    answers = asyncio.run(storm())

    contested_answers, distinct_answers = answers[:30], answers[30:]
    assert sum(answer["isCanceled"] is True for answer in contested_answers) == 1
    refusals = [answer["requestError"] for answer in contested_answers if answer["isCanceled"] is False]
    assert all(error == {"message": "Order has already been cancelled before.", "code": 507} for error in refusals)
    assert all(answer["isCanceled"] is True for answer in distinct_answers)
    with engine.connect() as connection:
        cancelled = connection.scalar(select(func.count()).select_from(orders).where(orders.c.status == "Cancelled"))
        attempts = connection.scalar(select(func.count()).select_from(cancellation_attempts))
    assert (cancelled, attempts) == (31, 60)


def _read_answer(client: socket.socket) -> bytes:
    """Read one HTTP response whole: head and body may come in separate segments."""

    def more() -> bytes:
        chunk = client.recv(65536)
        assert chunk, "the server closed the connection in the middle of its answer"
        return chunk

    answer = b""
    while b"\r\n\r\n" not in answer:
        answer += more()
    head, _, body = answer.partition(b"\r\n\r\n")
    length = int(next(line for line in head.lower().split(b"\r\n") if line.startswith(b"content-length:"))[15:])
    while len(body) < length:
        body += more()
    return head + b"\r\n\r\n" + body


def _post_slowly(url: str, api_code: str, parts: list[bytes], pause: float) -> bytes:
    """Send a cancellation whose body comes in parts with pauses between them; return the answer."""
    body = b"".join(parts)
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as client:
        client.sendall(
            f"POST {BY_NUMBER} HTTP/1.1\r\nHost: test\r\napiCode: {api_code}\r\nAccept: application/json\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        )
        for part in parts:
            client.sendall(part)
            time.sleep(pause)
        return _read_answer(client)


def test_a_body_that_stops_arriving_is_answered_408_and_changes_nothing(
    settings: Settings, engine: Engine, api_code: str, make_order: OrderFactory
) -> None:
    order = make_order()
    impatient = dataclasses.replace(settings, body_timeout=0.3)

    with LiveServer(impatient) as server:
        # Content-Length promises the whole body; only its first half ever comes.
        whole = f'{{"orderNumber": "{order.order_number}"}}'.encode()
        body = whole[: len(whole) // 2]
        host, port = server.url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=10) as client:
            client.sendall(
                f"POST {BY_NUMBER} HTTP/1.1\r\nHost: test\r\napiCode: {api_code}\r\nAccept: application/json\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(whole)}\r\n\r\n".encode()
                + body
            )
            answer = _read_answer(client)

    assert answer.startswith(b"HTTP/1.1 408 ")
    assert b'"code":501' in answer
    with engine.connect() as connection:
        assert connection.scalar(select(orders.c.status).where(orders.c.order_id == order.order_id)) == "Ordered"


def test_a_body_that_arrives_in_parts_within_the_timeout_is_read_whole(
    settings: Settings, api_code: str, make_order: OrderFactory
) -> None:
    order = make_order()
    patient = dataclasses.replace(settings, body_timeout=2.0)
    whole = f'{{"orderNumber": "{order.order_number}"}}'.encode()

    with LiveServer(patient) as server:
        answer = _post_slowly(server.url, api_code, [whole[:5], whole[5:12], whole[12:]], pause=0.2)

    assert answer.startswith(b"HTTP/1.1 200 ")
    assert b'"isCanceled":true' in answer


def test_what_startup_built_is_frozen_out_of_full_garbage_collections(server: LiveServer) -> None:
    # A full collection walking every loaded module under load was most of the p99 (see the
    # README's Performance section); startup freezes them.
    assert gc.get_freeze_count() > 1000
