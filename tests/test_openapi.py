"""The OpenAPI description served at /openapi.json says what the service does."""

from __future__ import annotations

from typing import Any

import httpx

from ordercancel.config import Environment
from ordercancel.events import EventType
from ordercancel.http.openapi import openapi_document
from tests.support.wire import BY_ID, BY_NUMBER, MESSAGES

SANDBOX = "/web-api/sandbox/orders"
WEBHOOKS = "/web-api/webhooks"
WEBHOOK = "/web-api/webhooks/{id}"
MEDIA_TYPES = {"application/json", "text/json", "text/xml", "application/xml"}


def test_openapi_describes_both_endpoints_media_types_the_api_code_and_every_code(http: httpx.Client) -> None:
    response = http.get("/openapi.json")
    assert response.status_code == 200
    document = response.json()
    assert document["openapi"].startswith("3.1")
    paths = document["paths"]
    assert set(paths) == {BY_NUMBER, BY_ID, SANDBOX, WEBHOOKS, WEBHOOK}
    media_types = MEDIA_TYPES
    for path, item in paths.items():
        if path not in (BY_NUMBER, BY_ID):  # the cancel endpoints; the others have their own tests below
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


def _resolved(document: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    """A schema, its $ref followed (one level, as the document uses them)."""
    ref = schema.get("$ref")
    if ref is None:
        return schema
    resolved: dict[str, Any] = document["components"]["schemas"][ref.rsplit("/", 1)[-1]]
    return resolved


def test_openapi_describes_the_webhook_endpoints_in_both_media_types_with_their_refusals(http: httpx.Client) -> None:
    document = http.get("/openapi.json").json()
    api_code = {"$ref": "#/components/parameters/apiCode"}
    operations = {
        ("post", WEBHOOKS): {"201", "400", "401"},
        ("get", WEBHOOKS): {"200", "401"},
        ("delete", WEBHOOK): {"204", "401", "404"},
    }
    for (method, path), statuses in operations.items():
        operation = document["paths"][path][method]
        assert api_code in operation["parameters"], (method, path)
        assert statuses <= set(operation["responses"]), (method, path)
        for status in statuses - {"200", "201", "204"}:  # each refusal: the requestError body, both formats
            content = operation["responses"][status]["content"]
            assert set(content) == MEDIA_TYPES
            body = _resolved(document, content["application/json"]["schema"])
            assert body["required"] == ["requestError"]
            assert {"message", "code"} <= set(body["properties"]["requestError"]["properties"])
            codes = body["properties"]["requestError"]["properties"]["code"]["enum"]
            assert int(status) in codes
    assert "content" not in document["paths"][WEBHOOK]["delete"]["responses"]["204"]
    [path_id] = [p for p in document["paths"][WEBHOOK]["delete"]["parameters"] if p.get("in") == "path"]
    assert (path_id["name"], path_id["required"]) == ("id", True)

    post = document["paths"][WEBHOOKS]["post"]
    assert set(post["requestBody"]["content"]) == MEDIA_TYPES
    request = _resolved(document, post["requestBody"]["content"]["text/xml"]["schema"])
    assert request["xml"]["name"] == "WebhookRequest"
    assert request["required"] == ["url"]
    assert (request["properties"]["url"]["type"], request["properties"]["url"]["format"]) == ("string", "uri")
    events = request["properties"]["events"]
    assert events["type"] == "array"
    assert events["items"]["enum"] == [kind.value for kind in EventType]  # from the one home of the types
    assert (events["xml"]["wrapped"], events["items"]["xml"]["name"]) == (True, "event")

    created = _resolved(document, post["responses"]["201"]["content"]["application/json"]["schema"])
    assert set(post["responses"]["201"]["content"]) == MEDIA_TYPES
    assert {"id", "url", "events", "createdAt", "disabledAt", "disabledReason", "secret"} == set(created["properties"])
    assert "secret" in created["required"]
    listed = _resolved(
        document, document["paths"][WEBHOOKS]["get"]["responses"]["200"]["content"]["text/xml"]["schema"]
    )
    assert listed["xml"]["name"] == "WebhooksResponse"
    item = _resolved(document, listed["properties"]["webhooks"]["items"])
    assert "secret" not in item["properties"]  # a listing never shows a secret
    assert item["properties"]["events"]["items"]["enum"] == [kind.value for kind in EventType]


def test_both_deployments_describe_the_webhook_endpoints() -> None:
    for environment in Environment:
        paths = openapi_document(environment)["paths"]
        assert {WEBHOOKS, WEBHOOK} <= set(paths), environment
