"""Benchmark: successful cancellations per second through each store (no HTTP).

    .venv/bin/python bench/cancel_store.py [--orders 5000] [--concurrency 64] [--pool-size 8]

Each backend gets a fresh migrated database with ORDERS orders; every order is then cancelled
once by CONCURRENCY concurrent tasks, and the count of cancelled rows is checked. Figures drift
from machine to machine: compare the backends with each other in one run, not across runs.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
import uuid
from pathlib import Path

from sqlalchemy import Engine, func, insert, select

from ordercancel.config import Environment, Settings
from ordercancel.domain import Lookup, ProductionStatus
from ordercancel.storage import Attempt, database, open_store, service
from ordercancel.storage.schema import api_keys, orders

POSTGRES = "postgresql://postgres@127.0.0.1:5432/test"


def seed(engine: Engine, count: int) -> tuple[int, list[str]]:
    service.create_key(engine, Environment.SANDBOX, "bench")
    with engine.begin() as connection:
        key_id = int(connection.scalar(select(func.max(api_keys.c.id))) or 0)
        rows = [
            {
                "order_id": str(uuid.uuid4()),
                "order_number": f"B{i:08d}",
                "api_key_id": key_id,
                "status": "Ordered",
                "payment_status": "PaymentOK",
                "created_at": database.utcnow(),
                "placed_at": database.utcnow(),
            }
            for i in range(count)
        ]
        connection.execute(insert(orders), rows)
    return key_id, [str(row["order_number"]) for row in rows]


async def cancel_all(settings: Settings, key_id: int, numbers: list[str], concurrency: int) -> float:
    store = open_store(settings)
    await store.start()
    gate = asyncio.Semaphore(concurrency)

    async def one(number: str) -> None:
        async with gate:
            outcome = await store.cancel(Attempt(key_id, "bench", Lookup(False, number)))
            assert outcome.is_canceled

    started = time.perf_counter()
    await asyncio.gather(*(one(n) for n in numbers))
    elapsed = time.perf_counter() - started
    await store.close()
    return elapsed


def run(settings: Settings, count: int, concurrency: int) -> float:
    engine = database.create_sync_engine(settings)
    database.upgrade(engine)
    key_id, numbers = seed(engine, count)
    elapsed = asyncio.run(cancel_all(settings, key_id, numbers, concurrency))
    with engine.connect() as connection:
        cancelled = connection.scalar(select(func.count()).where(orders.c.status == ProductionStatus.CANCELLED.value))
    engine.dispose()
    assert cancelled == count, (cancelled, count)
    return count / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--orders", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--pool-size", type=int, default=8)
    parser.add_argument("--postgres", default=POSTGRES, help="server URL; a fresh schema is made and dropped")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        sqlite = Settings(database_url=f"sqlite:///{Path(directory) / 'bench.db'}")
        print(f"sqlite (group commit, synchronous=FULL): {run(sqlite, args.orders, args.concurrency):8.0f} cancels/s")
    import psycopg

    schema = f"ordercancel_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(args.postgres, autocommit=True) as admin:
        admin.execute(f'CREATE SCHEMA "{schema}"')
        try:
            url = f"{args.postgres}?options=-csearch_path%3D{schema}"
            postgres = Settings(database_url=url, pool_size=args.pool_size)
            rate = run(postgres, args.orders, args.concurrency)
            print(f"postgresql (psycopg pool of {args.pool_size}):        {rate:8.0f} cancels/s")
        finally:
            admin.execute(f'DROP SCHEMA "{schema}" CASCADE')


if __name__ == "__main__":
    main()
