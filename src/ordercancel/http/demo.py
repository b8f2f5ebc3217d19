"""The demo pages: one per API, a form that sends a well-formed request and shows the exchange.

Plain HTML, CSS and JavaScript served from this package (no CDN, no build step); the page talks
only to the server that served it, which its Content-Security-Policy enforces.
"""

from __future__ import annotations

from dataclasses import dataclass
from html import escape
from importlib.resources import files
from string import Template

from ordercancel.config import Environment, Settings
from ordercancel.domain import MAX_NOTE_LENGTH, CancellationReason, PaymentStatus, ProductionStatus
from ordercancel.http.core import Handler, Request, Response, Route
from ordercancel.http.sandbox import SANDBOX_ORDERS_PATH

DEMO_PREFIX = "/api/demo/"
BY_NUMBER_PAGE = DEMO_PREFIX + "order-cancellation-by-number-api.htm"
BY_ID_PAGE = DEMO_PREFIX + "order-cancellation-by-id-api.htm"
FAVICON = DEMO_PREFIX + "favicon.svg"

#: Only this origin, for everything; forms are never submitted natively (the script sends them).
CONTENT_SECURITY_POLICY = (
    b"default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; "
    b"form-action 'none'; base-uri 'none'; frame-ancestors 'none'"
)
_SECURITY_HEADERS = [
    (b"content-security-policy", CONTENT_SECURITY_POLICY),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"cache-control", b"no-cache"),
]


@dataclass(frozen=True, slots=True)
class DemoPage:
    """What differs between the two demo pages."""

    path: str
    title: str
    api_path: str
    field: str
    label: str
    example: str
    request_root: str


def _options(values: list[str], selected: str) -> str:
    return "".join(
        f'<option value="{escape(v)}"{" selected" if v == selected else ""}>{escape(v)}</option>' for v in values
    )


def _reason_options() -> str:
    """The reasons a cancellation may give, after "none" (the field is optional and then not sent)."""
    return '<option value="" selected>none (not sent)</option>' + _options([r.value for r in CancellationReason], "")


def _demo_code_button(settings: Settings) -> str:
    """The button that fills in the demo's API code: in the sandbox, when `make run` configured one."""
    if settings.environment is not Environment.SANDBOX or not settings.demo_api_code:
        return ""
    return (
        f'<button id="use-demo-code" type="button" class="secondary" data-code="{escape(settings.demo_api_code)}">'
        "Use the demo code</button>"
    )


def render_page(page: DemoPage, other: DemoPage, settings: Settings) -> bytes:
    """Fill the page template for one API in one environment."""
    environment = settings.environment
    template = Template((files("ordercancel.http") / "static" / "demo.html").read_text(encoding="utf-8"))
    sandbox = ""
    if environment is Environment.SANDBOX:
        form = Template((files("ordercancel.http") / "static" / "sandbox-form.html").read_text(encoding="utf-8"))
        sandbox = form.substitute(
            sandbox_path=escape(SANDBOX_ORDERS_PATH),
            status_options=_options([s.value for s in ProductionStatus], ProductionStatus.ORDERED.value),
            payment_options=_options([s.value for s in PaymentStatus], PaymentStatus.OK.value),
        )
    html = template.substitute(
        title=escape(page.title),
        environment=escape(environment.value),
        api_path=escape(page.api_path),
        field=escape(page.field),
        label=escape(page.label),
        example=escape(page.example),
        request_root=escape(page.request_root),
        other_path=escape(other.path),
        other_title=escape(other.title),
        sandbox_section=sandbox,
        reason_options=_reason_options(),
        max_note_length=str(MAX_NOTE_LENGTH),
        demo_code_button=_demo_code_button(settings),
    )
    return html.encode()


def render_index(pages: list[DemoPage]) -> bytes:
    """The sandbox's front page: where the demo pages and the API description are."""
    template = Template((files("ordercancel.http") / "static" / "index.html").read_text(encoding="utf-8"))
    links = "".join(f'<li><a href="{escape(page.path)}">{escape(page.title)} demo</a></li>' for page in pages)
    return template.substitute(demo_links=links).encode()


def _static(content: bytes, content_type: bytes) -> Handler:
    async def serve(request: Request) -> Response:
        return Response(200, content, content_type, list(_SECURITY_HEADERS))

    return serve


def demo_routes(settings: Settings, by_number_path: str, by_id_path: str) -> list[Route]:
    """The routes of the two demo pages and the script and style sheet they share."""
    by_number = DemoPage(
        BY_NUMBER_PAGE,
        "Order Cancellation by Number API",
        by_number_path,
        "orderNumber",
        "Order number",
        "IMC975580",
        "CancelOrderByNumberRequest",
    )
    by_id = DemoPage(
        BY_ID_PAGE,
        "Order Cancellation by ID API",
        by_id_path,
        "orderId",
        "Order ID",
        "e1754c8d-2ed1-43ba-a9b3-3e22314600c1",
        "CancelOrderByIdRequest",
    )
    html = b"text/html; charset=utf-8"
    static = files("ordercancel.http") / "static"
    routes = [
        Route(by_number.path, {"GET": _static(render_page(by_number, by_id, settings), html)}),
        Route(by_id.path, {"GET": _static(render_page(by_id, by_number, settings), html)}),
        Route(FAVICON, {"GET": _static((static / "favicon.svg").read_bytes(), b"image/svg+xml")}),
        Route(
            DEMO_PREFIX + "demo.js",
            {"GET": _static((static / "demo.js").read_bytes(), b"text/javascript; charset=utf-8")},
        ),
        Route(
            DEMO_PREFIX + "demo.css", {"GET": _static((static / "demo.css").read_bytes(), b"text/css; charset=utf-8")}
        ),
    ]
    if settings.environment is Environment.SANDBOX:  # a browser pointed at the sandbox finds the demos; production: 404
        routes.append(Route("/", {"GET": _static(render_index([by_number, by_id]), html)}))
    return routes
