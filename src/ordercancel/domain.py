"""Orders, their lifecycle, and the rules that decide whether one may be cancelled.

This module imports nothing of ours: everything else depends on it.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
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


class CancellationReason(StrEnum):
    """Why an order was cancelled, as the one who cancelled it says."""

    CUSTOMER_REQUEST = "CustomerRequest"
    DUPLICATE_ORDER = "DuplicateOrder"
    WRONG_MODEL = "WrongModel"
    WRONG_MATERIAL_OR_FINISH = "WrongMaterialOrFinish"
    PRICE_OR_DELIVERY_TIME = "PriceOrDeliveryTime"
    OTHER = "Other"


#: Longest cancellation note, in characters.
MAX_NOTE_LENGTH = 500


@dataclass(frozen=True, slots=True)
class CancelledBy:
    """Who cancelled an order: an API key (its row id) through the API, or an operator (a name)."""

    kind: str  # "apiKey" or "operator"
    id: int | None = None
    name: str | None = None

    def fields(self) -> dict[str, object]:
        return {"kind": self.kind, "id": self.id} if self.kind == "apiKey" else {"kind": self.kind, "name": self.name}


@dataclass(frozen=True, slots=True)
class Order:
    order_id: str
    order_number: str
    status: ProductionStatus
    payment_status: PaymentStatus
    engineer: str | None = None
    claimed_at: datetime | None = None
    cancelled_at: datetime | None = None
    cancellation_reason: CancellationReason | None = None
    cancellation_note: str | None = None
    cancelled_by: CancelledBy | None = None
    #: When the order was placed: its cancellation window (if one is set) runs from here.
    placed_at: datetime | None = None


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


class InvalidIdempotencyKey(RequestError):
    code = 400
    message = "Idempotency-Key must be 1-255 visible ASCII characters."


class IdempotencyKeyInFlight(RequestError):
    code = 409
    message = "A request with this Idempotency-Key is being processed. Retry later."


class IdempotencyKeyReused(RequestError):
    code = 422
    message = "Idempotency-Key has been used with a different request."


#: The refusal each code stands for: how a stored outcome is told again.
REFUSALS: dict[int, type[RequestError]] = {
    kind.code: kind
    for kind in (
        WrongRequestBody,
        MissingOrderId,
        MissingOrderNumber,
        WrongOrderId,
        WrongOrderNumber,
        NotPlacedCorrectly,
        AlreadyCancelled,
        ProductionStarted,
        ProcessingStarted,
    )
}


def cancellation_details(reason: str | None, note: str | None) -> tuple[CancellationReason | None, str | None]:
    """Read the optional reason and note of a cancellation; raise WrongRequestBody for a bad one."""
    chosen = None
    if reason is not None:
        try:
            chosen = CancellationReason(reason.strip())
        except ValueError:
            raise WrongRequestBody() from None
    if note is not None and (len(note) > MAX_NOTE_LENGTH or not all(c.isprintable() or c in "\n\t" for c in note)):
        raise WrongRequestBody()
    return chosen, note or None


# Who may cancel what --------------------------------------------------------------------------
#
# The one statement of the rule. The hot path's conditional UPDATE (storage/steps.py) and the
# operator's cancellation (storage/service.py) are built from these fields, and a test runs
# that SQL over every status, payment status and engineer and compares it with `allows`.


@dataclass(frozen=True, slots=True)
class CancellationRule:
    """When an order may be cancelled: an open status, a payment not refused, no claim, inside the window."""

    #: The statuses a cancellation may leave.
    statuses: frozenset[ProductionStatus]
    #: The payment statuses that refuse a cancellation (code 506).
    refused_payments: frozenset[PaymentStatus]
    #: Whether the cancellation window binds this rule: past it the order counts as pushed into
    #: the processing queue (code 509).
    windowed: bool = False

    def in_window(self, order: Order, placed_after: datetime | None) -> bool:
        """Tell whether the window lets the order be cancelled: no cutoff, or placed strictly after it."""
        if not self.windowed or placed_after is None:
            return True
        return order.placed_at is None or order.placed_at > placed_after

    def allows(self, order: Order, placed_after: datetime | None = None) -> bool:
        """Tell whether the order may be cancelled under this rule (an engineer's claim always wins)."""
        return (
            order.status in self.statuses
            and order.payment_status not in self.refused_payments
            and order.engineer is None
            and self.in_window(order, placed_after)
        )

    def refusal(self, order: Order, placed_after: datetime | None = None) -> RequestError | None:
        """Say why the order cannot be cancelled, in the documented precedence, or None if it can."""
        if order.status is ProductionStatus.CANCELLED:
            return AlreadyCancelled()
        if order.status is ProductionStatus.DRAFT or order.payment_status in self.refused_payments:
            return NotPlacedCorrectly()
        if order.status not in self.statuses:
            return ProductionStarted()
        if order.engineer is not None or not self.in_window(order, placed_after):
            return ProcessingStarted()
        return None


#: An integrator's request through the API: an order whose payment failed was not placed correctly
#: (506, "contact us"), so the integrator cannot cancel it alone; past the cancellation window the
#: order counts as pushed into the processing queue (509).
CUSTOMER_CANCELLATION = CancellationRule(OPEN_STATUSES, frozenset({PaymentStatus.NOK}), windowed=True)
#: An operator's change (`orders set-status X Cancelled`, the admin API): the "us" of that 506, who
#: settles the contact, so a failed payment does not stop them. The open status and the engineer's
#: claim bind an operator as they bind a customer: a claim is released first, explicitly. The
#: window does not: it keeps integrators from cancelling what the queue may have taken, while the
#: operator can see the order's real state (an engineer's claim, a status) and decide.
OPERATOR_CANCELLATION = CancellationRule(OPEN_STATUSES, frozenset())


def cancellation_refusal(
    order: Order, rule: CancellationRule = CUSTOMER_CANCELLATION, placed_after: datetime | None = None
) -> RequestError | None:
    """Say why the order cannot be cancelled under the rule (a customer's by default), or None if it can."""
    return rule.refusal(order, placed_after)


# The cancellation window ------------------------------------------------------------------------
#
# A key's own window is kept as whole seconds: None follows the setting, 0 lifts the window for
# that key, and a positive number is that key's window.

#: A key's own window that means "no window for this key", whatever the setting says.
NO_WINDOW = 0
#: The longest window, the setting's or a key's: a year (a key's then fits a 32-bit integer).
MAX_WINDOW = timedelta(days=365)


def effective_window(override: int | None, setting: timedelta | None) -> timedelta | None:
    """Return the window that binds a key: its own (None: the setting's; NO_WINDOW: none)."""
    if override is None:
        return setting
    return None if override == NO_WINDOW else timedelta(seconds=override)


def window_cutoff(now: datetime, window: timedelta | None) -> datetime | None:
    """Return the instant an order must have been placed after to be inside the window at `now`.

    The window is half-open: an order placed at P may be cancelled while now < P + window, so at
    exactly P + window it is past.
    """
    return None if window is None else now - window


# The fields of an order -----------------------------------------------------------------------
#
# One validation for every way an order is made: `orders create`, `orders import`, the admin
# API and the sandbox's test orders. Each entrance reads its own format, then calls `new_order`.

#: Longest engineer's name kept.
MAX_ENGINEER_NAME = 100


class InvalidOrderField(ValueError):
    """A field of an order has a value no order can have; the message names the field and says why."""


@dataclass(frozen=True, slots=True)
class NewOrder:
    """The checked fields of an order about to be made; a number or ID left None is given by the service."""

    order_number: str | None
    order_id: str | None
    status: ProductionStatus
    payment_status: PaymentStatus
    engineer: str | None
    #: When the order was placed (UTC); None: when it is made.
    placed_at: datetime | None = None


def may_hold_engineer(status: ProductionStatus) -> bool:
    """Tell whether an order in this status may be claimed by an engineer: only an open one."""
    return status in OPEN_STATUSES


def _person(text: str, role: str) -> str:
    name = text.strip()
    if not name or len(name) > MAX_ENGINEER_NAME or not name.isprintable():
        raise InvalidOrderField(f"an {role}'s name is 1-{MAX_ENGINEER_NAME} printable characters")
    return name


def engineer_name(text: str) -> str:
    """Return an engineer's name trimmed, or refuse one that is empty, too long or unprintable."""
    return _person(text, "engineer")


def operator_name(text: str) -> str:
    """Return an operator's name trimmed, or refuse it as an engineer's name would be refused."""
    return _person(text, "operator")


def parse_status(text: str) -> ProductionStatus:
    """Read a production status by its name, or refuse it listing the names."""
    try:
        return ProductionStatus(text.strip())
    except ValueError:
        raise InvalidOrderField(f"unknown status {text!r}; one of: {', '.join(ProductionStatus)}") from None


def parse_payment(text: str) -> PaymentStatus:
    """Read a payment status by its name, or refuse it listing the names."""
    try:
        return PaymentStatus(text.strip())
    except ValueError:
        raise InvalidOrderField(f"unknown paymentStatus {text!r}; one of: {', '.join(PaymentStatus)}") from None


_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(?:\.\d{1,9})?(?:[Zz]|[+-]\d{2}:\d{2})\Z", re.ASCII)


def parse_placed_at(text: str) -> datetime:
    """Read when an order was placed, an RFC 3339 date-time with its offset, as UTC; or refuse it."""
    value = text.strip()
    shown = value if len(value) <= 40 else value[:37] + "..."
    refusal = f"placedAt {shown!r} is not an RFC 3339 date-time with an offset, such as 2024-05-01T09:30:00Z"
    if not _RFC3339.match(value):
        raise InvalidOrderField(refusal)
    try:
        return datetime.fromisoformat(value.upper()).astimezone(UTC)
    except (ValueError, OverflowError):  # the form is right, the date is not (February 30th, year 0)
        raise InvalidOrderField(refusal) from None


def _given(text: str | None) -> str | None:
    """Absent, and blank, both mean "not given"."""
    return (text or "").strip() or None


def new_order(
    *,
    order_number: str | None = None,
    order_id: str | None = None,
    status: str | None = None,
    payment_status: str | None = None,
    engineer: str | None = None,
    placed_at: str | None = None,
) -> NewOrder:
    """Check an order's fields (defaults: Ordered, PaymentOK, no engineer, placed now); raise InvalidOrderField."""
    number, given_id, name = _given(order_number), _given(order_id), _given(engineer)
    if number is not None and not is_order_number(number):
        raise InvalidOrderField(f"orderNumber {number!r} is not 1-32 letters, digits and dashes")
    canonical_id = None if given_id is None else parse_guid(given_id)
    if given_id is not None and canonical_id is None:
        raise InvalidOrderField(f"orderId {given_id!r} is not a GUID")
    production = ProductionStatus.ORDERED if _given(status) is None else parse_status(status or "")
    payment = PaymentStatus.OK if _given(payment_status) is None else parse_payment(payment_status or "")
    if name is not None:
        name = engineer_name(name)
        if not may_hold_engineer(production):
            held = " or ".join(sorted(OPEN_STATUSES))
            raise InvalidOrderField(f"an engineer can only hold an order that is {held}")
    placed = None if _given(placed_at) is None else parse_placed_at(placed_at or "")
    return NewOrder(number, canonical_id, production, payment, name, placed)


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
    #: The outcome of an earlier request with the same Idempotency-Key, told again.
    replayed: bool = False

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
