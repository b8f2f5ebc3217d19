"""The PostgreSQL anchor for `make bench`: a minimal raw-ASGI server, one statement per cancel.

No authentication, negotiation, XML or audit record: a psycopg 3 async pool of 8 and the
single conditional UPDATE, JSON in and out. `BENCH_DATABASE_URL` names the database.
"""

from __future__ import annotations

import os
from typing import Any

import orjson
from psycopg_pool import AsyncConnectionPool

CANCEL = (
    "UPDATE orders SET status = 'Cancelled', cancelled_at = now() WHERE order_number = %s "
    "AND status IN ('Ordered', 'Processing') AND payment_status <> 'PaymentNOK' AND engineer IS NULL "
    "RETURNING order_id, order_number"
)
_HEADERS = [(b"content-type", b"application/json; charset=utf-8")]


def create_app() -> Any:
    pool = AsyncConnectionPool(os.environ["BENCH_DATABASE_URL"], min_size=8, max_size=8, open=False)

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await pool.open(wait=True)
                    await send({"type": "lifespan.startup.complete"})
                else:
                    await pool.close()
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        body = b""
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        if scope["method"] != "POST":  # /healthz, which wrk asks once it has run out of orders
            await send({"type": "http.response.start", "status": 200, "headers": _HEADERS})
            await send({"type": "http.response.body", "body": b'{"status":"ok"}'})
            return
        number = orjson.loads(body)["orderNumber"]
        async with pool.connection() as connection:
            row = await (await connection.execute(CANCEL, (number,))).fetchone()
        answer: dict[str, object] = {"orderNumber": number, "isCanceled": row is not None}
        if row is not None:
            answer = {"orderId": row[0], "orderNumber": row[1], "isCanceled": True}
        await send({"type": "http.response.start", "status": 200, "headers": _HEADERS})
        await send({"type": "http.response.body", "body": orjson.dumps(answer)})

    return app
