"""A Python client for the Order Cancellation API. It needs nothing but httpx.

    from ordercancel.client import AlreadyCancelled, Client, sandbox_url

    with Client(api_code, base_url=sandbox_url()) as client:
        order = client.create_test_order()                  # the sandbox only
        result = client.cancel_by_number(order.order_number)
        print(result.order_id, result.order_number)

Every refusal is an exception of its own (`AlreadyCancelled`, `OrderNotFound`, ...), all under
`ApiError`, which carries the server's `code` and `message`. `TransportError` means no answer.

Retries: a request is sent again only when the connection failed (refused, reset, timed out,
closed before the answer) or the server answered HTTP 500, up to `retries` more times, waiting
`backoff`, then twice that, and so on (with jitter) in between. Nothing else is retried.

A cancellation can succeed even though its answer is lost on the way back. Its retry then finds
the order cancelled and gets 507 (`AlreadyCancelled`). So **a 507 whose `attempts` is greater
than 1 means the order is cancelled, most likely by our own earlier attempt**: treat it as a
success unless your records show that someone else cancelled it. A 507 on the first attempt
(`attempts == 1`) means the order had been cancelled before this call.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Self
from xml.etree import ElementTree
from xml.sax.saxutils import escape

import httpx

from ordercancel.client._version import __version__

BY_NUMBER_PATH = "/web-api/order/CancelOrderByNumber"
BY_ID_PATH = "/web-api/order/CancelOrderById"
TEST_ORDERS_PATH = "/web-api/sandbox/orders"
#: The response header that names the environment (sandbox or production) that answered.
ENVIRONMENT_HEADER = "x-ordercancel-environment"
#: Where the base URLs of a deployment's two environments are configured.
SANDBOX_URL_VARIABLE = "ORDERCANCEL_SANDBOX_URL"
PRODUCTION_URL_VARIABLE = "ORDERCANCEL_PRODUCTION_URL"
#: The longest wait between two attempts, in seconds.
MAX_BACKOFF = 10.0

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
    ) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
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
    error = (fields or {}).get("requestError")
    if not isinstance(error, Mapping) or not isinstance(error.get("code"), int):
        text = response.text[:200] if response.content else "no body"
        return UnexpectedResponse(
            response.status_code,
            f"HTTP {response.status_code} that is not an answer of this API: {text}",
            status_code=response.status_code,
            environment=environment,
            attempts=attempts,
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
        media_type = MEDIA_TYPES[format]
        self._headers = {
            "apiCode": api_code.strip(),
            "Content-Type": media_type,
            "Accept": media_type,
            "User-Agent": f"ordercancel-client/{__version__}",
        }

    def _delay(self, attempt: int) -> float:
        """Seconds to wait after a failed attempt: exponential, capped, with jitter."""
        return min(self.backoff * 2.0 ** (attempt - 1), MAX_BACKOFF) * random.uniform(0.5, 1.0)

    def _should_retry(self, outcome: httpx.Response | Exception, attempt: int) -> bool:
        if attempt > self.retries:
            return False
        if isinstance(outcome, Exception):
            return isinstance(outcome, RETRIED_FAILURES)
        return outcome.status_code == 500

    @staticmethod
    def _give_up(error: httpx.TransportError, attempts: int) -> TransportError:
        plural = "s" if attempts > 1 else ""
        return TransportError(f"no answer after {attempts} attempt{plural}: {error!r}", attempts)

    def _cancel_request(self, value: str, *, by_id: bool) -> tuple[str, bytes]:
        if by_id:
            return BY_ID_PATH, encode(self.format, "CancelOrderByIdRequest", {"orderId": value})
        return BY_NUMBER_PATH, encode(self.format, "CancelOrderByNumberRequest", {"orderNumber": value})

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
    ) -> None:
        super().__init__(api_code, base_url=base_url, format=format, timeout=timeout, retries=retries, backoff=backoff)
        self._http = httpx.Client(base_url=base_url, timeout=timeout, transport=transport, headers=self._headers)

    def _post(self, path: str, content: bytes) -> tuple[httpx.Response, int]:
        attempt = 0
        while True:
            attempt += 1
            try:
                response = self._http.post(path, content=content)
            except httpx.TransportError as error:
                if not self._should_retry(error, attempt):
                    raise self._give_up(error, attempt) from error
            else:
                if not self._should_retry(response, attempt):
                    return response, attempt
            time.sleep(self._delay(attempt))

    def cancel_by_number(self, order_number: str) -> Cancellation:
        """Cancel an order by its number; raise the refusal's exception when it cannot be."""
        return cancellation(*self._post(*self._cancel_request(order_number, by_id=False)))

    def cancel_by_id(self, order_id: str) -> Cancellation:
        """Cancel an order by its ID (a GUID); raise the refusal's exception when it cannot be."""
        return cancellation(*self._post(*self._cancel_request(order_id, by_id=True)))

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
    ) -> None:
        super().__init__(api_code, base_url=base_url, format=format, timeout=timeout, retries=retries, backoff=backoff)
        self._http = httpx.AsyncClient(base_url=base_url, timeout=timeout, transport=transport, headers=self._headers)

    async def _post(self, path: str, content: bytes) -> tuple[httpx.Response, int]:
        attempt = 0
        while True:
            attempt += 1
            try:
                response = await self._http.post(path, content=content)
            except httpx.TransportError as error:
                if not self._should_retry(error, attempt):
                    raise self._give_up(error, attempt) from error
            else:
                if not self._should_retry(response, attempt):
                    return response, attempt
            await asyncio.sleep(self._delay(attempt))

    async def cancel_by_number(self, order_number: str) -> Cancellation:
        """Cancel an order by its number; raise the refusal's exception when it cannot be."""
        return cancellation(*await self._post(*self._cancel_request(order_number, by_id=False)))

    async def cancel_by_id(self, order_id: str) -> Cancellation:
        """Cancel an order by its ID (a GUID); raise the refusal's exception when it cannot be."""
        return cancellation(*await self._post(*self._cancel_request(order_id, by_id=True)))

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
    "MissingOrderReference",
    "NotPlacedCorrectly",
    "OrderNotFound",
    "ProcessingStarted",
    "ProductionStarted",
    "SandboxOrder",
    "ServerError",
    "TransportError",
    "Unauthorized",
    "UnexpectedResponse",
    "__version__",
    "production_url",
    "sandbox_url",
]
