"""A Python client for the Order Cancellation API. It needs nothing but httpx.

    from ordercancel.client import AlreadyCancelled, Client, sandbox_url

    with Client(api_code, base_url=sandbox_url()) as client:
        order = client.create_test_order()                  # the sandbox only
        result = client.cancel_by_number(order.order_number)
        print(result.order_id, result.order_number)

Every refusal is an exception of its own (`AlreadyCancelled`, `OrderNotFound`, ...), all under
`ApiError`, which carries the server's `code` and `message`. `TransportError` means no answer.

Retries: a request is sent again only when the connection failed (refused, reset, timed out,
closed before the answer) or the server answered HTTP 500 or 409 (a request with the same
Idempotency-Key still being processed), up to `retries` more times, waiting `backoff`, then
twice that, and so on (with jitter) in between. Nothing else is retried.

Every cancellation carries an Idempotency-Key (yours, or a new UUID4 per call), sent again with
each retry of that call. A cancellation can succeed even though its answer is lost on the way
back: its retry then gets the same success again (`Cancellation.replayed` is True), not 507.
`AlreadyCancelled.retried` (a 507 after more than one attempt) tells the same story for a
server without idempotency keys; with them, a 507 means the order was cancelled before the call.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Self
from xml.etree import ElementTree
from xml.sax.saxutils import escape

import httpx

from ordercancel.client._version import __version__
from ordercancel.client.webhooks import InvalidSignature, verify_webhook

BY_NUMBER_PATH = "/web-api/order/CancelOrderByNumber"
BY_ID_PATH = "/web-api/order/CancelOrderById"
TEST_ORDERS_PATH = "/web-api/sandbox/orders"
#: The response header that names the environment (sandbox or production) that answered.
ENVIRONMENT_HEADER = "x-ordercancel-environment"
#: The sandbox's one-sentence explanation of a refusal (never sent by production).
HINT_HEADER = "x-ordercancel-hint"
#: Where the base URLs of a deployment's two environments are configured.
SANDBOX_URL_VARIABLE = "ORDERCANCEL_SANDBOX_URL"
PRODUCTION_URL_VARIABLE = "ORDERCANCEL_PRODUCTION_URL"
#: The longest wait between two attempts, in seconds.
MAX_BACKOFF = 10.0
#: Answers retried: the server failed (nothing was committed), asked us to slow down, or is still
#: processing a request with the same Idempotency-Key.
RETRIED_STATUSES = frozenset({409, 429, 500})
#: Called before each wait between attempts with the seconds it will wait and why.
WaitHook = Callable[[float, str], None]

Format = Literal["json", "xml"]
MEDIA_TYPES: dict[str, str] = {"json": "application/json", "xml": "text/xml"}


def _configured_url(variable: str, env: Mapping[str, str] | None) -> str:
    url = (os.environ if env is None else env).get(variable, "").strip()
    if not url:
        raise LookupError(f"{variable} is not set: give the base URL, such as https://api.example.com")
    return url


def sandbox_url(env: Mapping[str, str] | None = None) -> str:
    """Return the base URL of the sandbox, configured in ORDERCANCEL_SANDBOX_URL."""
    return _configured_url(SANDBOX_URL_VARIABLE, env)


def production_url(env: Mapping[str, str] | None = None) -> str:
    """Return the base URL of production, configured in ORDERCANCEL_PRODUCTION_URL."""
    return _configured_url(PRODUCTION_URL_VARIABLE, env)


# Results and errors -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Cancellation:
    """A cancelled order, and how many attempts the call took."""

    order_id: str
    order_number: str
    #: The environment that answered (from the response header), None if it did not say.
    environment: str | None = None
    attempts: int = 1
    #: The decoded answer, as the server sent it.
    fields: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)
    #: The answer was an earlier attempt's, told again for the same Idempotency-Key.
    replayed: bool = False


@dataclass(frozen=True, slots=True)
class SandboxOrder:
    """A test order the sandbox created."""

    order_id: str
    order_number: str
    status: str
    payment_status: str
    engineer: str | None = None
    environment: str | None = None


class ClientError(Exception):
    """Everything this module raises."""


class TransportError(ClientError):
    """No answer: the connection failed on every attempt. `__cause__` is httpx's error."""

    def __init__(self, message: str, attempts: int) -> None:
        super().__init__(message)
        self.message = message
        self.attempts = attempts


class ApiError(ClientError):
    """The server answered with a refusal: `code` and `message` are its own, unchanged."""

    codes: ClassVar[tuple[int, ...]] = ()

    def __init__(
        self,
        code: int,
        message: str,
        *,
        status_code: int,
        order_id: str | None = None,
        order_number: str | None = None,
        environment: str | None = None,
        attempts: int = 1,
        fields: Mapping[str, Any] | None = None,
        hint: str | None = None,
    ) -> None:
        super().__init__(f"{code}: {message}" + (f" (sandbox hint: {hint})" if hint else ""))
        self.code = code
        self.message = message
        #: The sandbox's hint header: why, in one sentence, where the code alone does not say.
        self.hint = hint
        self.status_code = status_code
        self.order_id = order_id
        self.order_number = order_number
        self.environment = environment
        self.attempts = attempts
        #: The decoded answer, as the server sent it.
        self.fields: dict[str, Any] = dict(fields or {})

    @property
    def retried(self) -> bool:
        """Tell whether an earlier attempt went unanswered (see the module's note on 507)."""
        return self.attempts > 1


class Unauthorized(ApiError):
    """The API code is missing, unknown, revoked or from the other environment."""

    codes = (401,)


class InvalidIdempotencyKey(ApiError):
    """The Idempotency-Key is not 1-255 visible ASCII characters (400)."""

    codes = (400,)


class ConflictInFlight(ApiError):
    """A request with the same Idempotency-Key was still being processed (409); retried first."""

    codes = (409,)


class IdempotencyKeyReused(ApiError):
    """The Idempotency-Key was used before for a different request (422); never retried."""

    codes = (422,)


class TooManyRequests(ApiError):
    """Over a rate limit (429); it was retried, after the server's Retry-After, before this was raised."""

    codes = (429,)


class ServerError(ApiError):
    """The server failed (500); it was retried before this was raised."""

    codes = (500,)


class BadRequestBody(ApiError):
    """The server could not read the request (501)."""

    codes = (501,)


class MissingOrderReference(ApiError):
    """The request named no order (502 by ID, 503 by number)."""

    codes = (502, 503)


class OrderNotFound(ApiError):
    """No such order for this API code (504 by ID, 505 by number)."""

    codes = (504, 505)


class NotPlacedCorrectly(ApiError):
    """The order is a draft or its payment failed (506)."""

    codes = (506,)


class AlreadyCancelled(ApiError):
    """The order is cancelled already (507): if `retried`, most likely by this very call."""

    codes = (507,)


class ProductionStarted(ApiError):
    """Production has started (508)."""

    codes = (508,)


class ProcessingStarted(ApiError):
    """An engineer is processing the order (509)."""

    codes = (509,)


class UnexpectedResponse(ApiError):
    """An answer that is not this API's (a proxy's error page, say); `code` is the HTTP status."""


ERRORS: dict[int, type[ApiError]] = {
    code: kind
    for kind in (
        Unauthorized,
        InvalidIdempotencyKey,
        ConflictInFlight,
        IdempotencyKeyReused,
        TooManyRequests,
        ServerError,
        BadRequestBody,
        MissingOrderReference,
        OrderNotFound,
        NotPlacedCorrectly,
        AlreadyCancelled,
        ProductionStarted,
        ProcessingStarted,
    )
    for code in kind.codes
}


# The wire -----------------------------------------------------------------------------------


def encode(format: Format, root: str, fields: Mapping[str, str]) -> bytes:
    """Render a request body in the chosen format."""
    if format == "json":
        return json.dumps(dict(fields)).encode()
    inner = "".join(f"<{name}>{escape(value)}</{name}>" for name, value in fields.items())
    return f'<?xml version="1.0" encoding="utf-8"?><{root}>{inner}</{root}>'.encode()


def _xml_fields(element: ElementTree.Element) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    for child in element:
        name = child.tag.rpartition("}")[2]
        if len(child):
            fields[name] = _xml_fields(child)
        elif name == "isCanceled":
            fields[name] = (child.text or "").strip() == "true"
        elif name == "code":
            fields[name] = int((child.text or "").strip())
        else:
            fields[name] = child.text or ""
    return fields


def decode(response: httpx.Response) -> dict[str, Any] | None:
    """Read an answer in whichever format it came; None when it is not a document of ours."""
    media_type = response.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    content = response.content
    try:
        if media_type.endswith("json"):
            document = json.loads(content)
            return document if isinstance(document, dict) else None
        if media_type.endswith("xml"):
            # Our answers never declare a DTD; refusing one means no entity is ever expanded.
            if b"<!" in content:
                return None
            return _xml_fields(ElementTree.fromstring(content))  # noqa: S314 - no DTD, see above
    except (ValueError, SyntaxError):  # bad JSON, bad XML (ElementTree's ParseError), a code not a number
        return None
    return None


def _error(response: httpx.Response, fields: Mapping[str, Any] | None, attempts: int) -> ApiError:
    environment = response.headers.get(ENVIRONMENT_HEADER)
    hint = response.headers.get(HINT_HEADER)
    error = (fields or {}).get("requestError")
    if not isinstance(error, Mapping) or not isinstance(error.get("code"), int):
        text = response.text[:200] if response.content else "no body"
        return UnexpectedResponse(
            response.status_code,
            f"HTTP {response.status_code} that is not an answer of this API: {text}",
            status_code=response.status_code,
            environment=environment,
            attempts=attempts,
            hint=hint,
        )
    assert fields is not None
    kind = ERRORS.get(error["code"], ApiError)
    return kind(
        error["code"],
        str(error.get("message", "")),
        status_code=response.status_code,
        order_id=fields.get("orderId"),
        order_number=fields.get("orderNumber"),
        environment=environment,
        attempts=attempts,
        fields=fields,
        hint=hint,
    )


def cancellation(response: httpx.Response, attempts: int) -> Cancellation:
    """Return the cancellation an answer reports, or raise the refusal it carries."""
    fields = decode(response)
    if response.status_code == 200 and fields is not None and fields.get("isCanceled") is True:
        return Cancellation(
            str(fields.get("orderId", "")),
            str(fields.get("orderNumber", "")),
            response.headers.get(ENVIRONMENT_HEADER),
            attempts,
            fields,
            response.headers.get("idempotent-replayed") == "true",
        )
    raise _error(response, fields, attempts)


def sandbox_order(response: httpx.Response, attempts: int) -> SandboxOrder:
    """Return the test order an answer reports, or raise the refusal it carries."""
    fields = decode(response)
    if response.status_code == 200 and fields is not None and "orderId" in fields:
        return SandboxOrder(
            str(fields["orderId"]),
            str(fields.get("orderNumber", "")),
            str(fields.get("status", "")),
            str(fields.get("paymentStatus", "")),
            fields.get("engineer"),
            response.headers.get(ENVIRONMENT_HEADER),
        )
    raise _error(response, fields, attempts)


#: The reasons a cancellation may give.
REASONS = ("CustomerRequest", "DuplicateOrder", "WrongModel", "WrongMaterialOrFinish", "PriceOrDeliveryTime", "Other")
#: Connection failures worth another attempt; a bad URL scheme or a proxy refusal is not.
RETRIED_FAILURES = (httpx.NetworkError, httpx.TimeoutException, httpx.RemoteProtocolError)


class _Base:
    """What both clients share: configuration, request bodies, and the retry schedule."""

    def __init__(
        self,
        api_code: str,
        *,
        base_url: str,
        format: Format = "json",
        timeout: float = 10.0,
        retries: int = 2,
        backoff: float = 0.2,
        on_wait: WaitHook | None = None,
    ) -> None:
        if format not in MEDIA_TYPES:
            raise ValueError(f"format must be 'json' or 'xml', not {format!r}")
        if not base_url.lower().startswith(("http://", "https://")):
            raise ValueError(f"base_url must be an http:// or https:// URL, not {base_url!r}")
        if retries < 0 or backoff < 0:
            raise ValueError("retries and backoff cannot be negative")
        self.format: Format = format
        self.base_url = base_url
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self._on_wait = on_wait
        media_type = MEDIA_TYPES[format]
        self._headers = {
            "apiCode": api_code.strip(),
            "Content-Type": media_type,
            "Accept": media_type,
            "User-Agent": f"ordercancel-client/{__version__}",
        }

    def _delay(self, attempt: int, outcome: httpx.Response | Exception) -> float:
        """Seconds to wait after a failed attempt: the server's Retry-After when it gave one, else
        exponential with jitter; never more than MAX_BACKOFF. Tell the on_wait hook."""
        delay = min(self.backoff * 2.0 ** (attempt - 1), MAX_BACKOFF) * random.uniform(0.5, 1.0)
        reason = repr(outcome) if isinstance(outcome, Exception) else f"HTTP {outcome.status_code}"
        if isinstance(outcome, httpx.Response):
            retry_after = outcome.headers.get("retry-after", "")
            if retry_after.isdigit():
                delay = min(float(retry_after), MAX_BACKOFF)
                reason += f" (Retry-After: {retry_after})"
        if self._on_wait is not None:
            self._on_wait(delay, reason)
        return delay

    def _should_retry(self, outcome: httpx.Response | Exception, attempt: int) -> bool:
        if attempt > self.retries:
            return False
        if isinstance(outcome, Exception):
            return isinstance(outcome, RETRIED_FAILURES)
        return outcome.status_code in RETRIED_STATUSES

    @staticmethod
    def _give_up(error: httpx.TransportError, attempts: int) -> TransportError:
        plural = "s" if attempts > 1 else ""
        return TransportError(f"no answer after {attempts} attempt{plural}: {error!r}", attempts)

    def _cancel_request(
        self, value: str, by_id: bool, reason: str | None, note: str | None, idempotency_key: str | None
    ) -> tuple[str, bytes, dict[str, str]]:
        fields = {"orderId" if by_id else "orderNumber": value}
        if reason is not None:
            fields["reason"] = reason
        if note is not None:
            fields["note"] = note
        root = "CancelOrderByIdRequest" if by_id else "CancelOrderByNumberRequest"
        # One key per call, the same for every retry of it: a retry of a success is that success.
        headers = {"Idempotency-Key": idempotency_key or str(uuid.uuid4())}
        return BY_ID_PATH if by_id else BY_NUMBER_PATH, encode(self.format, root, fields), headers

    def _test_order_request(self, status: str, payment_status: str, engineer: str | None) -> bytes:
        fields = {"status": status, "paymentStatus": payment_status}
        if engineer:
            fields["engineer"] = engineer
        return encode(self.format, "CreateTestOrderRequest", fields)


class Client(_Base):
    """The API, synchronously. Use it as a context manager, or call close()."""

    def __init__(
        self,
        api_code: str,
        *,
        base_url: str,
        format: Format = "json",
        timeout: float = 10.0,
        transport: httpx.BaseTransport | None = None,
        retries: int = 2,
        backoff: float = 0.2,
        on_wait: WaitHook | None = None,
    ) -> None:
        super().__init__(
            api_code,
            base_url=base_url,
            format=format,
            timeout=timeout,
            retries=retries,
            backoff=backoff,
            on_wait=on_wait,
        )
        self._http = httpx.Client(base_url=base_url, timeout=timeout, transport=transport, headers=self._headers)

    def _post(self, path: str, content: bytes, headers: dict[str, str] | None = None) -> tuple[httpx.Response, int]:
        attempt = 0
        while True:
            attempt += 1
            outcome: httpx.Response | httpx.TransportError
            try:
                outcome = self._http.post(path, content=content, headers=headers)
            except httpx.TransportError as error:
                if not self._should_retry(error, attempt):
                    raise self._give_up(error, attempt) from error
                outcome = error
            else:
                if not self._should_retry(outcome, attempt):
                    return outcome, attempt
            time.sleep(self._delay(attempt, outcome))

    def cancel_by_number(
        self,
        order_number: str,
        *,
        reason: str | None = None,
        note: str | None = None,
        idempotency_key: str | None = None,
    ) -> Cancellation:
        """Cancel an order by its number; raise the refusal's exception when it cannot be."""
        request = self._cancel_request(
            order_number, by_id=False, reason=reason, note=note, idempotency_key=idempotency_key
        )
        return cancellation(*self._post(*request))

    def cancel_by_id(
        self,
        order_id: str,
        *,
        reason: str | None = None,
        note: str | None = None,
        idempotency_key: str | None = None,
    ) -> Cancellation:
        """Cancel an order by its ID (a GUID); raise the refusal's exception when it cannot be."""
        request = self._cancel_request(order_id, True, reason, note, idempotency_key)
        return cancellation(*self._post(*request))

    def create_test_order(
        self, *, status: str = "Ordered", payment_status: str = "PaymentOK", engineer: str | None = None
    ) -> SandboxOrder:
        """Create an order in the given state for this API code (the sandbox only)."""
        body = self._test_order_request(status, payment_status, engineer)
        return sandbox_order(*self._post(TEST_ORDERS_PATH, body))

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class AsyncClient(_Base):
    """The API, for asyncio. Use it as an async context manager, or await aclose()."""

    def __init__(
        self,
        api_code: str,
        *,
        base_url: str,
        format: Format = "json",
        timeout: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
        retries: int = 2,
        backoff: float = 0.2,
        on_wait: WaitHook | None = None,
    ) -> None:
        super().__init__(
            api_code,
            base_url=base_url,
            format=format,
            timeout=timeout,
            retries=retries,
            backoff=backoff,
            on_wait=on_wait,
        )
        self._http = httpx.AsyncClient(base_url=base_url, timeout=timeout, transport=transport, headers=self._headers)

    async def _post(
        self, path: str, content: bytes, headers: dict[str, str] | None = None
    ) -> tuple[httpx.Response, int]:
        attempt = 0
        while True:
            attempt += 1
            outcome: httpx.Response | httpx.TransportError
            try:
                outcome = await self._http.post(path, content=content, headers=headers)
            except httpx.TransportError as error:
                if not self._should_retry(error, attempt):
                    raise self._give_up(error, attempt) from error
                outcome = error
            else:
                if not self._should_retry(outcome, attempt):
                    return outcome, attempt
            await asyncio.sleep(self._delay(attempt, outcome))

    async def cancel_by_number(
        self,
        order_number: str,
        *,
        reason: str | None = None,
        note: str | None = None,
        idempotency_key: str | None = None,
    ) -> Cancellation:
        """Cancel an order by its number; raise the refusal's exception when it cannot be."""
        request = self._cancel_request(
            order_number, by_id=False, reason=reason, note=note, idempotency_key=idempotency_key
        )
        return cancellation(*await self._post(*request))

    async def cancel_by_id(
        self,
        order_id: str,
        *,
        reason: str | None = None,
        note: str | None = None,
        idempotency_key: str | None = None,
    ) -> Cancellation:
        """Cancel an order by its ID (a GUID); raise the refusal's exception when it cannot be."""
        request = self._cancel_request(order_id, True, reason, note, idempotency_key)
        return cancellation(*await self._post(*request))

    async def create_test_order(
        self, *, status: str = "Ordered", payment_status: str = "PaymentOK", engineer: str | None = None
    ) -> SandboxOrder:
        """Create an order in the given state for this API code (the sandbox only)."""
        body = self._test_order_request(status, payment_status, engineer)
        return sandbox_order(*await self._post(TEST_ORDERS_PATH, body))

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


__all__ = [
    "AlreadyCancelled",
    "ApiError",
    "AsyncClient",
    "BadRequestBody",
    "Cancellation",
    "Client",
    "ClientError",
    "ConflictInFlight",
    "IdempotencyKeyReused",
    "InvalidIdempotencyKey",
    "InvalidSignature",
    "MissingOrderReference",
    "NotPlacedCorrectly",
    "OrderNotFound",
    "ProcessingStarted",
    "ProductionStarted",
    "SandboxOrder",
    "ServerError",
    "TooManyRequests",
    "TransportError",
    "Unauthorized",
    "UnexpectedResponse",
    "__version__",
    "production_url",
    "sandbox_url",
    "verify_webhook",
]
