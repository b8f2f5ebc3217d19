"""The admin HTTP API: orders and their lifecycle, and webhooks, for the platform's other systems.

Authenticated by the admin token from configuration (`Authorization: Bearer <token>`),
which is separate from the integrators' API codes. Without a configured token the routes
are not mounted at all: `/admin/...` answers 404 like any unknown path, so a deployment
that does not use the API does not expose it. JSON in and out; the use cases are the
service's (synchronous, SQLAlchemy), run in a thread so the event loop keeps serving.
"""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qs

import orjson
from sqlalchemy import Engine

from ordercancel.config import Settings
from ordercancel.delivery import registrable_url
from ordercancel.domain import Order, ProductionStatus
from ordercancel.events import InvalidSubscription
from ordercancel.http.core import Handler, Request, Response, Route
from ordercancel.storage import outbox, service

ORDERS_PATH = "/admin/orders"
ORDER_PATH = ORDERS_PATH + "/{orderId}"
WEBHOOKS_PATH = "/admin/webhooks"
#: An exact path: the router tries it before the `{id}` patterns below (no endpoint id is "deliveries").
ALL_DELIVERIES_PATH = WEBHOOKS_PATH + "/deliveries"
WEBHOOK_PATH = WEBHOOKS_PATH + "/{id}"
REPLAY_PATH = "/admin/events/{eventId}/replay"
#: Deliveries `GET .../deliveries` lists by default (the newest), and at most (`?limit=N`).
DEFAULT_DELIVERIES, MAX_DELIVERIES = 100, 1000
JSON = b"application/json"
#: Connections the admin API keeps per process: the use cases are few and short.
ADMIN_POOL_SIZE = 2


class BadBody(service.AdminError):
    """The request body is not what the endpoint takes."""


#: The HTTP status of each refusal; the first class in an error's MRO that is listed wins.
ERROR_STATUS: dict[type[service.AdminError], int] = {
    BadBody: 400,
    service.OrderNotFound: 404,
    service.TransitionRefused: 409,
    service.OrderExists: 409,
    service.InvalidValue: 400,
    service.UnknownApiCode: 400,
    outbox.EndpointNotFound: 404,
    outbox.EventNotFound: 404,
}

Fields = dict[str, str | None]
#: A use case: (engine, the order the path names, the body's fields, the request's X-Request-ID).
UseCase = Callable[[Engine, str, Fields, str], Order]


def _json(status: int, value: object, headers: list[tuple[bytes, bytes]] | None = None) -> Response:
    return Response(status, orjson.dumps(value), JSON, headers or [])


def _refusal(status: int, reason: str) -> Response:
    return _json(status, {"error": reason})


def _status_of(error: service.AdminError) -> int:
    for kind in type(error).__mro__:
        if kind in ERROR_STATUS:
            return ERROR_STATUS[kind]
    return 400


def _document(body: bytes, allowed: tuple[str, ...]) -> dict[str, Any]:
    """Read a JSON object of the allowed fields, of any type; an empty body is an empty object."""
    try:
        document = orjson.loads(body) if body.strip() else {}
    except orjson.JSONDecodeError:
        raise BadBody("the body is not JSON") from None
    if not isinstance(document, dict):
        raise BadBody("the body must be a JSON object")
    unknown = sorted(set(document) - set(allowed))
    if unknown:  # a misspelt field would otherwise be ignored silently, with surprising results
        expected = ", ".join(allowed) or "no fields"
        raise BadBody(f"unknown field {unknown[0]!r}; expected {expected}")
    return document


def _fields(body: bytes, allowed: tuple[str, ...]) -> Fields:
    """Read a JSON object of the allowed string fields; an empty body is an empty object."""
    return _strings_of(_document(body, allowed), allowed)


def _strings_of(document: dict[str, Any], names: tuple[str, ...]) -> Fields:
    fields: Fields = {}
    for name in names:
        value = document.get(name)
        if value is not None and not isinstance(value, str):
            raise BadBody(f"{name} must be a string")
        fields[name] = value
    return fields


def _string_list(document: dict[str, Any], name: str) -> list[str] | None:
    """A field that lists strings (null or absent: None)."""
    value = document.get(name)
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise BadBody(f"{name} must be a list of strings")
    return value


def _boolean(document: dict[str, Any], name: str) -> bool:
    """A true/false field (null or absent: false)."""
    value = document.get(name)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise BadBody(f"{name} must be true or false")
    return value


def _required(fields: Fields, name: str) -> str:
    value = fields.get(name)
    if value is None or not value.strip():
        raise BadBody(f"{name} is required")
    return value


def _show(engine: Engine, ref: str, _fields: Fields, _request_id: str) -> Order:
    return service.find_order(engine, ref)


_STATUS_FIELDS = ("status", "operator", "reason", "note")


def _set_status(engine: Engine, ref: str, fields: Fields, request_id: str) -> Order:
    status = _required(fields, "status")
    # Whoever cancels says who they are: the token is shared, the cancellation record is not.
    cancelling = status.strip() == ProductionStatus.CANCELLED.value
    operator = _required(fields, "operator") if cancelling else service.DEFAULT_OPERATOR
    reason, note = fields.get("reason"), fields.get("note")
    return service.set_status(engine, ref, status, operator=operator, request_id=request_id, reason=reason, note=note)


def _set_payment(engine: Engine, ref: str, fields: Fields, _request_id: str) -> Order:
    return service.set_payment(engine, ref, _required(fields, "paymentStatus"))


def _claim(engine: Engine, ref: str, fields: Fields, _request_id: str) -> Order:
    return service.claim(engine, ref, _required(fields, "engineer"))


def _release(engine: Engine, ref: str, _fields: Fields, _request_id: str) -> Order:
    return service.release(engine, ref)


class AdminApi:
    """The admin routes over one small engine of their own."""

    def __init__(self, settings: Settings, engine: Engine) -> None:
        if not settings.admin_token:
            raise ValueError("the admin API needs an admin token")
        self._settings = settings
        self._token = settings.admin_token.encode()
        self._engine = engine

    def routes(self) -> list[Route]:
        return [
            Route(ORDERS_PATH, {"POST": self._endpoint(self._create, _CREATE_FIELDS, created=True)}),
            Route(ORDER_PATH, {"GET": self._endpoint(_show, ())}),
            Route(ORDER_PATH + "/status", {"POST": self._endpoint(_set_status, _STATUS_FIELDS)}),
            Route(ORDER_PATH + "/payment", {"POST": self._endpoint(_set_payment, ("paymentStatus",))}),
            Route(ORDER_PATH + "/claim", {"POST": self._endpoint(_claim, ("engineer",))}),
            Route(ORDER_PATH + "/release", {"POST": self._endpoint(_release, ())}),
            *self._webhook_routes(),
        ]

    def _create(self, engine: Engine, _ref: str, fields: Fields, _request_id: str) -> Order:
        # The fields are checked by the domain's one validation of an order, in the service.
        return service.create_order(
            engine,
            self._settings.environment,
            _required(fields, "apiCode"),
            status=fields["status"],
            payment_status=fields["paymentStatus"],
            engineer=fields["engineer"],
            number=fields["orderNumber"],
            order_id=fields["orderId"],
            placed_at=fields["placedAt"],
        )

    def _authorized(self, request: Request) -> bool:
        scheme, _, token = (request.header("authorization") or "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), self._token)

    def _endpoint(self, use_case: UseCase, allowed: tuple[str, ...], *, created: bool = False) -> Handler:
        async def handle(request: Request) -> Response:
            if not self._authorized(request):
                return _json(401, {"error": "a valid admin token is required"}, [(b"www-authenticate", b"Bearer")])
            ref = request.path_params.get("orderId", "")
            try:
                fields = _fields(await request.body(), allowed)
                order = await asyncio.to_thread(use_case, self._engine, ref, fields, request.request_id)
            except service.AdminError as error:
                return _refusal(_status_of(error), str(error))
            return _json(201 if created else 200, service.order_fields(order))

        return handle

    # Webhooks: every endpoint, an integrator's or an operator's (the CLI's `webhooks` commands) --

    def _webhook_routes(self) -> list[Route]:
        guarded = self._guarded
        return [
            Route(WEBHOOKS_PATH, {"POST": guarded(self._add_webhook), "GET": guarded(self._list_webhooks)}),
            Route(ALL_DELIVERIES_PATH, {"GET": guarded(self._deliveries)}),
            Route(WEBHOOK_PATH, {"DELETE": guarded(self._remove_webhook)}),
            Route(WEBHOOK_PATH + "/rotate-secret", {"POST": guarded(self._rotate_secret)}),
            Route(WEBHOOK_PATH + "/deliveries", {"GET": guarded(self._deliveries)}),
            Route(REPLAY_PATH, {"POST": guarded(self._replay)}),
        ]

    def _guarded(self, action: Callable[[Request], Awaitable[Response]]) -> Handler:
        """The token checked first; a use case's refusal answered with its status and reason."""

        async def handle(request: Request) -> Response:
            if not self._authorized(request):
                return _json(401, {"error": "a valid admin token is required"}, [(b"www-authenticate", b"Bearer")])
            try:
                return await action(request)
            except service.AdminError as error:
                return _refusal(_status_of(error), str(error))

        return handle

    async def _add_webhook(self, request: Request) -> Response:
        document = _document(await request.body(), _WEBHOOK_FIELDS)
        fields = _strings_of(document, ("url", "apiCode"))
        url = _required(fields, "url")
        all_keys = _boolean(document, "allKeys")
        types = _string_list(document, "events")
        if all_keys == (fields["apiCode"] is not None):
            raise BadBody("send exactly one of apiCode (that code's orders) and allKeys: true (every order)")
        try:
            checked = await registrable_url(url, self._settings)
        except InvalidSubscription as error:
            raise service.InvalidValue(str(error)) from None
        endpoint, secret = await asyncio.to_thread(
            outbox.add_endpoint_for_code,
            self._engine,
            self._settings.environment,
            checked,
            api_code=fields["apiCode"],
            types=types,
        )
        return _json(201, {**endpoint.fields(), "secret": secret})

    async def _list_webhooks(self, request: Request) -> Response:
        endpoints = await asyncio.to_thread(outbox.list_endpoints, self._engine, operator=True)
        return _json(200, {"webhooks": [endpoint.fields() for endpoint in endpoints]})

    async def _remove_webhook(self, request: Request) -> Response:
        endpoint_id = request.path_params["id"]
        await asyncio.to_thread(outbox.remove_endpoint, self._engine, endpoint_id, operator=True)
        return Response(204)

    async def _rotate_secret(self, request: Request) -> Response:
        _fields(await request.body(), ())
        endpoint, secret = await asyncio.to_thread(outbox.rotate_secret, self._engine, request.path_params["id"])
        until = endpoint.previous_secret_until
        return _json(
            200,
            {
                **endpoint.fields(),
                "secret": secret,
                "previousSecretUntil": None if until is None else until.isoformat(),
            },
        )

    async def _deliveries(self, request: Request) -> Response:
        limit = _limit(request.query)
        endpoint_id = request.path_params.get("id")
        deliveries = await asyncio.to_thread(outbox.list_deliveries, self._engine, endpoint_id=endpoint_id, limit=limit)
        return _json(200, {"deliveries": [delivery.fields() for delivery in deliveries]})

    async def _replay(self, request: Request) -> Response:
        endpoint_id = _fields(await request.body(), ("endpoint",))["endpoint"]
        made = await asyncio.to_thread(
            outbox.replay, self._engine, request.path_params["eventId"], endpoint_id=endpoint_id
        )
        return _json(200, {"deliveries": made})


def _limit(query: str) -> int:
    """The `limit` of a deliveries listing: the newest N, 1 to MAX_DELIVERIES."""
    values = parse_qs(query, keep_blank_values=True).get("limit")
    if not values:
        return DEFAULT_DELIVERIES
    text = values[-1].strip()
    limit = int(text) if text.isascii() and text.isdigit() and len(text) <= 6 else 0
    if not 1 <= limit <= MAX_DELIVERIES:
        raise BadBody(f"limit is a whole number from 1 to {MAX_DELIVERIES}")
    return limit


_WEBHOOK_FIELDS = ("url", "apiCode", "allKeys", "events")

#: The fields of `orders create`, named as `orders show --json` names them, plus the API code.
_CREATE_FIELDS = ("apiCode", "orderNumber", "orderId", "status", "paymentStatus", "engineer", "placedAt")
