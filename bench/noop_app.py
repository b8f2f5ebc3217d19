"""The HTTP ceiling for `make bench`: our server stack (uvicorn, web.App) answering a no-op route.

It reads the body and answers a fixed JSON document on the cancellation path, with the same
error fallback and default headers as the service: everything but negotiation, the codec and
the database. `uvicorn --factory bench.noop_app:create_app`.
"""

from __future__ import annotations

import orjson

from ordercancel.http.app import BY_NUMBER_PATH, ENVIRONMENT_HEADER, error_response
from ordercancel.http.core import App, Request, Response, Route

_BODY = orjson.dumps({"orderNumber": "IMC000000", "isCanceled": False})
_CONTENT_TYPE = b"application/json; charset=utf-8"


async def noop(request: Request) -> Response:
    await request.body()
    return Response(200, _BODY, _CONTENT_TYPE)


async def health(request: Request) -> Response:
    return Response(200, b'{"status":"ok"}', _CONTENT_TYPE)


def create_app() -> App:
    return App(
        [Route(BY_NUMBER_PATH, {"POST": noop}), Route("/healthz", {"GET": health})],
        error=error_response,
        default_headers=[(ENVIRONMENT_HEADER, b"sandbox")],
    )
