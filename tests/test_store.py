"""The hot path's stores, on both backends, beyond what the contract tests see."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from sqlalchemy import Engine, text

from ordercancel.config import Environment, Settings
from ordercancel.storage import open_store, service
from tests.support.orders import OrderFactory
from tests.support.postgres import PostgresSchemas, postgres_url
from tests.support.wire import BY_ID


def test_a_cancellation_records_when_it_happened_in_utc(
    http: httpx.Client, engine: Engine, api_code: str, make_order: OrderFactory
) -> None:
    order = make_order()
    before = datetime.now(UTC)
    http.post(BY_ID, json={"orderId": order.order_id}, headers={"apiCode": api_code}).raise_for_status()
    cancelled_at = service.find_order(engine, order.order_id).cancelled_at
    assert cancelled_at is not None
    assert cancelled_at.utcoffset() == timedelta(0)
    assert before - timedelta(seconds=1) <= cancelled_at <= datetime.now(UTC) + timedelta(seconds=1)
    with engine.connect() as connection:
        at = connection.execute(text("SELECT at FROM cancellation_attempts")).scalar_one()
    assert at is not None


@pytest.mark.postgres
@pytest.mark.parametrize("scheme", ["postgresql", "postgres", "postgresql+psycopg"])
def test_every_spelling_of_a_postgresql_url_opens_the_store(postgres_schemas: PostgresSchemas, scheme: str) -> None:
    name = postgres_schemas.create()
    url = postgres_url(name).replace("postgresql://", f"{scheme}://", 1)
    store = open_store(Settings(database_url=url, environment=Environment.SANDBOX, pool_size=1))

    async def check() -> None:
        await store.start()
        try:
            await store.ping()
            assert await store.authenticate("0" * 64) is None
        finally:
            await store.close()

    try:
        asyncio.run(check())
    finally:
        postgres_schemas.drop(name)
