"""Integrators' webhook endpoints: `POST/GET /web-api/webhooks`, `DELETE /web-api/webhooks/{id}`.

Authenticated by the API code like the cancel endpoints, in JSON or XML like them. An endpoint
belongs to the API code that made it: it hears of that code's orders only, and another code
can neither see nor remove it (a stranger's endpoint is answered 404, as one that does not exist).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from sqlalchemy import Engine

from ordercancel.codecs import Negotiated, negotiate, request_codec
from ordercancel.config import Settings
from ordercancel.delivery import registrable_url
from ordercancel.domain import RequestError, TooManyRequests, Unauthorized
from ordercancel.events import InvalidSubscription
from ordercancel.http.core import Handler, Request, Response, Route
from ordercancel.http.fairuse import FairUse
from ordercancel.storage import Store, authenticate_now, outbox
from ordercancel.storage.service import AdminError, InvalidValue

WEBHOOKS_PATH = "/web-api/webhooks"
WEBHOOK_PATH = WEBHOOKS_PATH + "/{id}"
#: The XML documents' root elements.
XML_ROOT = "WebhookResponse"
XML_LIST_ROOT = "WebhooksResponse"


class WebhookRefused(RequestError):
    """A request about webhooks refused with its own message (the URL's fault, an unknown id)."""

    def __init__(self, code: int, message: str) -> None:
        self.code = code  # type: ignore[misc]
        self.message = message  # type: ignore[misc]
        Exception.__init__(self, message)


#: The HTTP status of each refusal's code.
_STATUS = {401: 401, 400: 400, 404: 404, 429: 429, 501: 400}
NOT_FOUND = "No webhook endpoint with this id belongs to your apiCode."


def _refusal(negotiated: Negotiated, error: RequestError, headers: list[tuple[bytes, bytes]] | None = None) -> Response:
    body = negotiated.codec.encode({"requestError": {"message": error.message, "code": error.code}}, XML_ROOT)
    return Response(_STATUS.get(error.code, 400), body, negotiated.content_type, headers or [], outcome=error.code)


def _answer(negotiated: Negotiated, status: int, fields: dict[str, object], root: str = XML_ROOT) -> Response:
    return Response(status, negotiated.codec.encode(fields, root), negotiated.content_type, outcome=0)


def _shown(endpoint: outbox.Endpoint) -> dict[str, object]:
    """An endpoint as its integrator sees it (no key ids: it is theirs)."""
    fields = endpoint.fields()
    del fields["apiKeyId"]
    return fields


#: One operation: (the request, its negotiated format, the caller's key id) to its answer.
Action = Callable[[Request, Negotiated, int], Awaitable[Response]]


class Webhooks:
    """The integrators' webhook routes, over the admin use cases' engine."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        engine: Engine,
        fair_use: FairUse,
        key_hash: Callable[[Request], str | None],
    ) -> None:
        self._store = store
        self._fair_use = fair_use
        self._key_hash = key_hash
        self._engine = engine
        self._settings = settings

    def routes(self) -> list[Route]:
        return [
            Route(WEBHOOKS_PATH, {"POST": self._handler(self._add), "GET": self._handler(self._list)}),
            Route(WEBHOOK_PATH, {"DELETE": self._handler(self._remove)}),
        ]

    def _handler(self, action: Action) -> Handler:
        async def handle(request: Request) -> Response:
            negotiated = negotiate(request.header("accept"))
            # The same fair use as the cancel endpoints: an address guessing codes is throttled
            # here too, and a code's calls count against its rate limit.
            throttled = await self._fair_use.address_throttled(request.client)
            if not throttled.allowed:
                return _refusal(negotiated, TooManyRequests(), throttled.headers)
            code_hash = self._key_hash(request)
            # Every call looks the code up itself: a revoked code manages nothing, at once.
            caller = None if code_hash is None else await authenticate_now(self._store, code_hash)
            if caller is None or code_hash is None:
                await self._fair_use.authentication_failed(request.client)
                return _refusal(negotiated, Unauthorized())
            request.key_id = caller.key_id
            admitted = await self._fair_use.admit_key(code_hash, caller.rate_limit)
            if not admitted.allowed:
                return _refusal(negotiated, TooManyRequests(), admitted.headers)
            try:
                response = await action(request, negotiated, caller.key_id)
            except RequestError as error:
                response = _refusal(negotiated, error)
            response.headers.extend(admitted.headers)
            return response

        return handle

    async def _add(self, request: Request, negotiated: Negotiated, key_id: int) -> Response:
        body = await request.body()
        codec = request_codec(request.header("content-type"), body)
        url = codec.field(body, "url")
        types = codec.strings(body, "events")
        if url is None or not url.strip():
            raise WebhookRefused(400, "Send the url of your webhook endpoint.")
        try:
            checked = await registrable_url(url, self._settings)
            endpoint, secret = await asyncio.to_thread(
                outbox.add_endpoint, self._engine, checked, api_key_id=key_id, types=types
            )
        except (InvalidSubscription, InvalidValue) as error:
            raise WebhookRefused(400, str(error)) from None
        return _answer(negotiated, 201, {**_shown(endpoint), "secret": secret})

    async def _list(self, request: Request, negotiated: Negotiated, key_id: int) -> Response:
        endpoints = await asyncio.to_thread(outbox.list_endpoints, self._engine, api_key_id=key_id)
        return _answer(negotiated, 200, {"webhooks": [_shown(e) for e in endpoints]}, XML_LIST_ROOT)

    async def _remove(self, request: Request, negotiated: Negotiated, key_id: int) -> Response:
        try:
            await asyncio.to_thread(outbox.remove_endpoint, self._engine, request.path_params["id"], api_key_id=key_id)
        except AdminError:
            raise WebhookRefused(404, NOT_FOUND) from None
        return Response(204, outcome=0)
