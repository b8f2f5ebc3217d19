"""CPU cost of the fair-use checks per request: memory storage, Redis storage, and off.

Run: .venv/bin/python bench/fairuse_cost.py [redis://127.0.0.1:6379/0]
"""

from __future__ import annotations

import asyncio
import sys
import time

from ordercancel.http.fairuse import FairUse

ROUNDS = 20_000


async def per_request(fair_use: FairUse, rounds: int) -> float:
    """Return the CPU µs one request spends in the checks an authenticated request passes."""
    start = time.process_time()
    for _ in range(rounds):
        await fair_use.address_throttled("203.0.113.7")
        await fair_use.admit_key("a" * 64, None)
    return (time.process_time() - start) / rounds * 1e6


async def main(redis_url: str | None) -> None:
    cases = {
        "off (no ORDERCANCEL_RATE_LIMIT)": FairUse(rate_limit=None, auth_failures=20, storage_url=None),
        "memory": FairUse(rate_limit="1000000/second", auth_failures=20, storage_url=None),
    }
    if redis_url:
        cases["redis"] = FairUse(rate_limit="1000000/second", auth_failures=20, storage_url=redis_url)
    for name, fair_use in cases.items():
        rounds = ROUNDS if name != "redis" else ROUNDS // 10
        await per_request(fair_use, rounds // 10)  # warm up
        print(f"{name}: {await per_request(fair_use, rounds):.1f} CPU µs per request")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else None))
