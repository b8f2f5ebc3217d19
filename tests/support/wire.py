"""Speak the wire format in tests: build request bodies and read responses in either format."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from xml.etree import ElementTree

import httpx

BY_NUMBER = "/web-api/order/CancelOrderByNumber"
BY_ID = "/web-api/order/CancelOrderById"
FIELD = {BY_NUMBER: "orderNumber", BY_ID: "orderId"}
MEDIA = {"json": "application/json", "xml": "text/xml"}
#: The documented message of every requestError code.
MESSAGES = {
    401: "Unauthorized",
    500: "Unknown Error. Try again later. If the problem persists, please contact us.",
    501: "Wrong request body. Check if all parameters set correctly.",
    502: "Please, send OrderId of order you want to cancel.",
    503: "Please, send OrderNumber of order you want to cancel.",
    504: "Wrong OrderId has been applied.",
    505: "Wrong OrderNumber has been applied.",
    506: "Order was not placed correctly. Contact us for more details.",
    507: "Order has already been cancelled before.",
    508: "Impossible to cancel order. Production has already been started. Contact us for more details.",
    509: "Impossible to cancel order. Order processing has already been started. Contact us for more details.",
}


def request_body(fmt: str, endpoint: str, value: str) -> bytes:
    field = FIELD[endpoint]
    if fmt == "json":
        return httpx.Request("POST", "/", json={field: value}).content
    root = "CancelOrderByNumberRequest" if endpoint == BY_NUMBER else "CancelOrderByIdRequest"
    escaped = value.replace("&", "&amp;").replace("<", "&lt;")
    return f"<{root}><{field}>{escaped}</{field}></{root}>".encode()


def decode(response: httpx.Response) -> dict[str, Any]:
    """Read a response body of either format into the JSON shape, with XML types restored."""
    media_type = response.headers["content-type"].split(";")[0]
    if "json" in media_type:
        decoded: dict[str, Any] = response.json()
        return decoded
    root = ElementTree.fromstring(response.content)
    assert root.tag == "CancelOrderResponse"
    fields: dict[str, Any] = {}
    for child in root:
        if child.tag == "requestError":
            fields["requestError"] = {
                "message": child.findtext("message"),
                "code": int(child.findtext("code") or 0),
            }
        elif child.tag == "isCanceled":
            assert child.text in ("true", "false")
            fields["isCanceled"] = child.text == "true"
        else:
            fields[child.tag] = child.text
    return fields


@dataclass
class Caller:
    """Post cancellation requests the way an integrator's client does."""

    http: httpx.Client
    api_code: str

    def cancel(
        self, fmt: str, endpoint: str, value: str, *, api_code: str | None = None, accept: str | None = None
    ) -> httpx.Response:
        return self.http.post(
            endpoint,
            content=request_body(fmt, endpoint, value),
            headers={
                "apiCode": self.api_code if api_code is None else api_code,
                "Content-Type": MEDIA[fmt],
                "Accept": accept or MEDIA[fmt],
            },
        )

    def raw(self, endpoint: str, body: bytes, **headers: str) -> httpx.Response:
        headers.setdefault("apiCode", self.api_code)
        headers.setdefault("Accept", "application/json")
        return self.http.post(endpoint, content=body, headers=headers)
