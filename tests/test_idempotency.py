"""Safe retries: Idempotency-Key on both cancel endpoints, and the reason and note of a cancellation."""

from __future__ import annotations

import dataclasses
import json
import socket
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from sqlalchemy import Engine, func, select, text

from ordercancel.config import Settings
from ordercancel.domain import ProductionStatus
from ordercancel.storage import service
from ordercancel.storage.schema import cancellation_attempts, idempotency_keys, orders
from tests.support import rawhttp
from tests.support.live import LiveServer
from tests.support.orders import OrderFactory
from tests.support.serving import ServeProcess
from tests.support.wire import BY_ID, BY_NUMBER

JSON = {"Content-Type": "application/json", "Accept": "application/json"}
XML = {"Content-Type": "text/xml", "Accept": "text/xml"}
KEY = "8e03978e-40d5-43e8-bc93-6894a57f9324"
BAD_KEY = {"code": 400, "message": "Idempotency-Key must be 1-255 visible ASCII characters."}
REUSED = {"code": 422, "message": "Idempotency-Key has been used with a different request."}
IN_FLIGHT = {"code": 409, "message": "A request with this Idempotency-Key is being processed. Retry later."}


def _post(http: httpx.Client, code: str, body: str, key: str | None = None, path: str = BY_NUMBER) -> httpx.Response:
    headers = {"apiCode": code, **(XML if body.startswith("<") else JSON)}
    if key is not None:
        headers["Idempotency-Key"] = key
    return http.post(path, content=body, headers=headers)


def _by_number(number: str, **extra: str) -> str:
    fields = ", ".join(f'"{k}": "{v}"' for k, v in {"orderNumber": number, **extra}.items())
    return "{" + fields + "}"


def _count(engine: Engine, table: object) -> int:
    with engine.connect() as connection:
        return int(connection.scalar(select(func.count()).select_from(table)) or 0)  # type: ignore[arg-type]


def _attempts(engine: Engine) -> list[tuple[int, bool]]:
    with engine.connect() as connection:
        query = select(cancellation_attempts.c.outcome, cancellation_attempts.c.replayed).order_by(
            cancellation_attempts.c.id
        )
        return [(row.outcome, bool(row.replayed)) for row in connection.execute(query)]


# The header -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    ["", '""', "a b", "é", "x" * 256, '"unclosed', '"a"b"', '"bad\\escape"', "tab\there"],
    ids=[
        "empty",
        "empty-string",
        "space",
        "non-ascii",
        "256-chars",
        "unclosed-quote",
        "inner-quote",
        "bad-escape",
        "tab",
    ],
)
def test_a_malformed_key_is_refused_400_and_nothing_is_recorded(
    server: LiveServer, engine: Engine, api_code: str, make_order: OrderFactory, value: str
) -> None:
    order = make_order()
    body = _by_number(order.order_number).encode()
    headers = {"apiCode": api_code, **JSON, "Content-Length": str(len(body))}
    port = int(server.url.rsplit(":", 1)[1])
    answer = rawhttp.request(
        port, rawhttp.head("POST", BY_NUMBER, headers)[:-2] + b"Idempotency-Key: " + value.encode() + b"\r\n\r\n", body
    )
    assert answer.status == 400
    assert json.loads(answer.body) == {"isCanceled": False, "requestError": BAD_KEY}
    assert _count(engine, cancellation_attempts) == 0
    assert _count(engine, idempotency_keys) == 0
    assert service.find_order(engine, order.order_number).status is ProductionStatus.ORDERED


def test_the_bare_and_the_structured_field_forms_are_the_same_key(
    http: httpx.Client, engine: Engine, api_code: str, make_order: OrderFactory
) -> None:
    order = make_order()
    first = _post(http, api_code, _by_number(order.order_number), KEY)
    again = _post(http, api_code, _by_number(order.order_number), f'"{KEY}"')
    assert first.json()["isCanceled"] is True and "idempotent-replayed" not in first.headers
    assert again.json() == first.json()
    assert again.headers["idempotent-replayed"] == "true"
    assert _post(http, api_code, _by_number(order.order_number), "x" * 255).json()["requestError"]["code"] == 507


# Replays ------------------------------------------------------------------------------------------


def test_a_retry_of_a_success_is_the_success_again_in_its_own_format_and_changes_nothing(
    http: httpx.Client, engine: Engine, api_code: str, make_order: OrderFactory
) -> None:
    order = make_order()
    first = _post(http, api_code, _by_number(order.order_number, reason="DuplicateOrder"), KEY)
    xml = (
        f"<CancelOrderByNumberRequest><orderNumber> {order.order_number} </orderNumber>"
        "<reason>DuplicateOrder</reason></CancelOrderByNumberRequest>"
    )
    replayed = _post(http, api_code, xml, KEY)
    assert first.json() == {"orderId": order.order_id, "orderNumber": order.order_number, "isCanceled": True}
    assert replayed.status_code == 200
    assert replayed.headers["content-type"] == "text/xml; charset=utf-8"
    assert replayed.headers["idempotent-replayed"] == "true"
    assert "<isCanceled>true</isCanceled>" in replayed.text
    assert f"<orderId>{order.order_id}</orderId>" in replayed.text
    assert _attempts(engine) == [(0, False), (0, True)]  # audited as a replay
    with engine.connect() as connection:
        cancelled = connection.execute(select(orders.c.cancelled_at).where(orders.c.order_id == order.order_id))
        assert len(cancelled.all()) == 1


def test_a_refusal_is_kept_and_told_again_too(http: httpx.Client, api_code: str, make_order: OrderFactory) -> None:
    first = _post(http, api_code, _by_number("IMC999999"), KEY)
    make_order(number="IMC999999")  # the order exists now, but the key keeps its first answer
    again = _post(http, api_code, _by_number("IMC999999"), KEY)
    assert first.json()["requestError"]["code"] == 505
    assert again.json() == first.json()
    assert again.headers["idempotent-replayed"] == "true"


@pytest.mark.parametrize(
    ("second_path", "second_body"),
    [
        (BY_NUMBER, _by_number("IMC000002")),
        (BY_NUMBER, _by_number("IMC000001", reason="Other")),
        (BY_NUMBER, _by_number("IMC000001", note="changed my mind")),
        (BY_ID, '{"orderId": "2886e16f-ac67-49ae-8685-cc63974cd458"}'),
    ],
    ids=["another-order", "another-reason", "another-note", "another-endpoint"],
)
def test_the_same_key_for_a_different_request_is_refused_422(
    http: httpx.Client, engine: Engine, api_code: str, make_order: OrderFactory, second_path: str, second_body: str
) -> None:
    make_order(number="IMC000001")
    spared = make_order(number="IMC000002")
    assert _post(http, api_code, _by_number("IMC000001"), KEY).json()["isCanceled"] is True
    reused = _post(http, api_code, second_body, KEY, second_path)
    assert reused.status_code == 422
    assert reused.json() == {"isCanceled": False, "requestError": REUSED}
    assert service.find_order(engine, spared.order_number).status is ProductionStatus.ORDERED


def test_keys_are_scoped_to_the_api_code(
    http: httpx.Client, engine: Engine, settings: Settings, api_code: str, make_order: OrderFactory
) -> None:
    other = service.create_key(engine, settings.environment, "other")
    mine, theirs = make_order(), make_order(api_code=other)
    assert _post(http, api_code, _by_number(mine.order_number), KEY).json()["isCanceled"] is True
    answer = _post(http, other, _by_number(theirs.order_number), KEY)
    assert answer.json()["isCanceled"] is True
    assert "idempotent-replayed" not in answer.headers


def test_a_401_keeps_nothing(http: httpx.Client, engine: Engine, make_order: OrderFactory) -> None:
    answer = _post(http, "0f8fad5b-d9cb-469f-a165-70867728950e", _by_number(make_order().order_number), KEY)
    assert answer.status_code == 401
    assert _count(engine, idempotency_keys) == 0


def test_without_the_header_a_retry_is_answered_as_always(
    http: httpx.Client, api_code: str, make_order: OrderFactory
) -> None:
    order = make_order()
    assert _post(http, api_code, _by_number(order.order_number)).json()["isCanceled"] is True
    assert _post(http, api_code, _by_number(order.order_number)).json()["requestError"]["code"] == 507


def test_an_expired_key_is_taken_anew_and_pruned(
    settings: Settings, engine: Engine, api_code: str, make_order: OrderFactory
) -> None:
    first, second = make_order(), make_order()
    with (
        LiveServer(dataclasses.replace(settings, idempotency_ttl=1.0)) as live,
        httpx.Client(base_url=live.url, timeout=10) as http,
    ):
        assert _post(http, api_code, _by_number(first.order_number), KEY).json()["isCanceled"] is True
        time.sleep(1.2)
        answer = _post(http, api_code, _by_number(second.order_number), KEY)
    assert answer.json()["isCanceled"] is True and "idempotent-replayed" not in answer.headers
    assert _count(engine, idempotency_keys) == 1
    time.sleep(1.2)
    from ordercancel.cli import main

    assert main(["db", "prune", "--database-url", settings.database_url]) == 0
    assert _count(engine, idempotency_keys) == 0


def test_a_replay_after_the_answer_was_cut_off_is_the_success(
    server: LiveServer, engine: Engine, api_code: str, make_order: OrderFactory
) -> None:
    order = make_order()
    body = _by_number(order.order_number).encode()
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as raw:
        raw.sendall(
            f"POST {BY_NUMBER} HTTP/1.1\r\nHost: x\r\napiCode: {api_code}\r\nContent-Type: application/json\r\n"
            f"Idempotency-Key: {KEY}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        deadline = time.monotonic() + 10
        while service.find_order(engine, order.order_number).status is not ProductionStatus.CANCELLED:
            assert time.monotonic() < deadline, "the request was never processed"
            time.sleep(0.02)
        raw.shutdown(socket.SHUT_RDWR)  # the answer, never read, is lost with the connection
    with httpx.Client(base_url=server.url, timeout=10) as http:
        retried = _post(http, api_code, body.decode(), KEY)
    assert retried.json() == {"orderId": order.order_id, "orderNumber": order.order_number, "isCanceled": True}
    assert retried.headers["idempotent-replayed"] == "true"


# Reason and note ----------------------------------------------------------------------------------


def test_the_reason_and_note_are_kept_with_the_order_and_the_answer_is_unchanged(
    http: httpx.Client, engine: Engine, api_code: str, make_order: OrderFactory
) -> None:
    order = make_order()
    xml = (
        f"<CancelOrderByNumberRequest><orderNumber>{order.order_number}</orderNumber>"
        "<reason>WrongModel</reason><note>uploaded the old STL</note></CancelOrderByNumberRequest>"
    )
    answer = _post(http, api_code, xml)
    assert answer.text == (
        '<?xml version="1.0" encoding="utf-8"?><CancelOrderResponse>'
        f"<orderId>{order.order_id}</orderId><orderNumber>{order.order_number}</orderNumber>"
        "<isCanceled>true</isCanceled></CancelOrderResponse>"
    )
    with engine.connect() as connection:
        row = connection.execute(
            text(
                "SELECT cancellation_reason, cancellation_note, cancelled_by_key, cancelled_by_operator, "
                "cancelled_at FROM orders WHERE order_id = :id"
            ),
            {"id": order.order_id},
        ).one()
    key_id = service.list_keys(engine, service.Environment.SANDBOX)[0].id
    assert row[:4] == ("WrongModel", "uploaded the old STL", key_id, None)
    assert row[4] is not None


@pytest.mark.parametrize(
    "extra",
    [{"reason": "BecauseISaidSo"}, {"note": "x" * 501}, {"note": "bell\u0007"}],
    ids=["unknown-reason", "note-too-long", "note-not-printable"],
)
def test_a_bad_reason_or_note_is_501_and_changes_nothing(
    http: httpx.Client, engine: Engine, api_code: str, make_order: OrderFactory, extra: dict[str, str]
) -> None:
    order = make_order()
    answer = _post(http, api_code, _by_number(order.order_number, **extra).replace("\u0007", "\\u0007"))
    assert answer.json()["requestError"]["code"] == 501
    assert service.find_order(engine, order.order_number).status is ProductionStatus.ORDERED


# Exactly once through four workers -------------------------------------------------------------------


def _racing(serve: ServeProcess, code: str, bodies: list[str]) -> list[httpx.Response]:
    def one(body: str) -> httpx.Response:
        with serve.client(timeout=30) as http:  # a connection each: every worker takes some
            return _post(http, code, body, KEY)

    with ThreadPoolExecutor(len(bodies)) as pool:
        return list(pool.map(one, bodies))


@pytest.fixture
def four_workers(settings: Settings, tmp_path: Path) -> ServeProcess:
    serve = ServeProcess(settings.database_url, tmp_path / "serve.log", extra_args=("--workers", "4"))
    return serve.start(timeout=90)


@pytest.mark.subprocess
def test_fifty_concurrent_requests_with_one_key_for_one_order_cancel_it_once(
    four_workers: ServeProcess, engine: Engine, api_code: str, make_order: OrderFactory
) -> None:
    order = make_order()
    try:
        answers = _racing(four_workers, api_code, [_by_number(order.order_number)] * 50)
    finally:
        four_workers.stop()
    kinds = Counter(
        "in-flight"
        if a.status_code == 409
        else "replay"
        if a.headers.get("idempotent-replayed") == "true"
        else "original"
        for a in answers
    )
    assert kinds["original"] == 1
    for a in answers:
        if a.status_code == 409:
            assert a.json()["requestError"] == IN_FLIGHT and a.headers["retry-after"] == "1"
        else:
            assert a.json() == {"orderId": order.order_id, "orderNumber": order.order_number, "isCanceled": True}
    assert [o for o, _ in _attempts(engine) if o == 0].count(0) == kinds["original"] + kinds["replay"]
    assert service.find_order(engine, order.order_number).status is ProductionStatus.CANCELLED


@pytest.mark.subprocess
def test_fifty_orders_sharing_one_key_execute_only_one(
    four_workers: ServeProcess, engine: Engine, api_code: str, make_order: OrderFactory
) -> None:
    numbers = [make_order().order_number for _ in range(50)]
    try:
        answers = _racing(four_workers, api_code, [_by_number(number) for number in numbers])
    finally:
        four_workers.stop()
    executed = [a for a in answers if a.status_code == 200]
    assert len(executed) == 1 and executed[0].json()["isCanceled"] is True
    assert {a.status_code for a in answers} <= {200, 409, 422}
    cancelled = [n for n in numbers if service.find_order(engine, n).status is ProductionStatus.CANCELLED]
    assert cancelled == [executed[0].json()["orderNumber"]]


# The client and its command line -------------------------------------------------------------------


class _LosesFirstAnswer(httpx.BaseTransport):
    """The network between client and server: the first answer never reaches the client."""

    def __init__(self) -> None:
        self._inner = httpx.HTTPTransport()
        self.keys: list[str | None] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self._inner.handle_request(request)
        response.read()
        self.keys.append(request.headers.get("idempotency-key"))
        if len(self.keys) == 1:
            raise httpx.ReadError("connection reset while the answer was on its way", request=request)
        return response

    def close(self) -> None:
        self._inner.close()


def test_the_client_retries_a_lost_success_with_the_same_key_and_gets_the_success(
    server: LiveServer, engine: Engine, api_code: str, make_order: OrderFactory
) -> None:
    from ordercancel.client import Client

    order = make_order()
    network = _LosesFirstAnswer()
    with Client(api_code, base_url=server.url, transport=network, backoff=0.01) as client:
        result = client.cancel_by_number(order.order_number, reason="CustomerRequest", note="by phone")
    assert (result.order_id, result.replayed, result.attempts) == (order.order_id, True, 2)
    assert network.keys[0] is not None and network.keys == [network.keys[0]] * 2  # one key for the whole call
    with engine.connect() as connection:
        reason = connection.scalar(
            text("SELECT cancellation_reason FROM orders WHERE order_id = :id"), {"id": order.order_id}
        )
    assert reason == "CustomerRequest"


def test_a_reused_key_raises_at_once_and_each_call_gets_a_key_of_its_own(
    server: LiveServer, api_code: str, make_order: OrderFactory
) -> None:
    from ordercancel.client import Client, IdempotencyKeyReused

    first, second, third = make_order(), make_order(), make_order()
    with Client(api_code, base_url=server.url) as client:
        client.cancel_by_number(first.order_number, idempotency_key=KEY)
        with pytest.raises(IdempotencyKeyReused) as raised:
            client.cancel_by_number(second.order_number, idempotency_key=KEY)
        assert (raised.value.status_code, raised.value.attempts) == (422, 1)
        assert client.cancel_by_number(second.order_number).replayed is False  # a fresh key per call
        assert client.cancel_by_id(third.order_id).replayed is False


def test_the_client_knows_the_reasons_the_domain_knows() -> None:
    from ordercancel.client import REASONS
    from ordercancel.domain import CancellationReason

    assert tuple(CancellationReason) == REASONS


def test_the_cli_sends_reason_note_and_key_and_says_when_an_answer_is_told_again(
    server: LiveServer, engine: Engine, api_code: str, make_order: OrderFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    from ordercancel.cli import main

    order = make_order()
    argv = ["cancel", order.order_number, "--api-code", api_code, "--url", server.url]
    argv += ["--reason", "WrongModel", "--note", "old STL", "--idempotency-key", KEY]
    assert main(argv) == 0
    assert main(argv) == 0
    out = capsys.readouterr().out.splitlines()
    assert "earlier request" not in out[0]
    assert out[1].endswith("(the answer to an earlier request with this Idempotency-Key)")
    with engine.connect() as connection:
        row = connection.execute(
            text("SELECT cancellation_reason, cancellation_note FROM orders WHERE order_id = :id"),
            {"id": order.order_id},
        ).one()
    assert tuple(row) == ("WrongModel", "old STL")


def test_orders_show_and_audit_list_say_why_by_whom_and_what_was_replayed(
    http: httpx.Client,
    engine: Engine,
    settings: Settings,
    api_code: str,
    make_order: OrderFactory,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from ordercancel.cli import main

    order = make_order()
    body = _by_number(order.order_number, reason="PriceOrDeliveryTime", note="found it cheaper")
    assert _post(http, api_code, body, KEY).json()["isCanceled"] is True
    assert _post(http, api_code, body, KEY).headers["idempotent-replayed"] == "true"
    url = ["--database-url", settings.database_url]
    assert main(["orders", "show", order.order_number, "--json", *url]) == 0
    shown = json.loads(capsys.readouterr().out)
    key_id = service.list_keys(engine, settings.environment)[0].id
    assert shown["cancellationReason"] == "PriceOrDeliveryTime"
    assert shown["cancellationNote"] == "found it cheaper"
    assert shown["cancelledBy"] == {"kind": "apiKey", "id": key_id}
    assert shown["cancelledAt"] is not None
    assert main(["audit", "list", "--order", order.order_number, "--json", *url]) == 0
    attempts = json.loads(capsys.readouterr().out)["attempts"]
    assert [(a["outcome"], a["replayed"]) for a in attempts] == [(0, False), (0, True)]
