"""The HTTP application: the factory that wires the store into routes, and the API handlers."""

from __future__ import annotations

import gc
import hashlib
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import timedelta

import orjson
from sqlalchemy import Engine

from ordercancel.codecs import CODECS, Negotiated, error_fields, negotiate, outcome_fields, request_codec
from ordercancel.config import Environment, Settings
from ordercancel.delivery import Dispatcher
from ordercancel.domain import (
    IdempotencyKeyInFlight,
    IdempotencyKeyReused,
    InvalidIdempotencyKey,
    Lookup,
    MissingOrderId,
    MissingOrderNumber,
    Outcome,
    RequestError,
    TooManyRequests,
    Unauthorized,
    UnknownError,
    WrongOrderId,
    WrongOrderNumber,
    WrongRequestBody,
    cancellation_details,
    effective_window,
    hash_api_code,
    lookup,
    parse_guid,
)
from ordercancel.http.admin_api import ADMIN_POOL_SIZE, AdminApi
from ordercancel.http.core import App, BodyTimeout, BodyTooLarge, Handler, Observer, Request, Response, Route
from ordercancel.http.demo import demo_routes
from ordercancel.http.fairuse import FairUse
from ordercancel.http.idempotency import HEADER as IDEMPOTENCY_HEADER
from ordercancel.http.idempotency import REPLAYED_HEADER, InFlight, Sweeper, fingerprint, parse_key
from ordercancel.http.observability import MULTIPROC_ENV, AccessLog, Metrics
from ordercancel.http.openapi import openapi_document
from ordercancel.http.sandbox import SANDBOX_ORDERS_PATH, TestOrders
from ordercancel.http.webhooks import WEBHOOKS_PATH, Webhooks
from ordercancel.storage import Attempt, Store, authenticate_now, open_store, outbox
from ordercancel.storage.database import create_sync_engine

BY_NUMBER_PATH = "/web-api/order/CancelOrderByNumber"
BY_ID_PATH = "/web-api/order/CancelOrderById"
ENVIRONMENT_HEADER = b"x-ordercancel-environment"
METRICS_PATH = "/metrics"
JSON_CONTENT_TYPE = b"application/json"

#: The one table that maps a refusal to its HTTP status; every other refusal is 200.
HTTP_STATUS: dict[type[RequestError], int] = {
    Unauthorized: 401,
    InvalidIdempotencyKey: 400,
    IdempotencyKeyInFlight: 409,
    IdempotencyKeyReused: 422,
    TooManyRequests: 429,
    UnknownError: 500,
}


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


HINT_HEADER = b"x-ordercancel-hint"
#: The media types a request body may have, as the hints name them.
_ACCEPTED_BODIES = "application/json or text/xml"
_PRINTABLE = re.compile(r"[^\x20-\x7e]")


def _shown(value: str, limit: int = 60) -> str:
    """A client's header value, fit to quote in a header: printable ASCII, bounded."""
    value = _PRINTABLE.sub("?", value.strip())
    return value if len(value) <= limit else value[: limit - 3] + "..."


def _auth_hint(request: Request) -> str:
    given = request.header("apicode")
    if given is None or not given.strip():
        return "no apiCode header"
    if parse_guid(given.strip()) is None:
        return "apiCode is not a GUID"
    return "apiCode is not a sandbox code: it is unknown or revoked (a production code is unknown here)"


def _unaccepted_content_type(request: Request) -> str | None:
    """Return the request's media type when it is one no endpoint reads (the answer is then 501)."""
    content_type = request.header("content-type")
    if content_type is None or not content_type.strip():
        return None
    media_type = content_type.split(";", 1)[0].strip().lower()
    return None if media_type in CODECS else media_type


def _body_hint(request: Request, field: str) -> str:
    content_type = request.header("content-type")
    if content_type is None or not content_type.strip():
        return f"no Content-Type, and the body starts with neither {{ nor <: send Content-Type {_ACCEPTED_BODIES}"
    if "json" in content_type.lower():
        return f'the body is not a JSON object with {field} a string, such as {{"{field}": "..."}}'
    return f"the body is not well-formed XML with one <{field}> text element under its root"


def _refusal_hint(request: Request, response: Response, field: str) -> str | None:
    unaccepted = _unaccepted_content_type(request)
    if unaccepted is not None:
        return f"Content-Type {_shown(unaccepted)} is not accepted: send {_ACCEPTED_BODIES}"
    if response.outcome == WrongRequestBody.code:
        return _body_hint(request, field)
    if response.outcome in (MissingOrderNumber.code, MissingOrderId.code):
        return f"the body has no {field}: field names are case-sensitive"
    if response.outcome in (WrongOrderNumber.code, WrongOrderId.code):
        return f"no order with this {field} belongs to your apiCode: create one with POST {SANDBOX_ORDERS_PATH}"
    return None


def _accept_hint(request: Request, response: Response) -> str | None:
    # A JSON client that sent no Accept (curl sends */*) gets XML: its parser fails on a success.
    accept = request.header("accept")
    if not response.content_type.startswith(b"text/xml") or "text/xml" in (accept or "").lower():
        return None
    shown = f"Accept {_shown(accept)}" if accept and accept.strip() else "no Accept header"
    return f"{shown} was answered as text/xml, the documented default"


def sandbox_hint(request: Request, response: Response, field: str) -> str | None:
    """One sentence on why the sandbox answered as it did, where the wire answer cannot say more."""
    if response.status == 401:
        return _auth_hint(request)
    return _refusal_hint(request, response, field) or _accept_hint(request, response)


def with_sandbox_hints(handler: Handler, field: str) -> Handler:
    """Add the hint header to the handler's answers (the sandbox only: production stays as published)."""

    async def hinted(request: Request) -> Response:
        response = await handler(request)
        hint = sandbox_hint(request, response, field)
        if hint is not None:
            response.headers.append((HINT_HEADER, hint.encode("ascii")))
        return response

    return hinted


@dataclass(frozen=True, slots=True)
class Admission:
    """What is decided of a cancel request before its body is read: who asks, or why not."""

    headers: Sequence[tuple[bytes, bytes]] = ()
    key_id: int = 0
    code_hash: str = ""
    idempotency_key: str | None = None
    refusal: RequestError | None = None
    #: The cancellation window that binds the caller: its key's own, else the setting's.
    window: timedelta | None = None


async def admission(store: Store, fair_use: FairUse, request: Request, window: timedelta | None = None) -> Admission:
    """Authenticate a cancel request, count it against its limits, and read its Idempotency-Key."""
    # An address that keeps failing authentication costs no look-up until its minute is over.
    throttled = await fair_use.address_throttled(request.client)
    if not throttled.allowed:
        return Admission(throttled.headers, refusal=TooManyRequests())
    code_hash = api_key_hash(request)
    # Authentication comes before the body is read: a stranger's body is never parsed.
    caller = None if code_hash is None else await store.authenticate(code_hash)
    if caller is None or code_hash is None:
        await fair_use.authentication_failed(request.client)
        return Admission(refusal=Unauthorized())
    request.key_id = caller.key_id
    admitted = await fair_use.admit_key(code_hash, caller.rate_limit)
    refusal: RequestError | None = None if admitted.allowed else TooManyRequests()
    idempotency_key = None
    try:
        idempotency_key = parse_key(request.header(IDEMPOTENCY_HEADER))
    except InvalidIdempotencyKey as error:
        refusal = refusal or error
    # Refused before the body is read and without the database (nothing is recorded or kept):
    # the key must be active now, not only when this process last looked it up.
    if refusal is not None and await authenticate_now(store, code_hash) is None:
        request.key_id = None
        return Admission(refusal=Unauthorized())
    own_window = effective_window(caller.cancellation_window, window)
    return Admission(admitted.headers, caller.key_id, code_hash, idempotency_key, refusal, own_window)


def cancel_handler(
    store: Store, fair_use: FairUse, in_flight: InFlight, *, by_id: bool, window: timedelta | None = None
) -> Handler:
    """Answer one cancel endpoint; `window` is ORDERCANCEL_CANCELLATION_WINDOW (a key's own overrides it)."""
    path = BY_ID_PATH if by_id else BY_NUMBER_PATH

    async def cancel(request: Request) -> Response:
        negotiated = negotiate(request.header("accept"))
        admitted = await admission(store, fair_use, request, window)
        if admitted.refusal is not None:
            return answer(negotiated, Outcome(None, None, admitted.refusal), admitted.headers)
        try:
            body = await request.body()
        except (BodyTooLarge, BodyTimeout):
            # Refused without the database: the key must be active now, not when it was remembered.
            if await authenticate_now(store, admitted.code_hash) is not None:
                raise
            request.key_id = None
            return answer(negotiated, Outcome(None, None, Unauthorized()))
        key = admitted.idempotency_key
        blank = Attempt(
            admitted.key_id, request.request_id, WrongRequestBody(), window=admitted.window, idempotency_key=key
        )
        attempt = read_attempt(blank, path, request, body, by_id=by_id)
        if key is None:
            return answer(negotiated, await store.cancel(attempt), admitted.headers)
        if not in_flight.enter(admitted.key_id, key):
            return answer(negotiated, Outcome(None, None, IdempotencyKeyInFlight()), admitted.headers)
        try:
            outcome = await store.cancel(attempt)
        finally:
            in_flight.leave(admitted.key_id, key)
        return answer(negotiated, outcome, admitted.headers)

    return cancel


def read_attempt(attempt: Attempt, path: str, request: Request, body: bytes, *, by_id: bool) -> Attempt:
    """Read a cancellation request's body into the attempt the store runs, refusal included."""
    field = "orderId" if by_id else "orderNumber"
    echo = reason = note = None
    try:
        values = request_codec(request.header("content-type"), body).pick(body, (field, "reason", "note"))
        value = values[field]
        reason, note = cancellation_details(values["reason"], values["note"])
        echo = None if by_id or value is None else value.strip() or None
        target: Lookup | RequestError = lookup(value, by_id=by_id)
        asked: tuple[str | None, ...] = (None if value is None else value.strip(), reason, note)
    except RequestError as error:
        target = error
        asked = (hashlib.sha256(body).hexdigest(),)
    # Only a request with an Idempotency-Key needs to say what it asks: no hashing for the others.
    print_ = "" if attempt.idempotency_key is None else fingerprint(path, *asked)
    return replace(attempt, target=target, echo=echo, reason=reason, note=note, fingerprint=print_)


def answer(negotiated: Negotiated, outcome: Outcome, headers: Sequence[tuple[bytes, bytes]] = ()) -> Response:
    """Render an outcome in the negotiated format, with the HTTP status and headers it calls for."""
    error = outcome.error
    status = HTTP_STATUS.get(type(error), 200) if error else 200
    headers = [*headers, REPLAYED_HEADER] if outcome.replayed else list(headers)
    if isinstance(error, IdempotencyKeyInFlight):
        headers.append((b"retry-after", b"1"))
    body = negotiated.codec.encode(outcome_fields(outcome))
    return Response(status, body, negotiated.content_type, headers, outcome=error.code if error else 0)


def health_handler(store: Store, settings: Settings, fair_use: FairUse) -> Handler:
    async def health(request: Request) -> Response:
        try:
            await store.ping()
        except Exception as error:
            body = {"status": "unavailable", "environment": settings.environment.value, "reason": type(error).__name__}
            return Response(503, orjson.dumps(body), JSON_CONTENT_TYPE, failure=error)
        # Still 200: requests are served (without limits) while the rate-limit storage is down.
        status = "degraded" if fair_use.degraded else "ok"
        return Response(
            200, orjson.dumps({"status": status, "environment": settings.environment.value}), JSON_CONTENT_TYPE
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


def create_app(settings: Settings, store: Store, engine: Engine, *, metrics_dir: str | None = None) -> App:
    """Build the ASGI application from its collaborators; the lifespan starts the store and, at the
    end, closes it and disposes of the engine.

    `engine` runs the admin use cases (the admin API, the sandbox's test orders); `metrics_dir` is
    the directory the workers of one `serve --workers N` share their metrics in.
    """
    endpoints = [BY_NUMBER_PATH, BY_ID_PATH, "/healthz", "/openapi.json", METRICS_PATH, WEBHOOKS_PATH]
    metrics = Metrics(endpoints, multiprocess_dir=metrics_dir, backlog=lambda: outbox.backlog(engine))
    fair_use = FairUse(
        rate_limit=settings.rate_limit,
        auth_failures=settings.auth_failures,
        storage_url=settings.rate_limit_storage,
        on_storage_error=metrics.count_rate_limit_storage_error,
    )
    in_flight = InFlight()
    sweeper = Sweeper(store.prune)
    window = None if settings.cancellation_window is None else timedelta(seconds=settings.cancellation_window)
    by_number = cancel_handler(store, fair_use, in_flight, by_id=False, window=window)
    by_id = cancel_handler(store, fair_use, in_flight, by_id=True, window=window)
    sandbox = settings.environment is Environment.SANDBOX
    if sandbox:
        by_number, by_id = with_sandbox_hints(by_number, "orderNumber"), with_sandbox_hints(by_id, "orderId")
    routes = [
        Route(BY_NUMBER_PATH, {"POST": by_number}),
        Route(BY_ID_PATH, {"POST": by_id}),
        Route("/healthz", {"GET": health_handler(store, settings, fair_use)}),
        Route("/openapi.json", {"GET": openapi_handler(settings)}),
        Route(METRICS_PATH, {"GET": metrics.handler()}),
        *demo_routes(settings, BY_NUMBER_PATH, BY_ID_PATH),
        *Webhooks(settings, store, engine, fair_use, api_key_hash).routes(),
    ]
    if settings.admin_token:  # without a token the admin API is not there at all (404)
        routes.extend(AdminApi(settings, engine).routes())
    if sandbox:  # in production the path does not exist: 404
        test_orders = TestOrders(settings, store, HTTP_STATUS, engine)
        routes.append(Route(SANDBOX_ORDERS_PATH, {"POST": with_sandbox_hints(test_orders.handle, "status")}))

    async def dispose_engine() -> None:
        engine.dispose()

    on_startup = [store.start, sweeper.start]
    on_shutdown = [sweeper.stop, store.close, dispose_engine]
    observers: list[Observer] = [metrics.observe, AccessLog(metrics).observe]
    if settings.webhook_dispatcher:
        dispatcher = Dispatcher.from_settings(settings, engine, on_outcome=metrics.count_webhook)
        on_startup.append(dispatcher.start)
        on_shutdown.insert(0, dispatcher.stop)
        observers.append(nudging(dispatcher))
    return App(
        routes,
        error=error_response,
        on_startup=[*on_startup, freeze_startup_objects],
        on_shutdown=on_shutdown,
        observers=observers,
        default_headers=[(ENVIRONMENT_HEADER, settings.environment.value.encode())],
        max_body=settings.max_body_bytes,
        body_timeout=settings.body_timeout,
        max_concurrency=settings.max_concurrency,
    )


def nudging(dispatcher: Dispatcher) -> Observer:
    """An observer that wakes the dispatcher after a change went through: its event is committed."""

    def observe(request: Request, response: Response, elapsed: float) -> None:
        if response.status < 300 and request.method != "GET":
            dispatcher.nudge()

    return observe


def create_app_from_env() -> App:
    """Factory for `uvicorn --factory` and worker processes: settings from ORDERCANCEL_*."""
    settings = Settings.from_env()
    engine = admin_engine(settings)
    return create_app(settings, open_store(settings), engine, metrics_dir=os.environ.get(MULTIPROC_ENV))


def admin_engine(settings: Settings) -> Engine:
    """The small engine the admin use cases run on; creating it does no I/O (it connects on first use)."""
    return create_sync_engine(settings, pool_size=ADMIN_POOL_SIZE)
