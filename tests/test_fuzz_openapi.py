"""Property-based fuzzing driven by our own /openapi.json: every operation, every media type.

Schemathesis generates valid and invalid requests (bodies, headers, media types, methods) from
the document the server publishes and sends them to a real `ordercancel serve`. Every answer
must be one the document lists, with a body that matches its schema, and never a traceback.
Most cases carry a real API code, so the body parsers are reached and not only the 401.

The webhook endpoints are fuzzed too, but the fuzzer never makes the service reach out: the
server keeps ORDERCANCEL_WEBHOOK_ALLOW_PRIVATE off (loopback and private URLs are refused) and
runs no dispatcher, every generated URL the service would look up is replaced by one of ours
(no name the fuzzer made up is ever resolved), and the run ends with no event, delivery or
attempt in the database: nothing was, or could have been, sent.

`make test` tries ORDERCANCEL_FUZZ_EXAMPLES (default 30) per operation and phase; `make fuzz`
tries many more and prints the tally by class and outcome (the README has its figures).
"""

from __future__ import annotations

import os
import shutil
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import negative_data_rejection, positive_data_acceptance
from sqlalchemy import Engine, text

from ordercancel.config import Environment, Settings
from ordercancel.domain import Order
from ordercancel.events import InvalidSubscription, check_url
from ordercancel.storage import database, service
from tests.support.serving import ServeProcess
from tests.support.wire import BY_ID, BY_NUMBER

#: Each test here starts `ordercancel serve` in a subprocess: outside `make test-fast`.
pytestmark = pytest.mark.subprocess

SANDBOX_ORDERS = "/web-api/sandbox/orders"
WEBHOOKS = "/web-api/webhooks"
WEBHOOK = "/web-api/webhooks/{id}"
#: The operations fuzzed, as (path, method), with the name the tally gives each.
OPERATIONS = {
    (BY_NUMBER, "POST"): "CancelOrderByNumber",
    (BY_ID, "POST"): "CancelOrderById",
    (SANDBOX_ORDERS, "POST"): "orders",
    (WEBHOOKS, "POST"): "webhooks POST",
    (WEBHOOKS, "GET"): "webhooks GET",
    (WEBHOOK, "DELETE"): "webhook DELETE",
}
#: The URLs a generated webhook URL is replaced by when the service would look its host up: the
#: one public address (the retired 6to4 relay anycast, RFC 7526; a literal, so nothing is resolved)
#: registers, to reach the 201 answer, and the non-public ones are refused (400). Nothing is ever
#: sent to any: no order changes during the run, and the fuzzed server runs no dispatcher.
SAFE_URLS = [
    "https://192.88.99.1/hook",
    "http://127.0.0.1/hook",
    "http://localhost:8080/hook",
    "http://[::1]/hook",
    "http://10.0.0.1/hook",
    "http://169.254.169.254/latest/meta-data/",
]
EXAMPLES = int(os.environ.get("ORDERCANCEL_FUZZ_EXAMPLES", "30"))
REPORT = os.environ.get("ORDERCANCEL_FUZZ_REPORT")


@dataclass
class FuzzTarget:
    served: ServeProcess
    engine: Engine
    api_code: str
    orders_before: list[tuple[object, ...]]
    #: Orders no request can cancel (already cancelled, in production, a draft, claimed).
    refused: list[Order]
    tally: Counter[tuple[str, str, str, int, str]]
    #: What the cancel requests carried and got of issue 10's additions (see IDEMPOTENCY_COVERAGE).
    coverage: Counter[str] = field(default_factory=Counter)
    #: The generated webhook URLs replaced by SAFE_URLS (they would have been looked up).
    replaced_urls: int = 0


def _endpoints(engine: Engine) -> list[tuple[str, int | None]]:
    """The webhook endpoints not removed: (id, API key) each."""
    with engine.connect() as connection:
        rows = connection.execute(
            text("SELECT endpoint_id, api_key_id FROM webhook_endpoints WHERE removed_at IS NULL ORDER BY id")
        )
        return [(row[0], row[1]) for row in rows]


def _outbox_rows(engine: Engine) -> dict[str, int]:
    with engine.connect() as connection:
        return {
            table: int(connection.execute(text(f"SELECT count(*) FROM {table}")).scalar_one())
            for table in ("webhook_events", "webhook_deliveries", "webhook_attempts")
        }


def _orders(engine: Engine) -> list[tuple[object, ...]]:
    with engine.connect() as connection:
        return [tuple(row) for row in connection.execute(text("SELECT * FROM orders ORDER BY id"))]


@pytest.fixture(scope="module")
def fuzz_target(migrated_sqlite: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FuzzTarget]:
    directory = tmp_path_factory.mktemp("fuzz")
    path = directory / "ordercancel.db"
    shutil.copy(migrated_sqlite, path)
    url = f"sqlite:///{path}"
    engine = database.create_sync_engine(Settings(database_url=url))
    code = service.create_key(engine, Environment.SANDBOX, "fuzzed")
    for status in ("Ordered", "Processing"):
        service.create_order(engine, Environment.SANDBOX, code, status=status)
    refused = [
        service.create_order(engine, Environment.SANDBOX, code, status=status, engineer=engineer)
        for status, engineer in (("Cancelled", None), ("InProduction", None), ("Draft", None), ("Ordered", "Ada"))
    ]
    # One address sends every case, a quarter of them without the real code: the failed-authentication
    # throttle would answer the rest of the run 429
    # and leave the body parsers unreached. Its own tests are in tests/test_fair_use.py.
    # Webhooks to non-public addresses stay refused (whatever the shell running the tests sets), and
    # no dispatcher runs: the fuzzed service cannot send a request anywhere.
    environment = {
        "ORDERCANCEL_AUTH_FAILURES": "1000000",
        "ORDERCANCEL_WEBHOOK_ALLOW_PRIVATE": "0",
        "ORDERCANCEL_WEBHOOK_DISPATCHER": "0",
    }
    with ServeProcess(url, directory / "serve.log", env=environment) as served:
        target = FuzzTarget(served, engine, code, _orders(engine), refused, Counter())
        yield target
        assert served.process is not None
        assert served.process.poll() is None, "the server died under fuzzing"
    after = _orders(engine)
    assert after[: len(target.orders_before)] == target.orders_before, "fuzzing changed an order"
    # The only orders added are the test orders the sandbox made (HTTP 200 without a requestError
    # code): no refusal left one.
    created = sum(
        count
        for (operation, _, _, status, code), count in target.tally.items()
        if operation == "orders" and status == 200 and code in ("0", "-")
    )
    assert len(after) - len(target.orders_before) == created
    # Each webhook endpoint left is one a 201 registered and no 204 removed, all the fuzzed code's.
    registered = sum(
        n for (operation, _, _, status, _), n in target.tally.items() if (operation, status) == ("webhooks POST", 201)
    )
    removed = sum(
        n for (operation, _, _, status, _), n in target.tally.items() if (operation, status) == ("webhook DELETE", 204)
    )
    endpoints = _endpoints(engine)
    assert len(endpoints) == registered - removed
    assert {key for _, key in endpoints} <= {_key_id(engine, code)}
    # No order changed, so no event: nothing was queued for sending, nothing was tried.
    assert _outbox_rows(engine) == {"webhook_events": 0, "webhook_deliveries": 0, "webhook_attempts": 0}
    assert "Traceback" not in served.logs()
    _report(target.tally, target.coverage)
    engine.dispose()


#: The report's columns: the code each answer carried (0 is a cancellation, "-" no body code).
COLUMNS = ["400", "401", "404", "409", "422", "501", "502", "503", "504", "505", "506", "507", "508", "509", "0", "-"]
#: Keys that some generated cancel requests are given when they carry none: a few values shared
#: by many requests, so that keys are reused, for the same request (a replay) and for another (422),
#: and one that is not visible ASCII (400). Generated values of the header come on top.
SHARED_KEYS = [None, None, "fuzz-key-1", "fuzz-key-2", '"fuzz-key-1"', "not visible ascii"]
#: What the fuzzing of the webhook endpoints must have reached: (operation, HTTP status).
WEBHOOK_COVERAGE = [
    ("webhooks POST", 201),
    ("webhooks POST", 400),  # a URL or event types refused (code 400), or a body unread (code 501)
    ("webhooks POST", 401),
    ("webhooks GET", 200),
    ("webhook DELETE", 204),
    ("webhook DELETE", 404),
]
#: What the fuzzing of the cancel endpoints must have reached of the Idempotency-Key header and
#: the reason and note fields. (409 needs two requests at once: tests/test_idempotency.py.)
IDEMPOTENCY_COVERAGE = ["Idempotency-Key sent", "reason sent", "note sent", "HTTP 400", "HTTP 422", "replayed"]


def _key_id(engine: Engine, api_code: str) -> int:
    with engine.connect() as connection:
        return service.active_key_id(connection, Environment.SANDBOX, api_code)


def _looked_up(value: object) -> bool:
    """Tell whether the service would resolve a host of this generated `url` value (or of a string in it)."""
    if isinstance(value, str):
        try:
            check_url(value, https_only=False)
        except InvalidSubscription:
            return False  # refused for its form, before any look-up
        return True
    if isinstance(value, dict):
        return any(_looked_up(item) for item in value.values())
    if isinstance(value, list):
        return any(_looked_up(item) for item in value)
    return False


def _report(tally: Counter[tuple[str, str, str, int, str]], coverage: Counter[str]) -> None:
    """Print the requests tried, by class (operation, generation mode, API code), with their outcomes."""
    rows: dict[tuple[str, str, str], Counter[str]] = {}
    media: Counter[str] = Counter()
    statuses: Counter[int] = Counter()
    for (operation, mode, media_type, status, code), count in tally.items():
        rows.setdefault((operation, mode, "real" if status != 401 else "wrong/none"), Counter())[code] += count
        media[media_type] += count
        statuses[status] += count
    lines = [
        f"schemathesis: {sum(tally.values())} requests; HTTP statuses {dict(sorted(statuses.items()))}; "
        f"request media types {dict(sorted(media.items()))}",
        f"cancel requests: {', '.join(f'{name} {coverage[name]}' for name in IDEMPOTENCY_COVERAGE)}",
        "| operation | mode | API code | requests | " + " | ".join(COLUMNS) + " |",
        "|---|---|---|---:|" + "---:|" * len(COLUMNS),
    ]
    for (operation, mode, code_kind), counts in sorted(rows.items()):
        cells = " | ".join(str(counts.get(column, 0)) for column in COLUMNS)
        lines.append(f"| {operation} | {mode} | {code_kind} | {sum(counts.values())} | {cells} |")
    text_report = "\n".join(lines) + "\n"
    print("\n" + text_report)
    if REPORT:
        Path(REPORT).write_text(text_report)


@pytest.fixture(scope="module")
def api_schema(fuzz_target: FuzzTarget) -> schemathesis.BaseSchema:
    return schemathesis.openapi.from_url(f"{fuzz_target.served.url}/openapi.json")


def _code(response: schemathesis.Response) -> str:
    """The requestError code an answer carries (0 for a cancellation), or '-' for none."""
    content_type = response.headers.get("content-type", [""])[0]
    if content_type.startswith(("application/json", "text/json")):
        return str(response.json().get("requestError", {}).get("code", 0))
    if b"<code>" in response.content:
        return response.content.split(b"<code>")[1].split(b"</code>")[0].decode()
    return "0" if b"<isCanceled>true" in response.content else "-"


@pytest.mark.parametrize("mode", list(GenerationMode), ids=lambda mode: mode.value)
@pytest.mark.parametrize(
    ("path", "method"),
    list(OPERATIONS),
    ids=["by-number", "by-id", "sandbox-orders", "webhooks-post", "webhooks-get", "webhook-delete"],
)
def test_every_generated_request_gets_a_documented_answer(
    api_schema: schemathesis.BaseSchema, fuzz_target: FuzzTarget, path: str, method: str, mode: GenerationMode
) -> None:
    [operation] = [
        result.ok()
        for result in api_schema.get_all_operations()
        if (result.ok().path, result.ok().method.upper()) == (path, method)
    ]

    field = {BY_NUMBER: "orderNumber", BY_ID: "orderId"}.get(path)

    @given(
        case=operation.as_strategy(generation_mode=mode),
        # Three cases in four carry the real code (hypothesis leans towards the simplest value, False).
        authenticated=st.sampled_from([True, True, True, False]),
        refused=st.sampled_from([None, *fuzz_target.refused]),
        shared_key=st.sampled_from(SHARED_KEYS),
        safe_url=st.sampled_from(SAFE_URLS),
        # Half the removals name an endpoint that exists (the generated ids exist nowhere).
        existing=st.sampled_from([False, True]),
    )
    @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def fuzz(
        case: schemathesis.Case,
        authenticated: bool,
        refused: Order | None,
        shared_key: str | None,
        safe_url: str,
        existing: bool,
    ) -> None:
        if authenticated and case.headers is not None and "apiCode" in case.headers:
            case.headers["apiCode"] = fuzz_target.api_code
        # Only orders no request can cancel: a replayed or reused key must change nothing either.
        if refused is not None and field is not None and isinstance(case.body, dict) and field in case.body:
            case.body[field] = refused.order_id if path == BY_ID else refused.order_number
        if field is not None and shared_key is not None and case.headers is not None:
            case.headers.setdefault("Idempotency-Key", shared_key)
        if path == WEBHOOKS and isinstance(case.body, dict) and _looked_up(case.body.get("url")):
            case.body["url"] = safe_url
            fuzz_target.replaced_urls += 1
        if path == WEBHOOK and existing and case.path_parameters:
            endpoints = _endpoints(fuzz_target.engine)
            if endpoints:
                case.path_parameters["id"] = endpoints[0][0]
        response = case.call_and_validate(
            base_url=fuzz_target.served.url,
            # The contract answers a bad body, or one that names no order, with HTTP 200 and a
            # code in the body (501-505), not with a 4xx: these two generic checks assume otherwise.
            excluded_checks=[negative_data_rejection, positive_data_acceptance],
            timeout=10,
        )
        assert b"Traceback" not in response.content
        media_type = str(case.media_type).split(";")[0]
        key = (OPERATIONS[path, method], mode.value, media_type, response.status_code, _code(response))
        fuzz_target.tally[key] += 1
        if field is not None:
            _count_coverage(fuzz_target.coverage, case, response)
        if field is not None and shared_key is not None and response.status_code == 200:
            # A keyed request sent again, as a client retries: the same answer, told again.
            again = case.call(base_url=fuzz_target.served.url, timeout=10)
            assert (again.status_code, again.content) == (response.status_code, response.content)
            assert again.headers.get("idempotent-replayed", [""])[0] == "true"
            _count_coverage(fuzz_target.coverage, case, again)

    fuzz()


def _count_coverage(coverage: Counter[str], case: schemathesis.Case, response: schemathesis.Response) -> None:
    """Count what a cancel request carried of Idempotency-Key, reason and note, and what it got."""
    body = case.body if isinstance(case.body, dict) else {}
    carried = {
        "Idempotency-Key sent": "Idempotency-Key" in (case.headers or {}),
        "reason sent": "reason" in body,
        "note sent": "note" in body,
        f"HTTP {response.status_code}": True,
        "replayed": response.headers.get("idempotent-replayed", [""])[0] == "true",
    }
    coverage.update(name for name, seen in carried.items() if seen)


def test_the_fuzzing_reached_idempotency_keys_reasons_notes_and_their_answers(fuzz_target: FuzzTarget) -> None:
    if not fuzz_target.coverage:
        pytest.skip("runs after the fuzzing of the cancel endpoints, in the same session")
    missing = [name for name in IDEMPOTENCY_COVERAGE if not fuzz_target.coverage[name]]
    assert missing == [], f"never reached: {missing}; reached {dict(fuzz_target.coverage)}"


def test_the_fuzzing_reached_every_answer_of_the_webhook_endpoints(fuzz_target: FuzzTarget) -> None:
    reached = {(operation, status) for (operation, _, _, status, _) in fuzz_target.tally}
    if not any(operation.startswith("webhook") for operation, _ in reached):
        pytest.skip("runs after the fuzzing of the webhook endpoints, in the same session")
    missing = [answer for answer in WEBHOOK_COVERAGE if answer not in reached]
    assert missing == [], f"never reached: {missing}; reached {sorted(reached)}"
    assert fuzz_target.replaced_urls > 0  # generated URLs were valid enough to be looked up, and were not
