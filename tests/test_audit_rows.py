"""Every attempt keeps exactly one audit row, whichever statement writes it (SQLite's trigger, PostgreSQL's CTE)."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from sqlalchemy import Engine, text

from ordercancel.config import Settings
from ordercancel.storage import service
from tests.support.live import LiveServer
from tests.support.orders import OrderFactory
from tests.support.wire import BY_ID, BY_NUMBER


def _rows(engine: Engine) -> list[tuple[object, ...]]:
    """Every audit row, with its order's number and cancellation time, in insertion order."""
    with engine.connect() as connection:
        return [
            tuple(row)
            for row in connection.execute(
                text(
                    "SELECT a.request_id, a.outcome, a.api_key_id, o.order_number, a.replayed, a.operator, "
                    "a.at = o.cancelled_at FROM cancellation_attempts a LEFT JOIN orders o ON o.id = a.order_ref "
                    "ORDER BY a.id"
                )
            )
        ]


def _key_id(engine: Engine, settings: Settings) -> int:
    return service.list_keys(engine, settings.environment)[0].id


def test_each_successful_cancellation_has_one_audit_row_with_its_request_id(
    http: httpx.Client, engine: Engine, settings: Settings, api_code: str, make_order: OrderFactory
) -> None:
    by_number, by_id, idempotent = make_order(), make_order(), make_order()
    headers = {"apiCode": api_code, "Accept": "application/json"}
    http.post(BY_NUMBER, json={"orderNumber": by_number.order_number}, headers={**headers, "X-Request-ID": "s-1"})
    http.post(BY_ID, json={"orderId": by_id.order_id}, headers={**headers, "X-Request-ID": "s-2"})
    answer = http.post(
        BY_NUMBER,
        json={"orderNumber": idempotent.order_number},
        headers={**headers, "X-Request-ID": "s-3", "Idempotency-Key": "k-1"},
    )
    assert answer.json()["isCanceled"] is True
    key = _key_id(engine, settings)

    assert _rows(engine) == [
        ("s-1", 0, key, by_number.order_number, False, None, True),
        ("s-2", 0, key, by_id.order_number, False, None, True),
        ("s-3", 0, key, idempotent.order_number, False, None, True),
    ]


def test_refusals_replays_and_successes_each_keep_one_row_in_order(
    http: httpx.Client, engine: Engine, settings: Settings, api_code: str, make_order: OrderFactory
) -> None:
    order = make_order()
    headers = {"apiCode": api_code, "Accept": "application/json"}
    body = {"orderNumber": order.order_number}
    http.post(BY_NUMBER, json=body, headers={**headers, "X-Request-ID": "first", "Idempotency-Key": "k"})
    replay = http.post(BY_NUMBER, json=body, headers={**headers, "X-Request-ID": "replay", "Idempotency-Key": "k"})
    again = http.post(BY_NUMBER, json=body, headers={**headers, "X-Request-ID": "again"})
    missing = http.post(BY_NUMBER, json={"orderNumber": "IMC999999"}, headers={**headers, "X-Request-ID": "missing"})
    assert (
        replay.json()["isCanceled"],
        again.json()["requestError"]["code"],
        missing.json()["requestError"]["code"],
    ) == (
        True,
        507,
        505,
    )
    key = _key_id(engine, settings)

    rows = _rows(engine)

    assert [row[:5] for row in rows] == [
        ("first", 0, key, order.order_number, False),
        ("replay", 0, key, order.order_number, True),
        ("again", 507, key, order.order_number, False),
        ("missing", 505, key, None, False),
    ]


def test_an_operators_changes_write_no_api_audit_row(
    http: httpx.Client, engine: Engine, api_code: str, make_order: OrderFactory
) -> None:
    api, operated = make_order(), make_order()
    http.post(BY_NUMBER, json={"orderNumber": api.order_number}, headers={"apiCode": api_code, "X-Request-ID": "api"})
    service.set_status(engine, operated.order_number, "Cancelled", operator="ops", request_id="op-1")

    rows = _rows(engine)

    assert [(row[0], row[3], row[5]) for row in rows] == [
        ("api", api.order_number, None),
        ("op-1", operated.order_number, "ops"),
    ]


def test_many_concurrent_successes_committed_together_each_keep_their_own_row(
    server: LiveServer, engine: Engine, api_code: str, make_order: OrderFactory
) -> None:
    made = [make_order() for _ in range(40)]

    async def storm() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
            return await asyncio.gather(
                *(
                    client.post(
                        BY_NUMBER,
                        json={"orderNumber": order.order_number},
                        headers={"apiCode": api_code, "Accept": "application/json", "X-Request-ID": f"c-{n}"},
                    )
                    for n, order in enumerate(made)
                )
            )

    answers = asyncio.run(storm())

    assert all(answer.json()["isCanceled"] is True for answer in answers)
    recorded = {(row[0], row[3]) for row in _rows(engine)}
    assert len(_rows(engine)) == 40
    assert recorded == {(f"c-{n}", order.order_number) for n, order in enumerate(made)}


def test_on_sqlite_the_trigger_that_records_successes_is_in_the_migrated_schema(
    engine: Engine, settings: Settings
) -> None:
    if not settings.database_url.startswith("sqlite"):
        pytest.skip("PostgreSQL records a success in the cancellation's own statement (a CTE), without a trigger")
    with engine.connect() as connection:
        sql = connection.execute(
            text("SELECT sql FROM sqlite_master WHERE type = 'trigger' AND name = 'orders_record_cancellation'")
        ).scalar_one()

    assert "AFTER UPDATE OF cancel_request_id ON orders" in sql
