"""The client library against the real app: in-process (transport=) and over TCP, sync and async.

Every outcome code, in both formats; the exceptions carry the server's own code and message.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, text

from ordercancel import client as oc
from ordercancel import domain
from ordercancel.config import Environment, Settings
from ordercancel.domain import ProductionStatus
from ordercancel.http.app import admin_engine, create_app
from ordercancel.storage import Store, database, open_store, service
from ordercancel.storage.schema import cancellation_attempts
from tests.support.live import LiveServer
from tests.support.serving import free_port

# The deployment: one database, the app in this process and the same app on uvicorn ------------


@dataclass
class Deployment:
    settings: Settings
    engine: Engine
    api_code: str
    app: Any
    store: Store
    server: LiveServer

    def order(self, **fields: str) -> domain.Order:
        return service.create_order(self.engine, Environment.SANDBOX, self.api_code, **fields)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def deployment(migrated_sqlite: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    path = tmp_path_factory.mktemp("client") / "ordercancel.db"
    shutil.copy(migrated_sqlite, path)
    settings = Settings(database_url=f"sqlite:///{path}", environment=Environment.SANDBOX)
    engine = database.create_sync_engine(settings)
    api_code = service.create_key(engine, settings.environment, "client tests")
    store = open_store(settings)
    app = create_app(settings, store, admin_engine(settings))
    asyncio.run(store.start())  # httpx's ASGI transport runs no lifespan: start the store as it would
    try:
        with LiveServer(settings) as server:
            yield Deployment(settings, engine, api_code, app, store, server)
    finally:
        asyncio.run(store.close())
        engine.dispose()


class InProcess(httpx.BaseTransport):
    """The real ASGI app, called in this process for a synchronous client.

    httpx's ASGITransport is async only, so requests are handed to an event loop of our own.
    """

    def __init__(self, app: Any) -> None:
        self._asgi = httpx.ASGITransport(app=app)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        request.read()

        async def call() -> httpx.Response:
            response = await self._asgi.handle_async_request(request)
            return httpx.Response(response.status_code, headers=response.headers, content=await response.aread())

        return asyncio.run_coroutine_threadsafe(call(), self._loop).result(timeout=30)

    def close(self) -> None:
        if self._loop.is_closed():
            return
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()


class Api:
    """One way of calling the API (sync or async, in-process or TCP), used the same way by every test."""

    def __init__(self, deployment: Deployment, mode: str, format: oc.Format, **options: Any) -> None:
        self.mode = mode
        self.format: oc.Format = format
        self._deployment = deployment
        self._options = {"base_url": deployment.server.url, "format": format, "backoff": 0.01, **options}

    def call(self, method: str, *args: Any, api_code: str | None = None, **kwargs: Any) -> Any:
        code = api_code or self._deployment.api_code
        in_process = self.mode.endswith("in-process")
        options = dict(self._options)
        if self.mode.startswith("sync"):
            transport = InProcess(self._deployment.app) if in_process else None
            with oc.Client(code, transport=transport, **options) as client:  # closes the transport too
                return getattr(client, method)(*args, **kwargs)

        async def go() -> Any:
            transport = httpx.ASGITransport(app=self._deployment.app) if in_process else None
            if in_process:
                options["base_url"] = "http://ordercancel.test"
            async with oc.AsyncClient(code, transport=transport, **options) as client:
                return await getattr(client, method)(*args, **kwargs)

        return asyncio.run(go())


MODES = ["sync-in-process", "sync-tcp", "async-in-process", "async-tcp"]


@pytest.fixture(params=[(mode, format) for mode in MODES for format in ("json", "xml")], ids="-".join)
def api(request: pytest.FixtureRequest, deployment: Deployment) -> Api:
    mode, format = request.param
    return Api(deployment, mode, format)


# Every outcome --------------------------------------------------------------------------------


def test_an_order_is_cancelled_by_number(api: Api, deployment: Deployment) -> None:
    order = deployment.order()
    result = api.call("cancel_by_number", order.order_number)
    assert (result.order_id, result.order_number) == (order.order_id, order.order_number)
    assert (result.environment, result.attempts) == ("sandbox", 1)
    assert service.find_order(deployment.engine, order.order_id).status is ProductionStatus.CANCELLED


def test_an_order_is_cancelled_by_id(api: Api, deployment: Deployment) -> None:
    order = deployment.order(status="Processing")
    result = api.call("cancel_by_id", order.order_id.upper())
    assert (result.order_id, result.order_number) == (order.order_id, order.order_number)
    assert service.find_order(deployment.engine, order.order_id).status is ProductionStatus.CANCELLED


REFUSALS: list[tuple[str, dict[str, str], type[oc.ApiError], type[domain.RequestError]]] = [
    ("cancelled", {"status": "Cancelled"}, oc.AlreadyCancelled, domain.AlreadyCancelled),
    (
        "draft",
        {"status": "Draft", "payment_status": "PaymentPending"},
        oc.NotPlacedCorrectly,
        domain.NotPlacedCorrectly,
    ),
    ("unpaid", {"payment_status": "PaymentNOK"}, oc.NotPlacedCorrectly, domain.NotPlacedCorrectly),
    ("in production", {"status": "InProduction"}, oc.ProductionStarted, domain.ProductionStarted),
    ("claimed", {"status": "Processing", "engineer": "Ada"}, oc.ProcessingStarted, domain.ProcessingStarted),
]


@pytest.mark.parametrize("refusal", [r[1:] for r in REFUSALS], ids=[r[0] for r in REFUSALS])
@pytest.mark.parametrize("by_id", [False, True], ids=["by-number", "by-id"])
def test_a_refused_order_raises_its_own_exception_with_the_servers_code_and_message(
    api: Api,
    deployment: Deployment,
    refusal: tuple[dict[str, str], type[oc.ApiError], type[domain.RequestError]],
    by_id: bool,
) -> None:
    state, expected, server_error = refusal
    order = deployment.order(**state)
    with pytest.raises(expected) as raised:
        api.call("cancel_by_id" if by_id else "cancel_by_number", order.order_id if by_id else order.order_number)
    error = raised.value
    assert isinstance(error, oc.ApiError)
    assert (error.code, error.message) == (server_error.code, server_error.message)
    assert (error.order_id, error.order_number) == (order.order_id, order.order_number)
    assert (error.status_code, error.attempts, error.retried) == (200, 1, False)
    assert service.find_order(deployment.engine, order.order_id).status is ProductionStatus(
        state.get("status", "Ordered")
    )


@pytest.mark.parametrize(
    ("method", "value", "server_error"),
    [
        ("cancel_by_number", "IMC999999", domain.WrongOrderNumber),
        ("cancel_by_id", "0f8fad5b-d9cb-469f-a165-70867728950e", domain.WrongOrderId),
        ("cancel_by_id", "not-a-guid", domain.WrongOrderId),
    ],
)
def test_an_unknown_order_raises_order_not_found(
    api: Api, method: str, value: str, server_error: type[domain.RequestError]
) -> None:
    with pytest.raises(oc.OrderNotFound) as raised:
        api.call(method, value)
    assert (raised.value.code, raised.value.message) == (server_error.code, server_error.message)


@pytest.mark.parametrize(
    ("method", "server_error"),
    [("cancel_by_number", domain.MissingOrderNumber), ("cancel_by_id", domain.MissingOrderId)],
)
def test_a_blank_reference_raises_missing_order_reference(
    api: Api, method: str, server_error: type[domain.RequestError]
) -> None:
    with pytest.raises(oc.MissingOrderReference) as raised:
        api.call(method, "   ")
    assert (raised.value.code, raised.value.message) == (server_error.code, server_error.message)


def test_a_request_over_the_size_limit_raises_bad_request_body(api: Api) -> None:
    with pytest.raises(oc.BadRequestBody) as raised:
        api.call("cancel_by_number", "A" * 70_000)
    error = raised.value
    assert (error.code, error.message, error.status_code) == (501, domain.WrongRequestBody.message, 413)


@pytest.mark.parametrize("mode", MODES)
def test_a_number_xml_cannot_carry_raises_bad_request_body(deployment: Deployment, mode: str) -> None:
    # JSON can carry any character (the server then answers 505, as above); XML 1.0 cannot carry \x01.
    with pytest.raises(oc.BadRequestBody) as raised:
        Api(deployment, mode, "xml").call("cancel_by_number", "IMC\x01")
    assert (raised.value.code, raised.value.status_code) == (501, 200)


def test_an_unknown_api_code_raises_unauthorized(api: Api, deployment: Deployment) -> None:
    order = deployment.order()
    with pytest.raises(oc.Unauthorized) as raised:
        api.call("cancel_by_number", order.order_number, api_code="0f8fad5b-d9cb-469f-a165-70867728950e")
    assert (raised.value.code, raised.value.message, raised.value.status_code) == (401, "Unauthorized", 401)
    assert service.find_order(deployment.engine, order.order_id).status is ProductionStatus.ORDERED


def test_a_production_api_code_is_unauthorized_in_the_sandbox(api: Api, deployment: Deployment) -> None:
    production_code = service.create_key(deployment.engine, Environment.PRODUCTION, "production")
    with pytest.raises(oc.Unauthorized):
        api.call("cancel_by_number", deployment.order().order_number, api_code=production_code)


def test_test_orders_are_created_in_the_state_asked_for(api: Api, deployment: Deployment) -> None:
    created = api.call("create_test_order", status="Processing", engineer="Grace")
    assert (created.status, created.payment_status, created.engineer, created.environment) == (
        "Processing",
        "PaymentOK",
        "Grace",
        "sandbox",
    )
    stored = service.find_order(deployment.engine, created.order_id)
    assert (stored.order_number, stored.engineer) == (created.order_number, "Grace")
    with pytest.raises(oc.ProcessingStarted):
        api.call("cancel_by_number", created.order_number)


def test_a_bad_test_order_state_raises_bad_request_body_naming_the_field(api: Api) -> None:
    with pytest.raises(oc.BadRequestBody) as raised:
        api.call("create_test_order", status="Paid")
    assert raised.value.message.startswith("unknown status 'Paid'; one of: Draft")


# Retries, over real TCP ----------------------------------------------------------------------


def _read_http_message(connection: socket.socket) -> bytes:
    """Read one HTTP/1.1 message with a Content-Length body (all our messages have one)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = connection.recv(65536)
        if not chunk:
            return data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(body) < length:
        chunk = connection.recv(65536)
        if not chunk:
            break
        body += chunk
    return head + b"\r\n\r\n" + body


class FlakyProxy:
    """A TCP proxy in front of the live server whose first connection fails in a chosen way.

    "drop-request": the request is read and the connection closed; the server never sees it.
    "drop-answer": the request reaches the server, which answers; the answer is thrown away.
    Later connections are passed through unchanged.
    """

    def __init__(self, upstream: str, failure: str) -> None:
        host, port = upstream.removeprefix("http://").split(":")
        self._upstream = (host, int(port))
        self._failure = failure
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self.connections = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(client, self.connections == 1), daemon=True).start()

    def _serve(self, client: socket.socket, first: bool) -> None:
        with client, socket.create_connection(self._upstream) as upstream:
            if first:
                request = _read_http_message(client)
                if self._failure == "drop-answer":
                    upstream.sendall(request)
                    _read_http_message(upstream)
                return  # closing the connection without a word
            threading.Thread(target=self._pump, args=(upstream, client), daemon=True).start()
            self._pump(client, upstream)

    @staticmethod
    def _pump(source: socket.socket, target: socket.socket) -> None:
        try:
            while chunk := source.recv(65536):
                target.sendall(chunk)
            target.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def close(self) -> None:
        self._listener.close()


@pytest.fixture
def proxy(deployment: Deployment, request: pytest.FixtureRequest) -> Iterator[FlakyProxy]:
    flaky = FlakyProxy(deployment.server.url, request.param)
    yield flaky
    flaky.close()


def attempts_recorded(engine: Engine, order: domain.Order) -> list[int]:
    query = text(
        "SELECT a.outcome FROM cancellation_attempts a JOIN orders o ON o.id = a.order_ref "
        "WHERE o.order_id = :order ORDER BY a.id"
    )
    with engine.connect() as connection:
        return [int(row[0]) for row in connection.execute(query, {"order": order.order_id})]


@pytest.mark.parametrize("proxy", ["drop-request"], indirect=True)
@pytest.mark.parametrize("mode", ["sync-tcp", "async-tcp"])
def test_a_connection_lost_before_the_server_saw_the_request_is_retried(
    deployment: Deployment, proxy: FlakyProxy, mode: str
) -> None:
    order = deployment.order()
    result = Api(deployment, mode, "json", base_url=proxy.url).call("cancel_by_number", order.order_number)
    assert (result.order_number, result.attempts) == (order.order_number, 2)
    assert attempts_recorded(deployment.engine, order) == [0]


@pytest.mark.parametrize("proxy", ["drop-answer"], indirect=True)
@pytest.mark.parametrize("mode", ["sync-tcp", "async-tcp"])
def test_a_lost_answer_is_retried_with_the_same_idempotency_key_and_the_success_is_told_again(
    deployment: Deployment, proxy: FlakyProxy, mode: str
) -> None:
    # Before Idempotency-Key, this retry found the order cancelled and raised a 507 marked
    # `retried`; now the call's one key makes the retry the first attempt's success again.
    order = deployment.order()
    result = Api(deployment, mode, "xml", base_url=proxy.url).call("cancel_by_number", order.order_number)
    assert (result.order_number, result.attempts, result.replayed) == (order.order_number, 2, True)
    assert attempts_recorded(deployment.engine, order) == [0, 0]  # the first did it; the second is its replay
    assert service.find_order(deployment.engine, order.order_id).status is ProductionStatus.CANCELLED


def test_a_507_after_more_than_one_attempt_still_says_it_was_retried() -> None:
    # For a server that keeps no Idempotency-Keys: the client's older way of telling the same story.
    assert oc.AlreadyCancelled(507, "m", status_code=200, attempts=2).retried is True
    assert oc.AlreadyCancelled(507, "m", status_code=200, attempts=1).retried is False


def test_a_refusal_is_never_retried(deployment: Deployment) -> None:
    order = deployment.order(status="Cancelled")
    with pytest.raises(oc.AlreadyCancelled) as raised:
        Api(deployment, "sync-tcp", "json", retries=5).call("cancel_by_number", order.order_number)
    assert raised.value.attempts == 1
    assert attempts_recorded(deployment.engine, order) == [507]


@pytest.mark.parametrize("mode", ["sync-tcp", "async-tcp"])
def test_no_server_at_all_raises_transport_error_after_every_retry(deployment: Deployment, mode: str) -> None:
    api = Api(deployment, mode, "json", base_url=f"http://127.0.0.1:{free_port()}", retries=3)
    with pytest.raises(oc.TransportError) as raised:
        api.call("cancel_by_number", "IMC000001")
    assert raised.value.attempts == 4
    assert isinstance(raised.value.__cause__, httpx.ConnectError)


@pytest.mark.parametrize("mode", ["sync-tcp", "async-tcp"])
def test_a_server_failure_is_retried_then_raised_as_server_error_and_changes_nothing(
    settings: Settings, engine: Engine, api_code: str, mode: str
) -> None:
    order = service.create_order(engine, settings.environment, api_code)
    with engine.begin() as connection:  # every cancellation now fails inside its transaction
        cancellation_attempts.drop(connection)
    with LiveServer(settings) as server:

        async def go() -> None:
            async with oc.AsyncClient(api_code, base_url=server.url, retries=2, backoff=0.01) as client:
                await client.cancel_by_number(order.order_number)

        with pytest.raises(oc.ServerError) as raised:
            if mode == "sync-tcp":
                with oc.Client(api_code, base_url=server.url, retries=2, backoff=0.01) as client:
                    client.cancel_by_number(order.order_number)
            else:
                asyncio.run(go())
    error = raised.value
    assert (error.code, error.message, error.status_code) == (500, domain.UnknownError.message, 500)
    assert error.attempts == 3
    assert service.find_order(engine, order.order_id).status is ProductionStatus.ORDERED


def test_an_answer_that_is_not_this_apis_raises_unexpected_response(deployment: Deployment) -> None:
    def proxy_error_page(request: httpx.Request) -> httpx.Response:
        return httpx.Response(502, html="<html><body>Bad Gateway</body></html>")

    with (
        oc.Client(
            deployment.api_code, base_url="http://gateway.test", transport=httpx.MockTransport(proxy_error_page)
        ) as client,
        pytest.raises(oc.UnexpectedResponse) as raised,
    ):
        client.cancel_by_number("IMC000001")
    assert (raised.value.code, raised.value.status_code) == (502, 502)
    assert "Bad Gateway" in raised.value.message


def test_a_wrong_base_url_raises_an_api_error_with_the_http_status_as_code(deployment: Deployment) -> None:
    with (
        oc.Client(deployment.api_code, base_url=deployment.server.url + "/not/the/api") as client,
        pytest.raises(oc.ApiError) as raised,
    ):
        client.cancel_by_number("IMC000001")
    assert type(raised.value) is oc.ApiError
    assert (raised.value.code, raised.value.message, raised.value.status_code) == (404, "Not Found", 404)


def test_every_exception_is_an_api_error_or_a_transport_error_under_one_root() -> None:
    for kind in set(oc.ERRORS.values()) | {oc.UnexpectedResponse}:
        assert issubclass(kind, oc.ApiError)
    assert issubclass(oc.ApiError, oc.ClientError)
    assert issubclass(oc.TransportError, oc.ClientError)
    assert sorted(oc.ERRORS) == [400, 401, 409, 422, 429, 500, 501, 502, 503, 504, 505, 506, 507, 508, 509]


# Configuration -------------------------------------------------------------------------------


def test_base_urls_come_from_configuration_not_from_the_library() -> None:
    env = {"ORDERCANCEL_SANDBOX_URL": "http://sandbox.internal:8080", "ORDERCANCEL_PRODUCTION_URL": "https://x"}
    assert oc.sandbox_url(env) == "http://sandbox.internal:8080"
    assert oc.production_url(env) == "https://x"
    with pytest.raises(LookupError, match="ORDERCANCEL_SANDBOX_URL is not set"):
        oc.sandbox_url({})


def test_an_unknown_format_is_refused_before_anything_is_sent() -> None:
    with pytest.raises(ValueError, match="format must be 'json' or 'xml'"):
        oc.Client("code", base_url="http://127.0.0.1:1", format="yaml")  # type: ignore[arg-type]


# Nothing but httpx -----------------------------------------------------------------------------

#: What the server needs and the client must not: importing any of them fails in the subprocess.
SERVER_DEPENDENCIES = ["uvicorn", "orjson", "defusedxml", "sqlalchemy", "alembic", "psycopg", "psycopg_pool"]
_BLOCKED_IMPORTS = """
import sys

BLOCKED = set(sys.argv[1].split(","))

class Blocker:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"{name} is blocked: the client must not need it")
        if name.startswith("ordercancel.") and name.partition(".")[2].partition(".")[0] != "client":
            raise ModuleNotFoundError(f"{name} is blocked: the client must not import the server")
        return None

sys.meta_path.insert(0, Blocker())
from ordercancel.client import Client, OrderNotFound

with Client(sys.argv[3], base_url=sys.argv[2]) as client:
    try:
        client.cancel_by_number("IMC999999")
    except OrderNotFound as error:
        print(error.code, error.message)
    print(client.cancel_by_number(sys.argv[4]).order_number)
print(sorted(name for name in sys.modules if name.partition(".")[0] in BLOCKED | {"ordercancel"}))
"""


@pytest.mark.subprocess
def test_the_client_imports_and_works_with_the_server_dependencies_absent(deployment: Deployment) -> None:
    order = deployment.order()
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            _BLOCKED_IMPORTS,
            ",".join(SERVER_DEPENDENCIES),
            deployment.server.url,
            deployment.api_code,
            order.order_number,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "505 Wrong OrderNumber has been applied.",
        order.order_number,
        "['ordercancel', 'ordercancel.client', 'ordercancel.client._version', 'ordercancel.client.webhooks']",
    ]


@pytest.mark.subprocess
def test_the_blocker_really_blocks_a_server_module(deployment: Deployment) -> None:
    script = _BLOCKED_IMPORTS.replace(
        "from ordercancel.client import", "import ordercancel.http.app\nfrom ordercancel.client import"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, ",".join(SERVER_DEPENDENCIES), "http://127.0.0.1:1", "x", "y"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode != 0
    assert "is blocked" in done.stderr


# The sandbox's hint header --------------------------------------------------------------------

UNKNOWN_CODE = "0f8fad5b-d9cb-469f-a165-70867728950e"
JSON_BODY = {"Content-Type": "application/json", "Accept": "application/json"}

#: (case, path, headers without the API code, body, whether to send the real API code, the hint).
HINT_CASES: list[tuple[str, str, dict[str, str], bytes, str | None, str]] = [
    (
        "curl -d's form type",
        oc.BY_NUMBER_PATH,
        {"Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json"},
        b'{"orderNumber": "IMC000001"}',
        "real",
        "Content-Type application/x-www-form-urlencoded is not accepted: send application/json or text/xml",
    ),
    ("no apiCode", oc.BY_NUMBER_PATH, JSON_BODY, b'{"orderNumber": "IMC000001"}', None, "no apiCode header"),
    ("apiCode not a GUID", oc.BY_ID_PATH, JSON_BODY, b"{}", "not-a-guid", "apiCode is not a GUID"),
    (
        "unknown apiCode",
        oc.BY_NUMBER_PATH,
        JSON_BODY,
        b"{}",
        UNKNOWN_CODE,
        "apiCode is not a sandbox code: it is unknown or revoked (a production code is unknown here)",
    ),
    (
        "no Content-Type, a form body",
        oc.BY_NUMBER_PATH,
        {"Accept": "application/json"},
        b"orderNumber=IMC000001",
        "real",
        "no Content-Type, and the body starts with neither { nor <: send Content-Type application/json or text/xml",
    ),
    (
        "a misspelt field",
        oc.BY_NUMBER_PATH,
        JSON_BODY,
        b'{"OrderNumber": "IMC000001"}',
        "real",
        "the body has no orderNumber: field names are case-sensitive",
    ),
    (
        "an order nobody has",
        oc.BY_NUMBER_PATH,
        JSON_BODY,
        b'{"orderNumber": "NOBODY-1"}',
        "real",
        "no order with this orderNumber belongs to your apiCode: create one with POST /web-api/sandbox/orders",
    ),
    (
        "Accept */*",
        oc.BY_NUMBER_PATH,
        {"Content-Type": "application/json", "Accept": "*/*"},
        b'{"orderNumber": "NOBODY-1"}',
        "real-order",
        "Accept */* was answered as text/xml, the documented default",
    ),
    (
        "no Accept",
        oc.BY_ID_PATH,
        {"Content-Type": "application/json"},
        b"",
        "real-order",
        "no Accept header was answered as text/xml, the documented default",
    ),
    ("no apiCode, test order", oc.TEST_ORDERS_PATH, JSON_BODY, b"{}", None, "no apiCode header"),
]


def _hint_request(
    server: LiveServer, code: str, order: domain.Order, case: tuple[str, str, dict[str, str], bytes, str | None, str]
) -> httpx.Response:
    _, path, headers, body, which, _ = case
    headers = dict(headers)
    if which is not None:
        headers["apiCode"] = code if which.startswith("real") else which
    if which == "real-order":  # a cancellable order of this code, by number or by ID
        field = "orderId" if path == oc.BY_ID_PATH else "orderNumber"
        value = order.order_id if field == "orderId" else order.order_number
        body = f'{{"{field}": "{value}"}}'.encode()
    with httpx.Client(timeout=10) as http:
        if "Accept" not in headers:
            del http.headers["accept"]  # httpx sends */* unless told not to
        return http.post(server.url + path, headers=headers, content=body)


@pytest.mark.parametrize("case", HINT_CASES, ids=[case[0] for case in HINT_CASES])
def test_the_sandbox_explains_a_refusal_in_a_hint_header_and_production_never_does(
    settings: Settings, engine: Engine, case: tuple[str, str, dict[str, str], bytes, str | None, str]
) -> None:
    answers = {}
    for environment in (Environment.SANDBOX, Environment.PRODUCTION):
        code = service.create_key(engine, environment, "hints")
        order = service.create_order(engine, environment, code)
        with LiveServer(replace(settings, environment=environment)) as server:
            answers[environment] = _hint_request(server, code, order, case)
    sandbox, production = answers[Environment.SANDBOX], answers[Environment.PRODUCTION]
    assert sandbox.headers.get("x-ordercancel-hint") == case[5]
    assert "x-ordercancel-hint" not in production.headers
    if case[1] == oc.TEST_ORDERS_PATH:  # not there at all in production
        assert production.status_code == 404
        return
    # The wire answer stays as published: the same status and body in both (apart from the order's own values).
    assert sandbox.status_code == production.status_code
    assert sandbox.headers["content-type"] == production.headers["content-type"]
    if case[4] != "real-order":
        assert sandbox.content == production.content


def test_a_well_formed_json_request_gets_no_hint(deployment: Deployment) -> None:
    order = deployment.order()
    response = httpx.post(
        deployment.server.url + oc.BY_NUMBER_PATH,
        headers={**JSON_BODY, "apiCode": deployment.api_code},
        json={"orderNumber": order.order_number},
    )
    assert response.json()["isCanceled"] is True
    assert "x-ordercancel-hint" not in response.headers


def test_the_clients_error_message_carries_the_sandbox_hint(api: Api) -> None:
    with pytest.raises(oc.Unauthorized) as refused:
        api.call("cancel_by_number", "IMC000001", api_code="not-a-guid")
    assert refused.value.message == "Unauthorized"  # the server's own, unchanged
    assert refused.value.hint == "apiCode is not a GUID"
    assert str(refused.value) == "401: Unauthorized (sandbox hint: apiCode is not a GUID)"
    with pytest.raises(oc.OrderNotFound) as unknown:
        api.call("cancel_by_number", "NOBODY-2")
    assert "(sandbox hint: no order with this orderNumber belongs to your apiCode" in str(unknown.value)
