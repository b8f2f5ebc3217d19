"""One home per rule: the domain says what may be cancelled, by whom, and what an order may hold.

The SQL that enforces the cancellation rule is run here over every status, payment status and
engineer, on both backends, and compared with the domain; every entrance that makes orders is
shown to refuse what the domain refuses; every cancellation, an operator's too, is recorded.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import json
import uuid
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, event, func, insert, select

from ordercancel import cli
from ordercancel.config import Settings
from ordercancel.domain import (
    CUSTOMER_CANCELLATION,
    OPERATOR_CANCELLATION,
    CancellationRule,
    InvalidOrderField,
    Lookup,
    NotPlacedCorrectly,
    Order,
    Outcome,
    PaymentStatus,
    ProcessingStarted,
    ProductionStatus,
    cancellation_refusal,
    new_order,
    window_cutoff,
)
from ordercancel.storage import database, importer, open_store, service, steps
from ordercancel.storage.schema import api_keys, cancellation_attempts, orders
from tests.support.live import ADMIN_TOKEN, LiveServer
from tests.support.orders import OrderFactory
from tests.support.wire import BY_NUMBER

#: Every status, payment status and engineer, each inside the cancellation window and past it.
STATES = list(itertools.product(ProductionStatus, PaymentStatus, [None, "Ada"], [True, False]))
#: The window the states are tested under, and how long before the test each kind was placed.
WINDOW = timedelta(hours=1)
PLACED_AGO = {True: timedelta(minutes=1), False: timedelta(hours=3)}
TEST_ORDERS = "/web-api/sandbox/orders"
JSON = {"Content-Type": "application/json", "Accept": "application/json"}


def number_of(status: ProductionStatus, payment: PaymentStatus, engineer: str | None, recent: bool) -> str:
    return f"{status.value[:8]}-{payment.value[7:]}-{'E' if engineer else 'N'}-{'I' if recent else 'O'}"


def domain_order(
    status: ProductionStatus, payment: PaymentStatus, engineer: str | None, recent: bool, now: datetime | None = None
) -> Order:
    placed_at = (now or database.utcnow()) - PLACED_AGO[recent]
    number = number_of(status, payment, engineer, recent)
    return Order(str(uuid.uuid4()), number, status, payment, engineer, placed_at=placed_at)


def cutoff_now(window: timedelta | None) -> datetime | None:
    """The cutoff a store computes for this window at this instant (the margins dwarf the test's length)."""
    return window_cutoff(database.utcnow(), window)


@pytest.fixture
def every_state(engine: Engine, settings: Settings, api_code: str) -> dict[str, Order]:
    """One stored order per (status, payment status, engineer), written as the database allows.

    Written directly: the validation of new orders (rightly) refuses an engineer on a closed
    order, but the SQL must give the domain's answer for every row the table can hold.
    """
    with engine.begin() as connection:
        key = connection.scalar(select(api_keys.c.id))
        made = {}
        for state in STATES:
            order = domain_order(*state)
            connection.execute(
                insert(orders).values(
                    order_id=order.order_id,
                    order_number=order.order_number,
                    api_key_id=key,
                    status=order.status.value,
                    payment_status=order.payment_status.value,
                    engineer=order.engineer,
                    created_at=database.utcnow(),
                    placed_at=order.placed_at,
                )
            )
            made[order.order_number] = order
    return made


def hot_path_statements(settings: Settings) -> steps.Statements:
    if settings.is_postgres:
        from ordercancel.storage.postgres import STATEMENTS

        return STATEMENTS
    return steps.SQLITE_STATEMENTS


def now_param(settings: Settings) -> object:
    return timestamp_param(settings, database.utcnow())


def timestamp_param(settings: Settings, at: datetime | None) -> object:
    """A timestamp in the form the hot path binds it: aware on PostgreSQL, SQLite's text elsewhere."""
    if at is None or settings.is_postgres:
        return at
    return database.sqlite_timestamp(at)


# The rule in the domain ------------------------------------------------------------------------


@pytest.mark.parametrize("window", [None, WINDOW], ids=["no window", "window"])
@pytest.mark.parametrize("rule", [CUSTOMER_CANCELLATION, OPERATOR_CANCELLATION], ids=["customer", "operator"])
def test_each_rule_refuses_exactly_the_orders_it_does_not_allow(
    rule: CancellationRule, window: timedelta | None
) -> None:
    cutoff = cutoff_now(window)
    for state in STATES:
        order = domain_order(*state)
        assert (rule.refusal(order, cutoff) is None) == rule.allows(order, cutoff), state


def test_past_the_window_a_customer_is_refused_509_and_an_operator_is_not_held() -> None:
    cutoff = cutoff_now(WINDOW)
    old = domain_order(ProductionStatus.ORDERED, PaymentStatus.OK, None, False)
    recent = domain_order(ProductionStatus.ORDERED, PaymentStatus.OK, None, True)

    assert isinstance(CUSTOMER_CANCELLATION.refusal(old, cutoff), ProcessingStarted)
    assert CUSTOMER_CANCELLATION.refusal(recent, cutoff) is None
    assert CUSTOMER_CANCELLATION.refusal(old, None) is None  # no window: as before
    assert OPERATOR_CANCELLATION.refusal(old, cutoff) is None


def test_an_operator_may_cancel_only_what_a_customer_may_plus_an_open_unclaimed_order_whose_payment_failed() -> None:
    only_operator = {
        state
        for state in STATES
        if OPERATOR_CANCELLATION.allows(domain_order(*state)) and not CUSTOMER_CANCELLATION.allows(domain_order(*state))
    }
    assert only_operator == {
        (ProductionStatus.ORDERED, PaymentStatus.NOK, None, recent) for recent in (True, False)
    } | {(ProductionStatus.PROCESSING, PaymentStatus.NOK, None, recent) for recent in (True, False)}
    assert not any(
        CUSTOMER_CANCELLATION.allows(domain_order(*s)) and not OPERATOR_CANCELLATION.allows(domain_order(*s))
        for s in STATES
    )


# The SQL, derived from the rule, against the rule ------------------------------------------------


@pytest.mark.parametrize("window", [None, WINDOW], ids=["no window", "window"])
def test_the_hot_path_update_cancels_exactly_the_orders_the_domain_allows(
    settings: Settings, engine: Engine, every_state: dict[str, Order], window: timedelta | None
) -> None:
    cutoff = cutoff_now(window)
    statement = hot_path_statements(settings).cancel_by_number
    connection = engine.raw_connection()
    try:
        cursor = connection.cursor()
        key = cursor.execute("SELECT id FROM api_keys").fetchone()[0]
        cancelled = set()
        for number in every_state:
            params = {
                "now": now_param(settings),
                "key": key,
                "request_id": "r",
                "value": number,
                "reason": None,
                "note": None,
                "placed_after": timestamp_param(settings, cutoff),
            }
            cursor.execute(statement, params)
            if cursor.fetchone() is not None:
                cancelled.add(number)
        connection.rollback()  # only what the UPDATE would change matters here
    finally:
        connection.close()
    allowed = {number for number, order in every_state.items() if CUSTOMER_CANCELLATION.allows(order, cutoff)}
    assert cancelled == allowed
    # Ordered and Processing, paid or pending, unclaimed, (without a window) placed at any time:
    # the rule is not vacuous, and the window takes exactly the ones placed before it.
    assert len(allowed) == (4 if window else 8)


@pytest.mark.parametrize("window", [None, WINDOW], ids=["no window", "window"])
def test_every_state_gets_the_domains_answer_through_the_real_store_and_is_recorded_with_it(
    settings: Settings, engine: Engine, every_state: dict[str, Order], window: timedelta | None
) -> None:
    async def cancel_all() -> dict[str, int]:
        store = open_store(dataclasses.replace(settings, key_cache_seconds=0))
        await store.start()
        try:
            with engine.connect() as connection:
                key = int(connection.scalar(select(api_keys.c.id)) or 0)
            answers = {}
            for number in every_state:
                attempt = steps.Attempt(key, f"req-{number}", Lookup(False, number), window=window)
                outcome = await store.cancel(attempt)
                answers[number] = outcome.error.code if outcome.error else 0
            return answers
        finally:
            await store.close()

    answers = asyncio.run(cancel_all())

    expected = {}
    cutoff = cutoff_now(window)
    for number, order in every_state.items():
        refusal = cancellation_refusal(order, placed_after=cutoff)
        expected[number] = refusal.code if refusal else 0
    assert answers == expected
    recorded = {entry.request_id: entry.outcome for entry in service.list_attempts(engine, settings.environment)}
    assert recorded == {f"req-{number}": code for number, code in expected.items()}
    for number, code in expected.items():
        stored = service.find_order(engine, number)
        assert (stored.status is ProductionStatus.CANCELLED) == (
            code == 0 or every_state[number].status is ProductionStatus.CANCELLED
        )


def test_an_operators_cancellation_succeeds_exactly_where_the_operators_rule_allows(
    settings: Settings, engine: Engine, every_state: dict[str, Order]
) -> None:
    cancelled = set()
    for number in every_state:
        try:
            service.set_status(engine, number, "Cancelled", operator="Grace")
        except service.TransitionRefused:
            continue
        cancelled.add(number)
    assert cancelled == {number for number, order in every_state.items() if OPERATOR_CANCELLATION.allows(order)}
    assert any(number.endswith("-O") for number in cancelled)  # placed long ago: no window binds an operator
    recorded = service.list_attempts(engine, settings.environment)
    assert sorted(entry.order_number or "" for entry in recorded) == sorted(cancelled)
    assert {(entry.operator, entry.key_id, entry.outcome) for entry in recorded} == {("Grace", None, 0)}


def test_the_hot_path_sql_is_built_from_the_rule_not_written_beside_it() -> None:
    stricter = dataclasses.replace(CUSTOMER_CANCELLATION, refused_payments=frozenset(PaymentStatus))
    assert "payment_status NOT IN ('PaymentNOK')" in steps.cancel_statement("order_number")
    assert "NOT IN ('PaymentNOK', 'PaymentOK', 'PaymentPending')" in steps.cancellable_condition(stricter)
    assert "payment_status" not in steps.cancellable_condition(OPERATOR_CANCELLATION)
    assert "placed_at > :placed_after" in steps.cancel_statement("order_number")
    assert "placed_at" not in steps.cancellable_condition(OPERATOR_CANCELLATION)


# The re-check after a released claim -------------------------------------------------------------


def run_steps(
    settings: Settings, engine: Engine, number: str, before: Callable[[Any, str], None]
) -> tuple[Outcome, list[str]]:
    """Run the real cancellation steps on a real connection, letting `before` change the order first.

    `before(cursor, kind)` runs ahead of each step, in the same transaction, as another writer's
    committed change would land between two statements under READ COMMITTED.
    """
    statements = hot_path_statements(settings)
    kinds = {statements.cancel_by_number: "update", statements.explain_by_number: "explain"}
    connection = engine.raw_connection()
    ran: list[str] = []
    try:
        cursor = connection.cursor()
        key = int(cursor.execute("SELECT id FROM api_keys").fetchone()[0])
        attempt = steps.Attempt(key, "race", Lookup(False, number))
        generator = steps.cancellation_steps(attempt, now_param(settings), statements)
        row: Sequence[object] | None = None
        try:
            while True:
                step = generator.send(row)
                kind = kinds.get(step.statement, "record")
                ran.append(kind)
                before(cursor, kind)
                cursor.execute(step.statement, step.params)
                row = cursor.fetchone() if step.reads else None
        except StopIteration as done:
            outcome: Outcome = done.value
        connection.commit()
    finally:
        connection.close()
    return outcome, ran


def claim_toggler(settings: Settings, number: str, releases: int) -> Callable[[Any, str], None]:
    """Claim the order before each UPDATE and release it before each explain, `releases` times."""
    mark = "%s" if settings.is_postgres else "?"
    left = {"releases": releases}

    def before(cursor: Any, kind: str) -> None:
        if kind == "update" and left["releases"] > 0:
            cursor.execute(f"UPDATE orders SET engineer = 'Ada' WHERE order_number = {mark}", (number,))
        elif kind == "explain":
            left["releases"] -= 1
            cursor.execute(f"UPDATE orders SET engineer = NULL WHERE order_number = {mark}", (number,))

    return before


def test_a_claim_released_twice_while_refused_is_rechecked_and_the_third_try_cancels(
    settings: Settings, engine: Engine, make_order: OrderFactory
) -> None:
    number = make_order(status="Processing").order_number

    outcome, ran = run_steps(settings, engine, number, claim_toggler(settings, number, releases=2))

    # On SQLite the success's audit row is written by the UPDATE itself (a trigger): no record step.
    recorded_by_update = hot_path_statements(settings).success_recorded
    assert ran == ["update", "explain", "update", "explain", "update", *([] if recorded_by_update else ["record"])]
    assert outcome.is_canceled, outcome.error
    assert service.find_order(engine, number).status is ProductionStatus.CANCELLED
    assert [entry.outcome for entry in service.list_attempts(engine, settings.environment, order=number)] == [0]


def test_an_order_that_keeps_changing_is_refused_509_after_a_bounded_number_of_tries(
    settings: Settings, engine: Engine, make_order: OrderFactory
) -> None:
    number = make_order(status="Ordered").order_number

    outcome, ran = run_steps(settings, engine, number, claim_toggler(settings, number, releases=10**6))

    assert ran == ["update", "explain"] * steps.RETRIES + ["record"]
    assert isinstance(outcome.error, ProcessingStarted)
    assert service.find_order(engine, number).status is ProductionStatus.ORDERED


# One validation of an order's fields, at every entrance ------------------------------------------

BAD_FIELDS: list[tuple[dict[str, str], str]] = [
    ({"engineer": "A" * 500}, "an engineer's name is 1-100 printable characters"),
    ({"engineer": "Ada\x07\x1b[31m"}, "an engineer's name is 1-100 printable characters"),
    ({"status": "Lost"}, "unknown status 'Lost'; one of: Draft, Ordered"),
    ({"paymentStatus": "Maybe"}, "unknown paymentStatus 'Maybe'; one of: PaymentPending"),
    ({"status": "Shipped", "engineer": "Ada"}, "an engineer can only hold an order that is Ordered or Processing"),
]


def domain_refusal(fields: dict[str, str]) -> str:
    with pytest.raises(InvalidOrderField) as refused:
        new_order(
            status=fields.get("status"), payment_status=fields.get("paymentStatus"), engineer=fields.get("engineer")
        )
    return str(refused.value)


def order_count(engine: Engine) -> int:
    with engine.connect() as connection:
        return int(connection.scalar(select(func.count()).select_from(orders)) or 0)


@pytest.fixture
def both_apis(settings: Settings) -> Iterator[httpx.Client]:
    """The sandbox with the admin API on: the test orders and the admin routes on one server."""
    with (
        LiveServer(dataclasses.replace(settings, admin_token=ADMIN_TOKEN)) as live,
        httpx.Client(base_url=live.url, timeout=10) as client,
    ):
        yield client


@pytest.mark.parametrize(("fields", "message"), BAD_FIELDS, ids=lambda v: repr(v)[:30])
def test_every_entrance_refuses_what_the_domain_refuses_with_its_words_and_creates_nothing(
    settings: Settings,
    engine: Engine,
    api_code: str,
    both_apis: httpx.Client,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    fields: dict[str, str],
    message: str,
) -> None:
    words = domain_refusal(fields)
    assert words.startswith(message)

    with pytest.raises(service.InvalidValue) as created:  # what `orders create` calls
        service.create_order(
            engine,
            settings.environment,
            api_code,
            status=fields.get("status"),
            payment_status=fields.get("paymentStatus"),
            engineer=fields.get("engineer"),
        )
    assert str(created.value) == words

    row = {"orderNumber": "IMP-1", "status": "Ordered", "paymentStatus": "PaymentOK", **fields}
    jsonl = tmp_path / "orders.jsonl"
    jsonl.write_text(json.dumps({"orderNumber": "OK-1", "status": "Ordered", "paymentStatus": "PaymentOK"}) + "\n")
    with jsonl.open("a") as file:
        file.write(json.dumps(row) + "\n")
    assert cli.main(["orders", "import", str(jsonl), "--api-code", api_code, "--database-url", settings.database_url])
    assert f"orders.jsonl:line 2: {words}" in capsys.readouterr().err

    admin = both_apis.post(
        "/admin/orders", json={"apiCode": api_code, **fields}, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
    )
    assert (admin.status_code, admin.json()) == (400, {"error": words})

    sandbox = both_apis.post(TEST_ORDERS, json=fields, headers={"apiCode": api_code, **JSON})
    assert sandbox.json()["requestError"] == {"code": 501, "message": words}

    assert order_count(engine) == 0


@pytest.mark.parametrize("name", ["A" * 500, "Ada\x07\x1b[31m"], ids=["500 characters", "terminal escapes"])
def test_the_importer_refuses_an_unusable_engineer_name_in_csv_with_the_line_number(
    settings: Settings, engine: Engine, api_code: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str
) -> None:
    path = tmp_path / "orders.csv"
    path.write_text(
        "orderNumber,status,paymentStatus,engineer\r\nOK-1,Ordered,PaymentOK,\r\n"
        f"OK-2,Processing,PaymentOK,{name}\r\nOK-3,Processing,PaymentOK,Ada\r\n"
    )
    assert cli.main(["orders", "import", str(path), "--api-code", api_code, "--database-url", settings.database_url])
    err = capsys.readouterr().err
    assert "orders.csv:line 3: an engineer's name is 1-100 printable characters" in err
    assert "\x1b" not in err and "\x07" not in err
    assert order_count(engine) == 0


def test_a_csv_field_over_the_readers_limit_is_a_one_line_error_with_its_line_and_imports_nothing(
    settings: Settings, engine: Engine, api_code: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "orders.csv"
    huge = "x" * (129 * 1024)
    path.write_text(
        f"orderNumber,status,paymentStatus,engineer\nOK-1,Ordered,PaymentOK,\nOK-2,Ordered,PaymentOK,{huge}\n"
    )

    code = cli.main(["orders", "import", str(path), "--api-code", api_code, "--database-url", settings.database_url])

    assert code == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.splitlines() == [
        f"ordercancel: nothing imported from {path}: 1 bad row(s)",
        f"  {path}:line 3: not CSV: a field is longer than 128 KiB",
    ]
    assert order_count(engine) == 0


def test_a_csv_header_over_the_readers_limit_is_refused_as_line_1(
    engine: Engine, settings: Settings, api_code: str, tmp_path: Path
) -> None:
    path = tmp_path / "orders.csv"
    path.write_text("orderNumber," + "y" * (129 * 1024) + "\n")
    with pytest.raises(importer.ImportFailed, match="line 1: not CSV: a field is longer than 128 KiB"):
        importer.import_orders(engine, settings.environment, api_code, path)


# The sandbox's test orders refuse fields they do not know ----------------------------------------


@pytest.mark.parametrize(
    ("content", "content_type"),
    [
        (b'{"Status": "Shipped", "payment_status": "PaymentNOK"}', "application/json"),
        (
            b"<CreateTestOrderRequest><Status>Shipped</Status><payment_status>PaymentNOK</payment_status>"
            b"</CreateTestOrderRequest>",
            "text/xml",
        ),
    ],
    ids=["json", "xml"],
)
def test_a_test_order_with_misspelt_fields_is_refused_501_naming_them_and_creates_nothing(
    http: httpx.Client, api_code: str, engine: Engine, content: bytes, content_type: str
) -> None:
    headers = {"apiCode": api_code, "Content-Type": content_type, "Accept": "application/json"}
    response = http.post(TEST_ORDERS, content=content, headers=headers)
    assert response.status_code == 200
    assert response.json() == {
        "requestError": {
            "message": "unknown field(s) 'Status', 'payment_status'; "
            "the fields are status, paymentStatus, engineer, placedAt",
            "code": 501,
        }
    }
    assert order_count(engine) == 0


def test_the_sandbox_describes_its_test_orders_as_taking_no_other_fields(http: httpx.Client) -> None:
    schema = http.get("/openapi.json").json()["components"]["schemas"]["TestOrderRequest"]
    assert schema["additionalProperties"] is False
    assert set(schema["properties"]) == {"status", "paymentStatus", "engineer", "placedAt"}


# Every cancellation is in the cancellation record --------------------------------------------------


def test_an_operators_cancellation_over_the_admin_api_is_recorded_with_its_request_id(
    admin_http: httpx.Client, engine: Engine, settings: Settings, make_order: OrderFactory
) -> None:
    number = make_order(payment_status="PaymentNOK").order_number

    response = admin_http.post(f"/admin/orders/{number}/status", json={"status": "Cancelled", "operator": "Grace"})

    assert (response.status_code, response.json()["status"]) == (200, "Cancelled")
    [entry] = service.list_attempts(engine, settings.environment, order=number)
    assert (entry.operator, entry.key_id, entry.key_name, entry.outcome, entry.order_number) == (
        "Grace",
        None,
        None,
        0,
        number,
    )
    assert entry.request_id == response.headers["x-request-id"]


def test_a_customer_is_refused_506_for_the_failed_payment_an_operator_may_cancel(
    http: httpx.Client, engine: Engine, api_code: str, make_order: OrderFactory
) -> None:
    number = make_order(payment_status="PaymentNOK").order_number
    answer = http.post(BY_NUMBER, json={"orderNumber": number}, headers={"apiCode": api_code, **JSON}).json()
    assert answer["requestError"]["code"] == NotPlacedCorrectly.code

    assert service.set_status(engine, number, "Cancelled").status is ProductionStatus.CANCELLED


def test_the_cli_records_the_operator_by_option_or_by_user_and_audit_list_shows_them(
    settings: Settings,
    engine: Engine,
    make_order: OrderFactory,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    first, second = make_order().order_number, make_order().order_number
    db = ["--database-url", settings.database_url]
    monkeypatch.setenv("USER", "grace")

    assert cli.main(["orders", "set-status", first, "Cancelled", "--operator", "Ada Lovelace", *db]) == 0
    assert cli.main(["orders", "set-status", second, "Cancelled", *db]) == 0
    capsys.readouterr()

    assert cli.main(["audit", "list", *db]) == 0
    header, *lines = capsys.readouterr().out.splitlines()
    assert header.split("\t")[1:4] == ["key", "order", "outcome"]
    assert [line.split("\t")[1:4] for line in lines] == [
        ["operator Ada Lovelace", first, "cancelled"],
        ["operator grace", second, "cancelled"],
    ]
    assert cli.main(["audit", "list", "--json", "--order", second, *db]) == 0
    [entry] = json.loads(capsys.readouterr().out)["attempts"]
    assert (entry["operator"], entry["keyId"], entry["orderNumber"], entry["outcome"]) == ("grace", None, second, 0)


def test_an_unusable_operator_name_is_refused_and_changes_nothing(
    engine: Engine, settings: Settings, make_order: OrderFactory
) -> None:
    number = make_order().order_number
    with pytest.raises(service.InvalidValue, match="an operator's name is 1-100 printable characters"):
        service.set_status(engine, number, "Cancelled", operator="Ada\x1b[31m")
    assert service.find_order(engine, number).status is ProductionStatus.ORDERED
    assert service.list_attempts(engine, settings.environment) == []


def test_a_refused_operator_cancellation_changes_nothing_and_records_nothing(
    engine: Engine, settings: Settings, make_order: OrderFactory
) -> None:
    number = make_order(status="Processing", engineer="Ada").order_number
    with pytest.raises(service.TransitionRefused, match="claimed by Ada: release it first"):
        service.set_status(engine, number, "Cancelled")
    assert service.find_order(engine, number).status is ProductionStatus.PROCESSING
    assert service.list_attempts(engine, settings.environment) == []


def test_an_operators_cancellation_and_its_record_are_one_transaction(
    engine: Engine, settings: Settings, make_order: OrderFactory
) -> None:
    number = make_order().order_number

    @event.listens_for(engine, "before_cursor_execute")
    def fail_the_record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if statement.lstrip().upper().startswith("INSERT INTO CANCELLATION_ATTEMPTS"):
            raise RuntimeError("the disk is full")

    with pytest.raises(Exception, match="the disk is full"):
        service.set_status(engine, number, "Cancelled")
    event.remove(engine, "before_cursor_execute", fail_the_record)

    assert service.find_order(engine, number).status is ProductionStatus.ORDERED
    with engine.connect() as connection:
        assert connection.scalar(select(func.count()).select_from(cancellation_attempts)) == 0


def test_the_record_holds_a_key_or_an_operator_never_neither(engine: Engine, make_order: OrderFactory) -> None:
    order = make_order()
    with engine.connect() as connection:
        ref = connection.scalar(select(orders.c.id).where(orders.c.order_number == order.order_number))
    with pytest.raises(Exception, match=r"(?i)check"), engine.begin() as connection:
        connection.execute(
            insert(cancellation_attempts).values(at=database.utcnow(), order_ref=ref, outcome=0, request_id="r")
        )
