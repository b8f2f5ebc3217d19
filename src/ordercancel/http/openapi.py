"""The OpenAPI 3.1 description of the public API, built from the same tables the code uses."""

from __future__ import annotations

from typing import Any

from ordercancel.codecs import CODECS
from ordercancel.config import Environment
from ordercancel.domain import (
    MAX_ENGINEER_NAME,
    MAX_NOTE_LENGTH,
    REFUSALS,
    CancellationReason,
    IdempotencyKeyInFlight,
    IdempotencyKeyReused,
    InvalidIdempotencyKey,
    MissingOrderId,
    MissingOrderNumber,
    PaymentStatus,
    ProductionStatus,
    RequestError,
    TooManyRequests,
    UnknownError,
    WrongOrderId,
    WrongOrderNumber,
    may_hold_engineer,
)
from ordercancel.events import DEFAULT_SCHEDULE, MAX_URL_LENGTH, SECRET_PREFIX, EventType

#: The refusals of the cancel endpoints, in the domain's order of codes.
_REFUSALS: list[type[RequestError]] = list(REFUSALS.values())


#: The optional fields both cancel requests take (kept with the order; the answer is unchanged).
_DETAILS: dict[str, Any] = {
    "reason": {"type": "string", "enum": [r.value for r in CancellationReason], "description": "why you cancel"},
    "note": {"type": "string", "maxLength": MAX_NOTE_LENGTH, "description": "printable text, kept with the order"},
}


def _codes_table(errors: list[type[RequestError]]) -> str:
    return "\n".join(f"- `{e.code}`: {e.message}" for e in errors)


def _content(schema_ref: str) -> dict[str, Any]:
    return {media_type: {"schema": {"$ref": schema_ref}} for media_type in CODECS}


def _operation(field: str, summary: str, example: str, codes: list[type[RequestError]]) -> dict[str, Any]:
    request_schema = f"#/components/schemas/{field[0].upper()}{field[1:]}Request"
    return {
        "summary": summary,
        "operationId": f"cancelBy{field[5:].title()}",
        "parameters": [
            {"$ref": "#/components/parameters/apiCode"},
            {"$ref": "#/components/parameters/accept"},
            {"$ref": "#/components/parameters/idempotencyKey"},
        ],
        "requestBody": {
            "required": True,
            "content": {
                media_type: {"schema": {"$ref": request_schema}, "example": {field: example}} for media_type in CODECS
            },
        },
        "responses": {
            "200": {
                "description": "Cancelled (`isCanceled` true), or refused with one of these codes in "
                "`requestError`:\n" + _codes_table(codes) + "\n\nWith an Idempotency-Key that was used before for "
                "the same request, the first answer again, with `Idempotent-Replayed: true`.",
                "headers": {
                    "Idempotent-Replayed": {
                        "description": "`true` when the answer is an earlier request's, told again",
                        "schema": {"type": "string", "enum": ["true"]},
                    }
                },
                "content": _content("#/components/schemas/CancelOrderResponse"),
            },
            "400": {
                "description": "The Idempotency-Key header is malformed "
                f"(code 400, `{InvalidIdempotencyKey.message}`); "
                "nothing is recorded or changed.",
                "content": _content("#/components/schemas/CancelOrderResponse"),
            },
            "401": {
                "description": "The apiCode header is missing, not a GUID, unknown, revoked or from "
                "the other environment (code 401, `Unauthorized`).",
                "content": _content("#/components/schemas/CancelOrderResponse"),
            },
            "409": {
                "description": f"A request with the same Idempotency-Key is being processed (code 409, "
                f"`{IdempotencyKeyInFlight.message}`); `Retry-After: 1`.",
                "headers": {"Retry-After": {"schema": {"type": "integer"}}},
                "content": _content("#/components/schemas/CancelOrderResponse"),
            },
            "422": {
                "description": f"The Idempotency-Key was used before with a different request (code 422, "
                f"`{IdempotencyKeyReused.message}`).",
                "content": _content("#/components/schemas/CancelOrderResponse"),
            },
            "429": {
                "description": f"Over the API code's rate limit, or from an address that failed authentication too "
                f"often this minute (code 429, `{TooManyRequests.message}`); nothing is recorded or changed.",
                "headers": {
                    "Retry-After": {"schema": {"type": "integer"}},
                    "RateLimit": {"description": '`"default";r=REMAINING;t=SECONDS`', "schema": {"type": "string"}},
                    "RateLimit-Policy": {"description": '`"default";q=QUOTA;w=WINDOW`', "schema": {"type": "string"}},
                },
                "content": _content("#/components/schemas/CancelOrderResponse"),
            },
            "405": {
                "description": "Any method but POST.",
                "content": _content("#/components/schemas/CancelOrderResponse"),
            },
            "413": {
                "description": "The body is larger than 64 KiB (code 501).",
                "content": _content("#/components/schemas/CancelOrderResponse"),
            },
            "500": {
                "description": f"Unexpected failure (code 500, `{UnknownError.message}`).",
                "content": _content("#/components/schemas/CancelOrderResponse"),
            },
        },
    }


def _test_orders_operation() -> dict[str, Any]:
    """`POST /web-api/sandbox/orders`: described only where it exists, in the sandbox."""
    return {
        "summary": "Create a test order in a chosen state (sandbox only)",
        "operationId": "createTestOrder",
        "parameters": [
            {"$ref": "#/components/parameters/apiCode"},
            {"$ref": "#/components/parameters/accept"},
        ],
        "requestBody": {
            "required": False,
            "content": {
                media_type: {
                    "schema": {"$ref": "#/components/schemas/TestOrderRequest"},
                    "example": {"status": "Processing", "engineer": "Ada"},
                }
                for media_type in CODECS
            },
        },
        "responses": {
            "200": {
                "description": "The order created for the caller's API code, or `requestError` code 501 "
                "naming the field that could not be used, or the fields it does not know (nothing is "
                "created then).",
                "content": _content("#/components/schemas/CreateTestOrderResponse"),
            },
            "401": {
                "description": "The apiCode header is missing, not a GUID, unknown, revoked or a production code.",
                "content": _content("#/components/schemas/CreateTestOrderResponse"),
            },
        },
    }


_HELD = " or ".join(sorted(s.value for s in ProductionStatus if may_hold_engineer(s)))
_TEST_ORDER_SCHEMAS: dict[str, Any] = {
    "TestOrderRequest": {
        "type": "object",
        "xml": {"name": "CreateTestOrderRequest"},
        # A misspelt field would otherwise make an order in a state nobody asked for.
        "additionalProperties": False,
        "description": "Any other field is refused with code 501 naming it.",
        "properties": {
            "status": {"type": "string", "enum": [s.value for s in ProductionStatus], "default": "Ordered"},
            "paymentStatus": {"type": "string", "enum": [s.value for s in PaymentStatus], "default": "PaymentOK"},
            "engineer": {
                "type": "string",
                "maxLength": MAX_ENGINEER_NAME,
                "description": f"claims the order (509): 1-{MAX_ENGINEER_NAME} printable characters, and only "
                f"with status {_HELD}; anything else is code 501",
            },
            "placedAt": {
                "type": "string",
                "format": "date-time",
                "description": "when the order was placed, RFC 3339 with an offset (default: now); one "
                "longer ago than the cancellation window makes an order whose cancellation is refused "
                "with 509",
            },
        },
    },
    "CreateTestOrderResponse": {
        "type": "object",
        "xml": {"name": "CreateTestOrderResponse"},
        "properties": {
            "orderId": {"type": "string", "format": "uuid"},
            "orderNumber": {"type": "string"},
            "status": {"type": "string"},
            "paymentStatus": {"type": "string"},
            "engineer": {"type": "string"},
            "placedAt": {"type": "string", "format": "date-time"},
            "requestError": {"$ref": "#/components/schemas/RequestError"},
        },
    },
}


# Webhooks: the integrators' endpoints (`/web-api/webhooks`), in both media types -----------------

WEBHOOKS_PATH = "/web-api/webhooks"
WEBHOOK_PATH = WEBHOOKS_PATH + "/{id}"
#: The event types, in their documented order: one home, ordercancel.events.
_EVENT_TYPES = [kind.value for kind in EventType]
#: How long a delivery is retried, by default.
_RETRY_HOURS = round(sum(DEFAULT_SCHEDULE) / 3600)
_EVENTS: dict[str, Any] = {
    "type": "array",
    "items": {"type": "string", "enum": _EVENT_TYPES, "xml": {"name": "event"}},
    "xml": {"wrapped": True},
}
_WEBHOOK_PROPERTIES: dict[str, Any] = {
    "id": {"type": "string", "description": "the endpoint's id (ep_ and 16 hex digits)"},
    "url": {"type": "string", "format": "uri"},
    "events": {**_EVENTS, "description": "the event types it is sent"},
    "createdAt": {"type": "string", "format": "date-time"},
    "disabledAt": {
        "type": ["string", "null"],
        "format": "date-time",
        "description": "when it stopped being sent events (it answered 410 Gone); absent or null while active",
    },
    "disabledReason": {"type": ["string", "null"]},
}
_WEBHOOK_REQUIRED = ["id", "url", "events", "createdAt"]
_WEBHOOK_SCHEMAS: dict[str, Any] = {
    "WebhookRequest": {
        "type": "object",
        "xml": {"name": "WebhookRequest"},
        "required": ["url"],
        "properties": {
            "url": {
                "type": "string",
                "format": "uri",
                "maxLength": MAX_URL_LENGTH,
                "description": "where events are POSTed: https (http too in the sandbox), no user name or "
                "password, no #fragment, and a host that resolves to a public address",
            },
            "events": {
                **_EVENTS,
                "description": "the event types to send (default: all). In XML, `<events><event>order.cancelled"
                "</event></events>` or `<events>order.cancelled,order.claimed</events>`",
            },
        },
    },
    "Webhook": {"type": "object", "required": _WEBHOOK_REQUIRED, "properties": _WEBHOOK_PROPERTIES},
    "WebhookResponse": {
        "type": "object",
        "xml": {"name": "WebhookResponse"},
        "required": [*_WEBHOOK_REQUIRED, "secret"],
        "properties": {
            **_WEBHOOK_PROPERTIES,
            "secret": {
                "type": "string",
                "pattern": f"^{SECRET_PREFIX}[A-Za-z0-9+/]+={{0,2}}$",
                "description": "the signing secret, shown this once: verify each delivery's webhook-signature "
                "with it (Standard Webhooks)",
            },
        },
    },
    "WebhooksResponse": {
        "type": "object",
        "xml": {"name": "WebhooksResponse"},
        "required": ["webhooks"],
        "properties": {
            "webhooks": {
                "type": "array",
                "items": {"$ref": "#/components/schemas/Webhook", "xml": {"name": "webhook"}},
                "xml": {"wrapped": True},
            }
        },
    },
    "WebhookError": {
        "type": "object",
        "xml": {"name": "WebhookResponse"},
        "required": ["requestError"],
        "properties": {
            "requestError": {
                "type": "object",
                "required": ["message", "code"],
                "properties": {
                    "message": {"type": "string"},
                    "code": {"type": "integer", "enum": [400, 401, 404, 405, 500, 501]},
                },
            }
        },
    },
}
_WEBHOOK_ERROR = "#/components/schemas/WebhookError"


def _webhook_refusals(*statuses: str) -> dict[str, Any]:
    """The answers of the webhook operations that refuse: each with the `requestError` body."""
    descriptions = {
        "400": "The URL or the event types cannot be used (code 400, the message says why: not https in "
        "production, a user name or password, a host that resolves to a loopback, private, link-local or "
        "other non-public address, an unknown event type, too many endpoints), or the body cannot be read "
        "(code 501). Nothing is registered.",
        "401": "The apiCode header is missing, not a GUID, unknown, revoked or from the other environment "
        "(code 401, `Unauthorized`).",
        "404": "No endpoint with this id belongs to your apiCode (another code's is answered the same; code 404). "
        "Nothing is removed.",
        "405": "Any other method (code 405).",
        "413": "The body is larger than 64 KiB (code 501).",
        "500": f"Unexpected failure (code 500, `{UnknownError.message}`).",
    }
    return {status: {"description": descriptions[status], "content": _content(_WEBHOOK_ERROR)} for status in statuses}


_WEBHOOK_PARAMETERS = [{"$ref": "#/components/parameters/apiCode"}, {"$ref": "#/components/parameters/accept"}]


def _webhook_paths() -> dict[str, Any]:
    return {
        WEBHOOKS_PATH: {
            "post": {
                "summary": "Register a webhook endpoint: your orders' events are POSTed to it, signed",
                "description": f"Each event of an order of your apiCode ({', '.join(_EVENT_TYPES)}) is "
                "POSTed as JSON `{type, timestamp, data}` with the Standard Webhooks headers `webhook-id`, "
                "`webhook-timestamp` and `webhook-signature` (HMAC-SHA256 with the secret of the answer), at "
                f"least once, retried for about {_RETRY_HOURS} hours (by default) while your endpoint does not "
                "answer 2xx; 410 Gone disables it.",
                "operationId": "createWebhook",
                "parameters": _WEBHOOK_PARAMETERS,
                "requestBody": {
                    "required": True,
                    "content": {
                        media_type: {
                            "schema": {"$ref": "#/components/schemas/WebhookRequest"},
                            "example": {
                                "url": "https://example.com/hooks/orders",
                                "events": [EventType.CANCELLED.value],
                            },
                        }
                        for media_type in CODECS
                    },
                },
                "responses": {
                    "201": {
                        "description": "Registered: the endpoint and its signing secret, shown this once.",
                        "content": _content("#/components/schemas/WebhookResponse"),
                    },
                    **_webhook_refusals("400", "401", "405", "413", "500"),
                },
            },
            "get": {
                "summary": "List your webhook endpoints (their secrets are never shown again)",
                "operationId": "listWebhooks",
                "parameters": _WEBHOOK_PARAMETERS,
                "responses": {
                    "200": {
                        "description": "Every endpoint of your apiCode, oldest first.",
                        "content": _content("#/components/schemas/WebhooksResponse"),
                    },
                    **_webhook_refusals("401", "405", "500"),
                },
            },
        },
        WEBHOOK_PATH: {
            "delete": {
                "summary": "Remove one of your webhook endpoints: nothing more is sent to it",
                "operationId": "deleteWebhook",
                "parameters": [
                    *_WEBHOOK_PARAMETERS,
                    {
                        "name": "id",
                        "in": "path",
                        "required": True,
                        "description": "the endpoint's id, as registering it answered",
                        "schema": {"type": "string", "example": "ep_3f2a9c0d1b4e5f60"},
                    },
                ],
                "responses": {
                    "204": {"description": "Removed, with its pending deliveries."},
                    **_webhook_refusals("401", "404", "405", "500"),
                },
            }
        },
    }


def openapi_document(environment: Environment) -> dict[str, Any]:
    """Return the OpenAPI 3.1 document for a deployment (the sandbox has one more operation)."""
    document = _document(environment)
    document["paths"].update(_webhook_paths())
    document["components"]["schemas"].update(_WEBHOOK_SCHEMAS)
    if environment is Environment.SANDBOX:
        document["paths"]["/web-api/sandbox/orders"] = {"post": _test_orders_operation()}
        document["components"]["schemas"].update(_TEST_ORDER_SCHEMAS)
    return document


def _document(environment: Environment) -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Order Cancellation API",
            "version": "1.0.0",
            "description": f"Cancel an order whose processing has not started ({environment.value} deployment), "
            "and be told of your orders' changes by webhooks. Every refusal of a cancellation is HTTP 200 "
            "with a code in `requestError`; the webhook endpoints answer 4xx. See each operation.",
        },
        "paths": {
            "/web-api/order/CancelOrderByNumber": {
                "post": _operation(
                    "orderNumber",
                    "Cancel an order by its number",
                    "IMC975580",
                    [c for c in _REFUSALS if c not in (MissingOrderId, WrongOrderId)],
                )
            },
            "/web-api/order/CancelOrderById": {
                "post": _operation(
                    "orderId",
                    "Cancel an order by its ID",
                    "e1754c8d-2ed1-43ba-a9b3-3e22314600c1",
                    [c for c in _REFUSALS if c not in (MissingOrderNumber, WrongOrderNumber)],
                )
            },
        },
        "components": {
            "parameters": {
                "apiCode": {
                    "name": "apiCode",
                    "in": "header",
                    "required": True,
                    "description": "Your personal API code (a GUID). Sandbox and production codes differ.",
                    "schema": {"type": "string", "format": "uuid"},
                },
                "idempotencyKey": {
                    "name": "Idempotency-Key",
                    "in": "header",
                    "required": False,
                    "description": "Makes retries safe: the first completed answer for this key (scoped to your "
                    "API code) is kept for 24 hours and given again to a retry of the same request. 1-255 "
                    "visible ASCII characters, bare or as a quoted structured-field string.",
                    "schema": {"type": "string", "minLength": 1, "maxLength": 257, "pattern": "^[\\x21-\\x7e]+$"},
                },
                "accept": {
                    "name": "Accept",
                    "in": "header",
                    "required": False,
                    "description": "Response format; text/xml when absent or unrecognised.",
                    "schema": {"type": "string", "enum": list(CODECS), "default": "text/xml"},
                },
            },
            "schemas": {
                "OrderNumberRequest": {
                    "type": "object",
                    "xml": {"name": "CancelOrderByNumberRequest"},
                    "required": ["orderNumber"],
                    "properties": {
                        "orderNumber": {"type": "string", "maxLength": 32, "example": "IMC975580"},
                        **_DETAILS,
                    },
                },
                "OrderIdRequest": {
                    "type": "object",
                    "xml": {"name": "CancelOrderByIdRequest"},
                    "required": ["orderId"],
                    "properties": {"orderId": {"type": "string", "format": "uuid"}, **_DETAILS},
                },
                "RequestError": {
                    "type": "object",
                    "required": ["message", "code"],
                    "properties": {
                        "message": {"type": "string"},
                        "code": {
                            "type": "integer",
                            "enum": [400, 401, 409, 422, 429, 500, *(c.code for c in _REFUSALS)],
                        },
                    },
                },
                "CancelOrderResponse": {
                    "type": "object",
                    "xml": {"name": "CancelOrderResponse"},
                    "required": ["isCanceled"],
                    "properties": {
                        "orderId": {"type": "string", "format": "uuid"},
                        "orderNumber": {"type": "string"},
                        "isCanceled": {"type": "boolean"},
                        "requestError": {"$ref": "#/components/schemas/RequestError"},
                    },
                },
            },
        },
    }
