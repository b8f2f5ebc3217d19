"""Signing and verifying webhook deliveries, as the Standard Webhooks specification has them.

A receiver calls `verify_webhook(body, headers, secret)` with the raw body it received (bytes,
before any JSON parsing) and the request's headers, and gets the event back, or InvalidSignature.
The service signs with `sign`, so there is one statement of the signature here.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time
from collections.abc import Iterable, Mapping
from typing import Any

SECRET_PREFIX = "whsec_"  # noqa: S105 (a prefix, not a secret)
#: How far a delivery's timestamp may be from the receiver's clock, either way, in seconds.
TOLERANCE = 5 * 60
ID_HEADER = "webhook-id"
TIMESTAMP_HEADER = "webhook-timestamp"
SIGNATURE_HEADER = "webhook-signature"


class InvalidSignature(Exception):
    """The delivery is not signed by any of the secrets given, or its timestamp is too far off."""


def _key(secret: str) -> bytes:
    text = secret.strip()
    text = text.removeprefix(SECRET_PREFIX)
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("a webhook secret is whsec_ followed by base64") from None


def signature(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """Return one `v1,<base64>` signature of a delivery: HMAC-SHA256 of "id.timestamp.body"."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def sign(secrets: Iterable[str], msg_id: str, timestamp: int, body: bytes) -> str:
    """Return the webhook-signature header: one signature per secret, space-separated."""
    return " ".join(signature(secret, msg_id, timestamp, body) for secret in secrets)


def verify_webhook(
    body: bytes | str,
    headers: Mapping[str, str],
    secret: str | Iterable[str],
    *,
    now: float | None = None,
    tolerance: float = TOLERANCE,
) -> dict[str, Any]:
    """Return the event a delivery carries, once its signature and timestamp are verified.

    `secret` is the endpoint's whsec_ secret, or several (while one is being rotated); the
    header may carry several signatures, and any one that matches any secret is enough.
    Raise InvalidSignature when none matches, a header is missing, or the timestamp is more
    than `tolerance` seconds away from `now` (replays of old deliveries are refused).
    """
    raw = body.encode() if isinstance(body, str) else bytes(body)
    lowered = {name.lower(): value for name, value in headers.items()}
    msg_id, stamp, header = (lowered.get(name) for name in (ID_HEADER, TIMESTAMP_HEADER, SIGNATURE_HEADER))
    if not msg_id or not stamp or not header:
        raise InvalidSignature("the webhook-id, webhook-timestamp and webhook-signature headers are required")
    try:
        timestamp = int(stamp)
    except ValueError:
        raise InvalidSignature("webhook-timestamp is not a whole number of seconds") from None
    clock = time.time() if now is None else now
    if abs(clock - timestamp) > tolerance:
        raise InvalidSignature("webhook-timestamp is too far from now: an old delivery replayed, or a wrong clock")
    given = {part for part in header.split() if part.startswith("v1,")}
    for candidate in [secret] if isinstance(secret, str) else list(secret):
        expected = signature(candidate, msg_id, timestamp, raw)
        if any(hmac.compare_digest(expected, sent) for sent in given):
            event: dict[str, Any] = json.loads(raw)
            return event
    raise InvalidSignature("no signature matches the secret")
