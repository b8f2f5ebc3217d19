"""Orders, their lifecycle, and the rules that decide whether one may be cancelled.

This module imports nothing of ours: everything else depends on it.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import ClassVar


class ProductionStatus(StrEnum):
    DRAFT = "Draft"
    ORDERED = "Ordered"
    PROCESSING = "Processing"
    IN_PRODUCTION = "InProduction"
    READY_TO_SHIP = "ReadyToShip"
    READY_TO_PICK_UP = "ReadyToPickUp"
    SHIPPED = "Shipped"
    DELIVERED = "Delivered"
    CANCELLED = "Cancelled"
    INVALID = "Invalid"


class PaymentStatus(StrEnum):
    PENDING = "PaymentPending"
    OK = "PaymentOK"
    NOK = "PaymentNOK"


#: Statuses in which processing has not started: the only ones a cancellation or a claim may leave.
OPEN_STATUSES = frozenset({ProductionStatus.ORDERED, ProductionStatus.PROCESSING})

_GUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\Z")
_ORDER_NUMBER = re.compile(r"[A-Za-z0-9-]{1,32}\Z")


def parse_guid(text: str) -> str | None:
    """Return the canonical (lower-case) form of a GUID in 8-4-4-4-12 form, or None."""
    return text.lower() if _GUID.match(text) else None


def hash_api_code(api_code: str) -> str:
    """Return the SHA-256 of an API code's canonical form: the only form ever stored or compared."""
    return hashlib.sha256(api_code.encode()).hexdigest()


def is_order_number(text: str) -> bool:
    """Tell whether text has the form of an order number (1-32 letters, digits and dashes)."""
    return _ORDER_NUMBER.match(text) is not None


def generated_order_number(sequence: int) -> str:
    """Number the service gives an order itself: IMC and at least six digits."""
    return f"IMC{sequence:06d}"


@dataclass(frozen=True, slots=True)
class Order:
    order_id: str
    order_number: str
    status: ProductionStatus
    payment_status: PaymentStatus
    engineer: str | None = None
    claimed_at: datetime | None = None
    cancelled_at: datetime | None = None


class RequestError(Exception):
    """A refusal with its stable code and message, rendered later in the negotiated format."""

    code: ClassVar[int]
    message: ClassVar[str]

    def __init__(self) -> None:
        super().__init__(self.message)


class Unauthorized(RequestError):
    code = 401
    message = "Unauthorized"


class TooManyRequests(RequestError):
    code = 429
    message = "Too many requests. Retry after the number of seconds in Retry-After."


class UnknownError(RequestError):
    code = 500
    message = "Unknown Error. Try again later. If the problem persists, please contact us."


class WrongRequestBody(RequestError):
    code = 501
    message = "Wrong request body. Check if all parameters set correctly."


class MissingOrderId(RequestError):
    code = 502
    message = "Please, send OrderId of order you want to cancel."


class MissingOrderNumber(RequestError):
    code = 503
    message = "Please, send OrderNumber of order you want to cancel."


class WrongOrderId(RequestError):
    code = 504
    message = "Wrong OrderId has been applied."


class WrongOrderNumber(RequestError):
    code = 505
    message = "Wrong OrderNumber has been applied."


class NotPlacedCorrectly(RequestError):
    code = 506
    message = "Order was not placed correctly. Contact us for more details."


class AlreadyCancelled(RequestError):
    code = 507
    message = "Order has already been cancelled before."


class ProductionStarted(RequestError):
    code = 508
    message = "Impossible to cancel order. Production has already been started. Contact us for more details."


class ProcessingStarted(RequestError):
    code = 509
    message = "Impossible to cancel order. Order processing has already been started. Contact us for more details."


def cancellation_refusal(order: Order) -> RequestError | None:
    """Say why the order cannot be cancelled, in the documented precedence, or None if it can."""
    if order.status is ProductionStatus.CANCELLED:
        return AlreadyCancelled()
    if order.status is ProductionStatus.DRAFT or order.payment_status is PaymentStatus.NOK:
        return NotPlacedCorrectly()
    if order.status not in OPEN_STATUSES:
        return ProductionStarted()
    if order.engineer is not None:
        return ProcessingStarted()
    return None


@dataclass(frozen=True, slots=True)
class Lookup:
    """How a request names an order: by its number or by its ID."""

    by_id: bool
    value: str

    @property
    def not_found(self) -> RequestError:
        return WrongOrderId() if self.by_id else WrongOrderNumber()


@dataclass(frozen=True, slots=True)
class Outcome:
    """The answer to one cancellation request: the order as far as it is known, and why not."""

    order_id: str | None
    order_number: str | None
    error: RequestError | None = None

    @property
    def is_canceled(self) -> bool:
        return self.error is None


# Lifecycle -----------------------------------------------------------------------------------

_NEXT_STATUSES: dict[ProductionStatus, frozenset[ProductionStatus]] = {
    ProductionStatus.DRAFT: frozenset({ProductionStatus.ORDERED}),
    ProductionStatus.ORDERED: frozenset({ProductionStatus.PROCESSING}),
    ProductionStatus.PROCESSING: frozenset({ProductionStatus.IN_PRODUCTION}),
    ProductionStatus.IN_PRODUCTION: frozenset({ProductionStatus.READY_TO_SHIP, ProductionStatus.READY_TO_PICK_UP}),
    ProductionStatus.READY_TO_SHIP: frozenset({ProductionStatus.SHIPPED}),
    ProductionStatus.READY_TO_PICK_UP: frozenset({ProductionStatus.SHIPPED}),
    ProductionStatus.SHIPPED: frozenset({ProductionStatus.DELIVERED}),
    ProductionStatus.DELIVERED: frozenset(),
    ProductionStatus.CANCELLED: frozenset(),
    ProductionStatus.INVALID: frozenset(),
}
_END_STATUSES = frozenset({ProductionStatus.DELIVERED, ProductionStatus.CANCELLED, ProductionStatus.INVALID})


def statuses_before(target: ProductionStatus) -> frozenset[ProductionStatus]:
    """Return the production statuses an order may move to target from."""
    if target is ProductionStatus.INVALID:
        return frozenset(ProductionStatus) - _END_STATUSES
    if target is ProductionStatus.CANCELLED:
        return OPEN_STATUSES
    return frozenset(s for s, nexts in _NEXT_STATUSES.items() if target in nexts)


def payments_before(target: PaymentStatus) -> frozenset[PaymentStatus]:
    """Return the payment statuses an order may move to target from."""
    return frozenset() if target is PaymentStatus.PENDING else frozenset({PaymentStatus.PENDING})


def lookup(value: str | None, *, by_id: bool) -> Lookup:
    """Read the order a request names; raise the documented error when it names none."""
    text = (value or "").strip()
    if not text:
        raise MissingOrderId() if by_id else MissingOrderNumber()
    if not by_id:
        # A value no order number can have is never looked up (nor sent to the database).
        if not is_order_number(text):
            raise WrongOrderNumber()
        return Lookup(False, text)
    guid = parse_guid(text)
    if guid is None:
        raise WrongOrderId()
    return Lookup(True, guid)
