"""The HTTP application: the factory that wires the store into routes, and the API handlers."""

from __future__ import annotations

import gc

import orjson

from ordercancel.codecs import error_fields, negotiate, outcome_fields, request_codec
from ordercancel.config import Environment, Settings
from ordercancel.domain import (
    Lookup,
    Outcome,
    RequestError,
    Unauthorized,
    UnknownError,
    WrongRequestBody,
    hash_api_code,
    lookup,
    parse_guid,
)
from ordercancel.http.admin_api import AdminApi
from ordercancel.http.core import App, BodyTimeout, BodyTooLarge, Handler, Request, Response, Route
from ordercancel.http.demo import demo_routes
from ordercancel.http.observability import AccessLog, Metrics
from ordercancel.http.openapi import openapi_document
from ordercancel.http.sandbox import SANDBOX_ORDERS_PATH, TestOrders
from ordercancel.storage import Attempt, Store, authenticate_now, open_store

BY_NUMBER_PATH = "/web-api/order/CancelOrderByNumber"
BY_ID_PATH = "/web-api/order/CancelOrderById"
ENVIRONMENT_HEADER = b"x-ordercancel-environment"
METRICS_PATH = "/metrics"
JSON_CONTENT_TYPE = b"application/json"

#: The one table that maps a refusal to its HTTP status; every other refusal is 200.
HTTP_STATUS: dict[type[RequestError], int] = {Unauthorized: 401, UnknownError: 500}


class _HttpError(RequestError):
    """An HTTP-level refusal (unknown path, wrong method) in the same body shape."""

    def __init__(self, code: int, message: str) -> None:
        self.code = code  # type: ignore[misc]
        self.message = message  # type: ignore[misc]
        Exception.__init__(self, message)


#: The body each HTTP-level status carries: its requestError is the closest documented one.
_ERROR_BODIES: dict[int, RequestError] = {
    408: WrongRequestBody(),
    413: WrongRequestBody(),
    500: UnknownError(),
    503: UnknownError(),
}


def error_response(request: Request, status: int, reason: str) -> Response:
    """Answer an HTTP-level failure in the negotiated format; never with a traceback."""
    negotiated = negotiate(request.header("accept"))
    error = _ERROR_BODIES.get(status) or _HttpError(status, reason)
    body = negotiated.codec.encode({"isCanceled": False, "requestError": error_fields(error)})
    return Response(status, body, negotiated.content_type, outcome=error.code)


def api_key_hash(request: Request) -> str | None:
    """Return the hash of the request's API code, or None when it sent no GUID."""
    code = parse_guid((request.header("apicode") or "").strip())
    return None if code is None else hash_api_code(code)


def cancel_handler(store: Store, *, by_id: bool) -> Handler:
    field = "orderId" if by_id else "orderNumber"

    async def cancel(request: Request) -> Response:
        negotiated = negotiate(request.header("accept"))
        code_hash = api_key_hash(request)
        # Authentication comes before the body is read: a stranger's body is never parsed.
        key_id = None if code_hash is None else await store.authenticate(code_hash)
        body = b""
        if code_hash is not None and key_id is not None:
            try:
                body = await request.body()
            except (BodyTooLarge, BodyTimeout):
                # Refused without the database: the key must be active now, not when it was remembered.
                if await authenticate_now(store, code_hash) is not None:
                    raise
                key_id = None
        request.key_id = key_id
        if key_id is None:
            outcome = Outcome(None, None, Unauthorized())
        else:
            echo = None
            try:
                value = request_codec(request.header("content-type"), body).field(body, field)
                echo = None if by_id or value is None else value.strip() or None
                target: Lookup | RequestError = lookup(value, by_id=by_id)
            except RequestError as error:
                target = error
            outcome = await store.cancel(Attempt(key_id, request.request_id, target, echo))
        status = HTTP_STATUS.get(type(outcome.error), 200) if outcome.error else 200
        body = negotiated.codec.encode(outcome_fields(outcome))
        return Response(status, body, negotiated.content_type, outcome=outcome.error.code if outcome.error else 0)

    return cancel


def health_handler(store: Store, settings: Settings) -> Handler:
    async def health(request: Request) -> Response:
        try:
            await store.ping()
        except Exception as error:
            body = {"status": "unavailable", "environment": settings.environment.value, "reason": type(error).__name__}
            return Response(503, orjson.dumps(body), JSON_CONTENT_TYPE, failure=error)
        return Response(
            200, orjson.dumps({"status": "ok", "environment": settings.environment.value}), JSON_CONTENT_TYPE
        )

    return health


def openapi_handler(settings: Settings) -> Handler:
    document = orjson.dumps(openapi_document(settings.environment))

    async def openapi(request: Request) -> Response:
        return Response(200, document, JSON_CONTENT_TYPE)

    return openapi


async def freeze_startup_objects() -> None:
    """Leave everything built at startup out of the cyclic garbage collector's full passes.

    Under load a full collection walked every module, class and function the process had
    loaded, pausing the event loop for tens of milliseconds a few times a minute: the bulk of
    the p99. Frozen, those objects stay alive (they would anyway) and are never walked again.
    """
    gc.freeze()


def create_app(settings: Settings, store: Store) -> App:
    """Build the ASGI application from its collaborators; the store is started by the lifespan."""
    metrics = Metrics([BY_NUMBER_PATH, BY_ID_PATH, "/healthz", "/openapi.json", METRICS_PATH])
    routes = [
        Route(BY_NUMBER_PATH, {"POST": cancel_handler(store, by_id=False)}),
        Route(BY_ID_PATH, {"POST": cancel_handler(store, by_id=True)}),
        Route("/healthz", {"GET": health_handler(store, settings)}),
        Route("/openapi.json", {"GET": openapi_handler(settings)}),
        Route(METRICS_PATH, {"GET": metrics.handler()}),
        *demo_routes(settings, BY_NUMBER_PATH, BY_ID_PATH),
    ]
    on_shutdown = [store.close]
    if settings.admin_token:  # without a token the admin API is not there at all (404)
        admin = AdminApi(settings)
        routes.extend(admin.routes())
        on_shutdown.append(admin.close)
    if settings.environment is Environment.SANDBOX:  # in production the path does not exist: 404
        test_orders = TestOrders(settings, store, HTTP_STATUS)
        routes.append(Route(SANDBOX_ORDERS_PATH, {"POST": test_orders.handle}))
        on_shutdown.append(test_orders.close)
    return App(
        routes,
        error=error_response,
        on_startup=[store.start, freeze_startup_objects],
        on_shutdown=on_shutdown,
        observers=[metrics.observe, AccessLog(metrics).observe],
        default_headers=[(ENVIRONMENT_HEADER, settings.environment.value.encode())],
        max_body=settings.max_body_bytes,
        body_timeout=settings.body_timeout,
        max_concurrency=settings.max_concurrency,
    )


def create_app_from_env() -> App:
    """Factory for `uvicorn --factory` and worker processes: settings from ORDERCANCEL_*."""
    settings = Settings.from_env()
    return create_app(settings, open_store(settings))
