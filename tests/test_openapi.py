"""The OpenAPI description served at /openapi.json says what the service does."""

from __future__ import annotations

import httpx

from ordercancel.config import Environment
from ordercancel.http.openapi import openapi_document
from tests.support.wire import BY_ID, BY_NUMBER, MESSAGES

SANDBOX = "/web-api/sandbox/orders"


def test_openapi_describes_both_endpoints_media_types_the_api_code_and_every_code(http: httpx.Client) -> None:
    response = http.get("/openapi.json")
    assert response.status_code == 200
    document = response.json()
    assert document["openapi"].startswith("3.1")
    paths = document["paths"]
    assert set(paths) == {BY_NUMBER, BY_ID, SANDBOX}
    media_types = {"application/json", "text/json", "text/xml", "application/xml"}
    for path, item in paths.items():
        if path == SANDBOX:
            continue
        operation = item["post"]
        assert set(operation["requestBody"]["content"]) == media_types
        assert set(operation["responses"]["200"]["content"]) == media_types
        assert {"401", "405", "413", "500"} <= set(operation["responses"])
        described = str(operation["responses"])
        own = {502, 504} if path.endswith("ById") else {503, 505}
        for code in {501, 506, 507, 508, 509} | own:
            assert f"`{code}`: {MESSAGES[code]}" in described
    api_code = document["components"]["parameters"]["apiCode"]
    assert (api_code["in"], api_code["required"], api_code["schema"]["format"]) == ("header", True, "uuid")
    codes = document["components"]["schemas"]["RequestError"]["properties"]["code"]["enum"]
    assert set(codes) == set(MESSAGES) | {400, 409, 422, 429}  # the Idempotency-Key's and the rate limit's


def test_openapi_describes_the_idempotency_key_and_the_reason_and_note(http: httpx.Client) -> None:
    document = http.get("/openapi.json").json()
    key = document["components"]["parameters"]["idempotencyKey"]
    assert (key["name"], key["in"], key["required"]) == ("Idempotency-Key", "header", False)
    for path in ("/web-api/order/CancelOrderByNumber", "/web-api/order/CancelOrderById"):
        operation = document["paths"][path]["post"]
        assert {"$ref": "#/components/parameters/idempotencyKey"} in operation["parameters"]
        assert {"400", "409", "422", "429"} <= set(operation["responses"])
        assert "Idempotent-Replayed" in operation["responses"]["200"]["headers"]
    for schema in ("OrderNumberRequest", "OrderIdRequest"):
        properties = document["components"]["schemas"][schema]["properties"]
        assert properties["reason"]["enum"][0] == "CustomerRequest" and properties["note"]["maxLength"] == 500


def test_the_sandbox_describes_its_test_orders_and_production_does_not(http: httpx.Client) -> None:
    operation = http.get("/openapi.json").json()["paths"][SANDBOX]["post"]
    assert set(operation["requestBody"]["content"]) == {"application/json", "text/json", "text/xml", "application/xml"}
    assert {"200", "401"} <= set(operation["responses"])
    assert SANDBOX not in openapi_document(Environment.PRODUCTION)["paths"]
