"""Test orders on demand, in the sandbox only: `POST /web-api/sandbox/orders`.

An integrator creates an order for their own API code in the state that triggers the outcome
they want to see, then cancels it through the real API. The route is not registered at all in
production, so there the path is 404 like any other unknown one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass

from sqlalchemy import Engine

from ordercancel.codecs import Negotiated, error_fields, negotiate, request_codec
from ordercancel.config import Settings
from ordercancel.domain import (
    InvalidOrderField,
    Order,
    PaymentStatus,
    ProductionStatus,
    RequestError,
    Unauthorized,
    WrongRequestBody,
    hash_api_code,
    new_order,
    parse_guid,
)
from ordercancel.http.core import Request, Response
from ordercancel.storage import Store, service

SANDBOX_ORDERS_PATH = "/web-api/sandbox/orders"
#: The XML document element of every answer of this endpoint.
XML_ROOT = "CreateTestOrderResponse"


class InvalidTestOrder(RequestError):
    """A field of a test order request has a value we cannot use; the message names it."""

    code = WrongRequestBody.code

    def __init__(self, message: str) -> None:
        self.message = message  # type: ignore[misc]
        Exception.__init__(self, message)


#: The fields a test order request may carry; anything else is refused, so a misspelt one is not ignored.
FIELDS = ("status", "paymentStatus", "engineer", "placedAt")


@dataclass(frozen=True, slots=True)
class TestOrderRequest:
    """The state a test order is created in: the issue's defaults unless the body says otherwise."""

    __test__ = False  # not a pytest class, whatever its name says

    status: str = ProductionStatus.ORDERED.value
    payment_status: str = PaymentStatus.OK.value
    engineer: str | None = None
    #: RFC 3339; None: now. One in the past makes an order whose cancellation window has passed.
    placed_at: str | None = None


def test_order_request(content_type: str | None, body: bytes) -> TestOrderRequest:
    """Read the optional fields of a test order request; an empty body asks for every default.

    The fields are checked by the domain's one validation of an order, before anything is written.
    """
    if not body.strip():
        return TestOrderRequest()
    fields = request_codec(content_type, body).fields(body)
    unknown = sorted(set(fields) - set(FIELDS))
    if unknown:
        named = ", ".join(repr(name) for name in unknown)
        raise InvalidTestOrder(f"unknown field(s) {named}; the fields are {', '.join(FIELDS)}")
    try:
        checked = new_order(
            status=fields.get("status"),
            payment_status=fields.get("paymentStatus"),
            engineer=fields.get("engineer"),
            placed_at=fields.get("placedAt"),
        )
    except InvalidOrderField as error:
        raise InvalidTestOrder(str(error)) from None
    placed_at = None if checked.placed_at is None else checked.placed_at.isoformat()
    return TestOrderRequest(checked.status.value, checked.payment_status.value, checked.engineer, placed_at)


def order_response_fields(order: Order) -> dict[str, object]:
    """The fields of a created test order, in answer order."""
    fields: dict[str, object] = {
        "orderId": order.order_id,
        "orderNumber": order.order_number,
        "status": order.status.value,
        "paymentStatus": order.payment_status.value,
    }
    if order.engineer is not None:
        fields["engineer"] = order.engineer
    if order.placed_at is not None:
        fields["placedAt"] = order.placed_at.isoformat().replace("+00:00", "Z")
    return fields


class TestOrders:
    """The handler of the sandbox's test order endpoint, writing through the admin use cases' engine."""

    __test__ = False  # not a pytest class, whatever its name says

    def __init__(
        self, settings: Settings, store: Store, http_status: Mapping[type[RequestError], int], engine: Engine
    ) -> None:
        self._settings = settings
        self._store = store
        self._http_status = http_status
        self._engine = engine

    def _create(self, api_code: str, wanted: TestOrderRequest) -> Order:
        return service.create_order(
            self._engine,
            self._settings.environment,
            api_code,
            status=wanted.status,
            payment_status=wanted.payment_status,
            engineer=wanted.engineer,
            placed_at=wanted.placed_at,
        )

    async def handle(self, request: Request) -> Response:
        """Authenticate like a cancellation, then create the order the body describes."""
        negotiated = negotiate(request.header("accept"))
        api_code = parse_guid((request.header("apicode") or "").strip())
        try:
            # Authentication comes before the body is read, as on the cancellation endpoints.
            if api_code is None or await self._store.authenticate(hash_api_code(api_code)) is None:
                raise Unauthorized()
            wanted = test_order_request(request.header("content-type"), await request.body())
            order = await asyncio.to_thread(self._create, api_code, wanted)
        except RequestError as error:
            return self._refusal(error, negotiated)
        except service.UnknownApiCode:  # revoked between the two look-ups
            return self._refusal(Unauthorized(), negotiated)
        except service.InvalidValue as error:
            return self._refusal(InvalidTestOrder(str(error)), negotiated)
        body = negotiated.codec.encode(order_response_fields(order), XML_ROOT)
        return Response(200, body, negotiated.content_type)

    def _refusal(self, error: RequestError, negotiated: Negotiated) -> Response:
        status = self._http_status.get(type(error), 200)
        body = negotiated.codec.encode({"requestError": error_fields(error)}, XML_ROOT)
        return Response(status, body, negotiated.content_type)
