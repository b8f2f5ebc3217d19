"""Tenants and secrets: one API code never reaches another's orders, and codes are never kept in clear."""

from __future__ import annotations

import uuid
from pathlib import Path

import httpx
import orjson
import pytest
from sqlalchemy import Engine, select

from ordercancel import cli
from ordercancel.config import Environment, Settings
from ordercancel.domain import hash_api_code
from ordercancel.storage import service
from ordercancel.storage.schema import metadata
from tests.support.live import LiveServer
from tests.support.orders import OrderFactory
from tests.support.wire import BY_ID, BY_NUMBER

FORMATS = [("application/json", "application/json"), ("text/xml", "text/xml")]


def _body(content_type: str, field: str, value: str) -> bytes:
    if content_type.endswith("json"):
        return orjson.dumps({field: value})
    return f"<CancelOrderRequest><{field}>{value}</{field}></CancelOrderRequest>".encode()


def _cancel(http: httpx.Client, path: str, code: str, fmt: tuple[str, str], value: str) -> httpx.Response:
    content_type, accept = fmt
    field = "orderId" if path == BY_ID else "orderNumber"
    return http.post(
        path,
        content=_body(content_type, field, value),
        headers={"apiCode": code, "Content-Type": content_type, "Accept": accept},
    )


@pytest.mark.parametrize("fmt", FORMATS, ids=["json", "xml"])
@pytest.mark.parametrize("path", [BY_NUMBER, BY_ID], ids=["by-number", "by-id"])
def test_another_codes_order_is_answered_exactly_like_an_unknown_one(
    http: httpx.Client,
    api_code: str,
    *,
    make_order: OrderFactory,
    engine: Engine,
    settings: Settings,
    path: str,
    fmt: tuple[str, str],
) -> None:
    other_code = service.create_key(engine, settings.environment, "another tenant")
    theirs = make_order(api_code=other_code, number="IMC500001")
    if path == BY_NUMBER:
        ref, unknown_ref, code = theirs.order_number, "IMC500999", b"505"
    else:
        ref, unknown_ref, code = theirs.order_id, str(uuid.uuid4()), b"504"
    foreign = _cancel(http, path, api_code, fmt, ref)
    unknown = _cancel(http, path, api_code, fmt, unknown_ref)
    assert foreign.status_code == unknown.status_code == 200
    assert foreign.headers["content-type"] == unknown.headers["content-type"]
    # Byte for byte, once an echoed value is put in the other's place (by ID nothing is echoed).
    assert foreign.content.replace(ref.encode(), unknown_ref.encode()) == unknown.content
    assert code in foreign.content
    assert theirs.order_id.encode() not in foreign.content
    assert service.find_order(engine, theirs.order_id).status == "Ordered"
    # And the order is still theirs to cancel.
    assert _cancel(http, path, other_code, FORMATS[0], ref).json()["isCanceled"] is True


@pytest.mark.parametrize("state", ["Cancelled", "InProduction", "Draft"])
def test_another_codes_order_does_not_reveal_its_state(
    http: httpx.Client, api_code: str, *, make_order: OrderFactory, engine: Engine, settings: Settings, state: str
) -> None:
    other_code = service.create_key(engine, settings.environment, "another tenant")
    theirs = make_order(api_code=other_code, status=state, number="IMC500002")
    answer = _cancel(http, BY_NUMBER, api_code, FORMATS[0], theirs.order_number).json()
    assert answer["requestError"]["code"] == 505


def _all_stored_bytes(settings: Settings, engine: Engine) -> bytes:
    """Every byte SQLite keeps (file and WAL, every page); on PostgreSQL every row of every table."""
    path = settings.sqlite_path()
    if path is not None:
        return b"".join(p.read_bytes() for p in path.parent.glob(path.name + "*"))
    with engine.connect() as connection:
        return repr([connection.execute(select(table)).all() for table in metadata.sorted_tables]).encode()


def test_api_codes_are_stored_only_as_their_hash(
    http: httpx.Client, api_code: str, make_order: OrderFactory, settings: Settings, engine: Engine
) -> None:
    order = make_order()
    for code in (api_code, api_code.upper()):
        _cancel(http, BY_NUMBER, code, FORMATS[0], order.order_number)
    _cancel(http, BY_NUMBER, api_code, FORMATS[1], "IMC999999")
    engine.dispose()
    stored = _all_stored_bytes(settings, engine)
    for form in (api_code, api_code.upper(), api_code.replace("-", ""), uuid.UUID(api_code).bytes):
        assert (form.encode() if isinstance(form, str) else form) not in stored
    assert hash_api_code(api_code).encode() in stored


def test_an_api_code_is_shown_once_at_creation_and_never_listed(
    settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    common = ["--database-url", settings.database_url, "--environment", "sandbox"]
    assert cli.main(["keys", "create", "--name", "acme", *common]) == 0
    code = capsys.readouterr().out.strip()
    assert uuid.UUID(code)
    assert cli.main(["keys", "list", "--json", *common]) == 0
    listed = capsys.readouterr().out
    assert "acme" in listed
    assert code not in listed.lower()
    assert hash_api_code(code) not in listed


def test_sandbox_codes_are_unauthorized_in_production_and_the_other_way_round(
    settings: Settings, engine: Engine, tmp_path: Path
) -> None:
    sandbox_code = service.create_key(engine, Environment.SANDBOX, "sandbox")
    production_code = service.create_key(engine, Environment.PRODUCTION, "production")
    sandbox_order = service.create_order(engine, Environment.SANDBOX, sandbox_code)
    production_order = service.create_order(engine, Environment.PRODUCTION, production_code)
    production = Settings(database_url=settings.database_url, environment=Environment.PRODUCTION)
    with LiveServer(production) as live, httpx.Client(base_url=live.url) as http:
        refused = _cancel(http, BY_NUMBER, sandbox_code, FORMATS[0], sandbox_order.order_number)
        assert refused.status_code == 401
        assert refused.json() == {"isCanceled": False, "requestError": {"message": "Unauthorized", "code": 401}}
        assert _cancel(http, BY_NUMBER, production_code, FORMATS[0], production_order.order_number).json()["isCanceled"]
    with LiveServer(settings) as live, httpx.Client(base_url=live.url) as http:
        assert _cancel(http, BY_NUMBER, production_code, FORMATS[0], production_order.order_number).status_code == 401
        assert _cancel(http, BY_NUMBER, sandbox_code, FORMATS[0], sandbox_order.order_number).json()["isCanceled"]


def test_a_revoked_code_is_unauthorized_at_once(
    http: httpx.Client, api_code: str, make_order: OrderFactory, engine: Engine, settings: Settings
) -> None:
    order = make_order()
    service.revoke_key(engine, settings.environment, api_code)
    assert _cancel(http, BY_NUMBER, api_code, FORMATS[0], order.order_number).status_code == 401
    assert service.find_order(engine, order.order_number).status == "Ordered"
