"""The SQLite anchor for `make bench`: the smallest server that does the same durable cancellation.

Raw ASGI on the same uvicorn (uvloop, httptools), one `UPDATE … RETURNING` per request, and the
SQLite work on the event loop's own thread: the requests of one loop turn are cancelled in one
transaction, committed with `synchronous=FULL` (one fsync), and only then answered. No
authentication, negotiation, XML, audit row, log line or metrics: what is left is the price of
a durable cancellation over HTTP in Python, which the service is held against.
`BENCH_DATABASE_URL` names the database (`sqlite:///path`); `uvicorn --factory
bench.minimal_sqlite_app:create_app`.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
from datetime import UTC, datetime
from typing import Any

import orjson

CANCEL = (
    "UPDATE orders SET status = 'Cancelled', cancelled_at = ? WHERE order_number = ? "
    "AND status IN ('Ordered', 'Processing') AND payment_status <> 'PaymentNOK' AND engineer IS NULL "
    "RETURNING order_id, order_number"
)
_HEADERS = [(b"content-type", b"application/json; charset=utf-8")]


class TurnCommitter:
    """Collect the cancellations of one event-loop turn and commit them together, on the loop."""

    def __init__(self, path: str) -> None:
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode = WAL")
        self._db.execute("PRAGMA synchronous = FULL")
        self._pending: list[tuple[str, asyncio.Future[tuple[str, str] | None]]] = []

    def cancel(self, number: str) -> asyncio.Future[tuple[str, str] | None]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[tuple[str, str] | None] = loop.create_future()
        if not self._pending:
            loop.call_soon(self._commit)
        self._pending.append((number, future))
        return future

    def _commit(self) -> None:
        pending, self._pending = self._pending, []
        now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        rows = [db.execute(CANCEL, (now, number)).fetchone() for number, _ in pending]
        db.execute("COMMIT")  # the fsync: nobody is answered before their change is durable
        for (_, future), row in zip(pending, rows, strict=True):
            if not future.cancelled():
                future.set_result(row)

    def close(self) -> None:
        self._db.close()


def create_app() -> Any:
    committer: TurnCommitter | None = None

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        nonlocal committer
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    committer = TurnCommitter(os.environ["BENCH_DATABASE_URL"].removeprefix("sqlite:///"))
                    await send({"type": "lifespan.startup.complete"})
                else:
                    if committer is not None:
                        committer.close()
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        body = b""
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        if scope["method"] != "POST" or committer is None:  # /healthz, asked once the orders ran out
            await send({"type": "http.response.start", "status": 200, "headers": _HEADERS})
            await send({"type": "http.response.body", "body": b'{"status":"ok"}'})
            return
        number = orjson.loads(body)["orderNumber"]
        row = await committer.cancel(number)
        answer: dict[str, object] = {"orderNumber": number, "isCanceled": False}
        if row is not None:
            answer = {"orderId": row[0], "orderNumber": row[1], "isCanceled": True}
        await send({"type": "http.response.start", "status": 200, "headers": _HEADERS})
        await send({"type": "http.response.body", "body": orjson.dumps(answer)})

    return app
