"""The admin HTTP API: orders and their lifecycle, for the platform's other systems.

Authenticated by the admin token from configuration (`Authorization: Bearer <token>`),
which is separate from the integrators' API codes. Without a configured token the routes
are not mounted at all: `/admin/...` answers 404 like any unknown path, so a deployment
that does not use the API does not expose it. JSON in and out; the use cases are the
service's (synchronous, SQLAlchemy), run in a thread so the event loop keeps serving.
"""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import Callable

import orjson
from sqlalchemy import Engine

from ordercancel.config import Settings
from ordercancel.domain import Order, ProductionStatus
from ordercancel.http.core import Handler, Request, Response, Route
from ordercancel.storage import service

ORDERS_PATH = "/admin/orders"
ORDER_PATH = ORDERS_PATH + "/{orderId}"
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


def _fields(body: bytes, allowed: tuple[str, ...]) -> Fields:
    """Read a JSON object of the allowed string fields; an empty body is an empty object."""
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
    fields: Fields = {}
    for name in allowed:
        value = document.get(name)
        if value is not None and not isinstance(value, str):
            raise BadBody(f"{name} must be a string")
        fields[name] = value
    return fields


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


#: The fields of `orders create`, named as `orders show --json` names them, plus the API code.
_CREATE_FIELDS = ("apiCode", "orderNumber", "orderId", "status", "paymentStatus", "engineer", "placedAt")
