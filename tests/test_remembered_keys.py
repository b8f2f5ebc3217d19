"""Active API codes are remembered for a few seconds; revocation still takes effect at once."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import httpx
import pytest
from sqlalchemy import Engine, func, select

from ordercancel.config import Settings
from ordercancel.storage import RememberedKeys, open_store, service
from ordercancel.storage.schema import cancellation_attempts
from tests.support.orders import OrderFactory
from tests.support.wire import BY_NUMBER, decode


def test_a_code_revoked_while_remembered_cannot_cancel_anything(
    http: httpx.Client, api_code: str, make_order: OrderFactory, engine: Engine, settings: Settings
) -> None:
    first, second = make_order(), make_order()
    headers = {"apiCode": api_code, "Accept": "application/json"}
    assert decode(http.post(BY_NUMBER, json={"orderNumber": first.order_number}, headers=headers))["isCanceled"]
    service.revoke_key(engine, settings.environment, api_code)  # the server still remembers the code
    response = http.post(BY_NUMBER, json={"orderNumber": second.order_number}, headers=headers)
    assert response.status_code == 401
    assert decode(response)["requestError"] == {"message": "Unauthorized", "code": 401}
    assert service.find_order(engine, second.order_id).status == "Ordered"
    with engine.connect() as connection:
        assert connection.scalar(select(func.count()).select_from(cancellation_attempts)) == 1


def test_a_remembered_code_is_looked_up_again_once_its_time_is_up(
    settings: Settings, engine: Engine, api_code: str
) -> None:
    now = [0.0]
    store = RememberedKeys(open_store(replace(settings, key_cache_seconds=0)), seconds=5, clock=lambda: now[0])
    code_hash = service.hash_api_code(api_code)

    async def scenario() -> list[int | None]:
        await store.start()
        try:
            seen = [await store.authenticate(code_hash)]
            service.revoke_key(engine, settings.environment, api_code)
            now[0] = 4.9
            seen.append(await store.authenticate(code_hash))  # still remembered: only a hint
            now[0] = 5.1
            seen.append(await store.authenticate(code_hash))  # looked up again: revoked
            seen.append(await store.authenticate(service.hash_api_code("0f8fad5b-d9cb-469f-a165-70867728950e")))
            return seen
        finally:
            await store.close()

    key_id, remembered, expired, unknown = asyncio.run(scenario())
    assert key_id is not None
    assert remembered == key_id
    assert (expired, unknown) == (None, None)


def test_remembering_can_be_turned_off(settings: Settings) -> None:
    assert isinstance(open_store(settings), RememberedKeys)
    assert not isinstance(open_store(replace(settings, key_cache_seconds=0)), RememberedKeys)


@pytest.mark.parametrize("body", [b"not json", b'{"orderNumber":"a b"}', b"{}", b'{"orderNumber": "IMC999999"}'])
def test_a_code_revoked_while_remembered_is_refused_401_whatever_its_body_and_nothing_is_recorded(
    http: httpx.Client, api_code: str, make_order: OrderFactory, engine: Engine, settings: Settings, body: bytes
) -> None:
    headers = {"apiCode": api_code, "Accept": "application/json", "Content-Type": "application/json"}
    assert decode(http.post(BY_NUMBER, json={"orderNumber": make_order().order_number}, headers=headers))["isCanceled"]
    service.revoke_key(engine, settings.environment, api_code)  # the server still remembers the code
    response = http.post(BY_NUMBER, content=body, headers=headers)
    assert (response.status_code, decode(response)["requestError"]["code"]) == (401, 401)
    with engine.connect() as connection:
        assert connection.scalar(select(func.count()).select_from(cancellation_attempts)) == 1


def test_a_code_revoked_while_remembered_gets_401_not_413_for_a_body_too_large(
    http: httpx.Client, api_code: str, make_order: OrderFactory, engine: Engine, settings: Settings
) -> None:
    headers = {"apiCode": api_code, "Accept": "application/json"}
    assert decode(http.post(BY_NUMBER, json={"orderNumber": make_order().order_number}, headers=headers))["isCanceled"]
    assert http.post(BY_NUMBER, content=b" " * (settings.max_body_bytes + 1), headers=headers).status_code == 413
    service.revoke_key(engine, settings.environment, api_code)
    response = http.post(BY_NUMBER, content=b" " * (settings.max_body_bytes + 1), headers=headers)
    assert response.status_code == 401
