"""Cancellation events: what a change to an order tells the world, and who may be told.

The events are written by the database itself, in the transaction of the change they describe
(the outbox: storage/migrations/versions/0008); this module says what they mean and how they
look on the wire (the Standard Webhooks shape), which endpoints may hear of them, the retry
schedule, and which webhook URLs may be called at all. It imports nothing of ours but the domain.
"""

from __future__ import annotations

import base64
import ipaddress
import random
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from urllib.parse import urlsplit

from ordercancel.domain import CancelledBy, PaymentStatus, ProductionStatus


class EventType(StrEnum):
    #: The order was cancelled, through the API or by an operator.
    CANCELLED = "order.cancelled"
    #: Any other lifecycle transition: the production status or the payment status moved.
    STATUS_CHANGED = "order.status_changed"
    #: An engineer started processing the order.
    CLAIMED = "order.claimed"
    #: The engineer's claim ended.
    RELEASED = "order.released"


#: Each type's bit in an endpoint's subscription mask. Stored in the database (webhook_endpoints.
#: event_mask) and tested by its trigger (migration 0008): the values never change.
EVENT_BITS: dict[EventType, int] = {
    EventType.CANCELLED: 1,
    EventType.STATUS_CHANGED: 2,
    EventType.CLAIMED: 4,
    EventType.RELEASED: 8,
}
ALL_EVENTS = sum(EVENT_BITS.values())


class InvalidSubscription(ValueError):
    """An endpoint's URL or event types cannot be used; the message says why, in one line."""


def event_mask(types: Iterable[str] | None) -> int:
    """Read the event types an endpoint wants (None or empty: all of them) as its mask."""
    chosen = [text.strip() for text in types or () if text.strip()]
    mask = 0
    for text in chosen:
        try:
            mask |= EVENT_BITS[EventType(text)]
        except ValueError:
            raise InvalidSubscription(f"unknown event type {text[:60]!r}; one of: {', '.join(EventType)}") from None
    return mask or ALL_EVENTS


def event_types(mask: int) -> list[str]:
    """The event types a mask stands for, in their documented order."""
    return [kind.value for kind, bit in EVENT_BITS.items() if mask & bit]


# Secrets ---------------------------------------------------------------------------------------

SECRET_PREFIX = "whsec_"  # noqa: S105 (a prefix, not a secret)
#: Random bytes in a new secret (the Standard Webhooks minimum is 24).
SECRET_BYTES = 32


def new_secret(token_bytes: Callable[[int], bytes] = secrets.token_bytes) -> str:
    """Make an endpoint's signing secret: whsec_ and the base64 of 32 random bytes."""
    return SECRET_PREFIX + base64.b64encode(token_bytes(SECRET_BYTES)).decode()


def new_endpoint_id(token_hex: Callable[[int], str] = secrets.token_hex) -> str:
    """Name a new endpoint: ep_ and 16 random hex digits (not a count of everyone's endpoints)."""
    return "ep_" + token_hex(8)


# The payload -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Event:
    """One event as the outbox keeps it: the order after the change, and what it was before."""

    event_id: str
    type: EventType
    occurred_at: datetime
    environment: str
    order_id: str
    order_number: str
    #: Per order: 1 for its first event, one more for each after it.
    sequence: int
    status: ProductionStatus
    payment_status: PaymentStatus
    from_status: ProductionStatus
    from_payment: PaymentStatus
    #: The engineer who holds the order (claimed), or held it (released); shown to operators only.
    engineer: str | None = None
    cancelled_at: datetime | None = None
    cancellation_reason: str | None = None
    cancellation_note: str | None = None
    cancelled_by: CancelledBy | None = None


def rfc3339(value: datetime) -> str:
    """A UTC instant as RFC 3339 with a Z, to the microsecond."""
    return value.replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def payload(event: Event, *, operator: bool) -> dict[str, object]:
    """The body of a delivery: {"type", "timestamp", "data"}, as the Standard Webhooks spec shapes it.

    An operator endpoint also sees people's names (the engineer, the operator who cancelled);
    an integrator's endpoint sees what its own API answers could tell it, and no names of staff.
    """
    data: dict[str, object] = {
        "orderId": event.order_id,
        "orderNumber": event.order_number,
        "environment": event.environment,
        "status": event.status.value,
        "paymentStatus": event.payment_status.value,
        "sequence": event.sequence,
    }
    if event.type is EventType.STATUS_CHANGED:
        data["from"] = {"status": event.from_status.value, "paymentStatus": event.from_payment.value}
        data["to"] = {"status": event.status.value, "paymentStatus": event.payment_status.value}
    if event.type is EventType.CANCELLED:
        by = event.cancelled_by
        if by is not None and not operator:  # no staff names, and no row ids of our tables
            by = CancelledBy(by.kind)
        data["cancelledAt"] = None if event.cancelled_at is None else rfc3339(event.cancelled_at)
        data["cancellationReason"] = event.cancellation_reason
        data["cancellationNote"] = event.cancellation_note
        data["cancelledBy"] = None if by is None else {k: v for k, v in by.fields().items() if v is not None}
    if operator and event.engineer is not None:
        data["engineer"] = event.engineer
    return {"type": event.type.value, "timestamp": rfc3339(event.occurred_at), "data": data}


# Retries ---------------------------------------------------------------------------------------

#: Seconds one delivery attempt may take, from connecting to the end of the answer.
DEFAULT_TIMEOUT = 15.0

#: Seconds before each retry after a failed attempt: 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h.
DEFAULT_SCHEDULE: tuple[float, ...] = (5, 300, 1800, 7200, 18000, 36000, 36000)
#: Each delay is moved by up to this fraction either way, so that retries do not arrive in step.
JITTER = 0.1


def retry_delay(
    failed_attempts: int, schedule: tuple[float, ...], uniform: Callable[[float, float], float] = random.uniform
) -> float | None:
    """Seconds until the next attempt after this many failed ones, or None: the delivery has failed."""
    if failed_attempts < 1 or failed_attempts > len(schedule):
        return None
    delay = schedule[failed_attempts - 1]
    return delay * uniform(1 - JITTER, 1 + JITTER)


# Which URLs may be called ----------------------------------------------------------------------

#: Longest endpoint URL accepted.
MAX_URL_LENGTH = 2048


def check_url(url: str, *, https_only: bool) -> str:
    """Return the URL trimmed when an endpoint may have it, or raise InvalidSubscription saying why.

    The address its host resolves to is checked apart (`forbidden_address`): when it is
    registered and again at every delivery, since a name can change its address.
    """
    text = url.strip()
    if not text or len(text) > MAX_URL_LENGTH or not text.isascii() or not text.isprintable() or " " in text:
        raise InvalidSubscription(f"a webhook URL is at most {MAX_URL_LENGTH} printable ASCII characters")
    parts = urlsplit(text)
    allowed = ("https",) if https_only else ("https", "http")
    if parts.scheme.lower() not in allowed:
        raise InvalidSubscription(f"a webhook URL must be {' or '.join(allowed)}, not {parts.scheme or 'schemeless'}")
    try:
        host, _port = parts.hostname, parts.port
    except ValueError:
        raise InvalidSubscription("the webhook URL's port is not a number from 0 to 65535") from None
    if not host:
        raise InvalidSubscription("the webhook URL has no host")
    if parts.username is not None or parts.password is not None:
        raise InvalidSubscription("a webhook URL carries no user name or password: sign with the secret instead")
    if parts.fragment:
        raise InvalidSubscription("a webhook URL has no #fragment")
    return text


def forbidden_address(address: str) -> bool:
    """Tell whether a webhook may not be sent to this IP address: loopback, private, link-local,
    multicast, unspecified, reserved or otherwise not global."""
    ip: ipaddress.IPv4Address | ipaddress.IPv6Address = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address):
        # An IPv4 address carried inside IPv6 (mapped, 6to4, Teredo) is judged as itself.
        if ip.teredo is not None and any(forbidden_address(str(inner)) for inner in ip.teredo):
            return True
        embedded = ip.ipv4_mapped or ip.sixtofour
        if embedded is not None:
            ip = embedded
    return (
        ip.is_loopback
        or ip.is_private
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_unspecified
        or ip.is_reserved
        or not ip.is_global
    )
