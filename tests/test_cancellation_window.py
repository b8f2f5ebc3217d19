"""The cancellation window: past it an integrator's cancellation is refused 509, in the one conditional write.

The stores are given their clock, so the boundary is exact to the second on both databases; the
edge (a key's own window against ORDERCANCEL_CANCELLATION_WINDOW), the sandbox, the importer, the
CLI and the admin API are driven through their real entrances.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from alembic import command
from sqlalchemy import Engine, select, text

from ordercancel import cli
from ordercancel.config import ConfigError, Settings
from ordercancel.domain import (
    CUSTOMER_CANCELLATION,
    NO_WINDOW,
    InvalidOrderField,
    Lookup,
    Order,
    Outcome,
    PaymentStatus,
    ProcessingStarted,
    ProductionStatus,
    effective_window,
    new_order,
    parse_placed_at,
    window_cutoff,
)
from ordercancel.storage import RememberedKeys, SqliteStore, Store, database, importer, open_store, service
from ordercancel.storage.schema import api_keys
from ordercancel.storage.steps import Attempt
from tests.support.live import LiveServer
from tests.support.orders import OrderFactory
from tests.support.postgres import PostgresSchemas, postgres_url
from tests.support.wire import BY_ID, BY_NUMBER

JSON = {"Content-Type": "application/json", "Accept": "application/json"}
TEST_ORDERS = "/web-api/sandbox/orders"
HOUR = timedelta(hours=1)
#: When the boundary tests' orders were placed.
PLACED = datetime(2024, 5, 1, 9, 30, tzinfo=UTC)


def rfc3339(at: datetime) -> str:
    return at.astimezone(UTC).isoformat().replace("+00:00", "Z")


def store_with_clock(settings: Settings, clock: Callable[[], datetime]) -> Store:
    """The hot path's store for the test's database, telling the time the test says."""
    if settings.is_postgres:
        from ordercancel.storage.postgres import PostgresStore

        return PostgresStore(settings.database_url, settings.environment, pool_size=settings.pool_size, clock=clock)
    path = settings.sqlite_path()
    assert path is not None
    return SqliteStore(str(path), settings.environment, clock=clock)


def key_id_of(engine: Engine, api_code: str) -> int:
    with engine.connect() as connection:
        return int(
            connection.scalar(select(api_keys.c.id).where(api_keys.c.code_hash == service.hash_api_code(api_code))) or 0
        )


def cancel_at(
    settings: Settings, engine: Engine, api_code: str, order: Order, at: datetime, window: timedelta | None
) -> Outcome:
    store = store_with_clock(settings, lambda: at)

    async def run() -> Outcome:
        await store.start()
        try:
            return await store.cancel(
                Attempt(key_id_of(engine, api_code), "r", Lookup(False, order.order_number), window=window)
            )
        finally:
            await store.close()

    return asyncio.run(run())


def code_of(outcome: Outcome) -> int:
    return outcome.error.code if outcome.error else 0


# The rule ----------------------------------------------------------------------------------------


def test_the_window_is_half_open_an_order_is_past_it_at_exactly_placed_at_plus_the_window() -> None:
    order = Order("id", "N-1", ProductionStatus.ORDERED, PaymentStatus.OK, placed_at=PLACED)
    tick = timedelta(microseconds=1)
    assert CUSTOMER_CANCELLATION.allows(order, window_cutoff(PLACED + HOUR - tick, HOUR))
    assert not CUSTOMER_CANCELLATION.allows(order, window_cutoff(PLACED + HOUR, HOUR))
    assert isinstance(CUSTOMER_CANCELLATION.refusal(order, window_cutoff(PLACED + HOUR, HOUR)), ProcessingStarted)
    assert window_cutoff(PLACED, None) is None


def test_a_keys_own_window_overrides_the_setting_and_zero_lifts_it() -> None:
    assert effective_window(None, HOUR) == HOUR
    assert effective_window(None, None) is None
    assert effective_window(600, HOUR) == timedelta(minutes=10)
    assert effective_window(7200, None) == timedelta(hours=2)
    assert effective_window(NO_WINDOW, HOUR) is None


def test_placed_at_is_read_as_rfc_3339_with_its_offset_and_kept_in_utc() -> None:
    assert parse_placed_at("2024-05-01T11:30:00+02:00") == PLACED
    assert parse_placed_at("2024-05-01t09:30:00.123456789z") == PLACED + timedelta(microseconds=123456)
    assert new_order(placed_at=" 2024-05-01T09:30:00Z ").placed_at == PLACED
    assert new_order().placed_at is None
    bad_ones = ["2024-05-01T09:30:00", "2024-05-01", "yesterday", "2024-02-30T00:00:00Z", "1714555800"]
    for bad in [*bad_ones, "0001-01-01T00:00:00+01:00", "9999-12-31T23:00:00-05:00", "2024-05-01T09:30:00Z" * 10]:
        with pytest.raises(InvalidOrderField, match="is not an RFC 3339 date-time with an offset"):
            parse_placed_at(bad)


def test_the_setting_reads_a_duration_and_unset_or_empty_means_no_window() -> None:
    assert Settings.from_env({}).cancellation_window is None
    assert Settings.from_env({"ORDERCANCEL_CANCELLATION_WINDOW": ""}).cancellation_window is None
    assert Settings.from_env({"ORDERCANCEL_CANCELLATION_WINDOW": "2h"}).cancellation_window == 7200
    assert Settings.from_env({"ORDERCANCEL_CANCELLATION_WINDOW": "30m"}).cancellation_window == 1800
    for bad in ("soon", "0", "366d"):
        with pytest.raises(ConfigError, match="ORDERCANCEL_CANCELLATION_WINDOW"):
            Settings.from_env({"ORDERCANCEL_CANCELLATION_WINDOW": bad})


# The boundary, on both databases -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("offset", "expected"),
    [(-timedelta(seconds=1), 0), (timedelta(0), 509), (timedelta(seconds=1), 509)],
    ids=["one second before", "at the end", "one second after"],
)
def test_a_cancellation_is_decided_by_the_window_to_the_second(
    settings: Settings,
    engine: Engine,
    api_code: str,
    make_order: OrderFactory,
    offset: timedelta,
    expected: int,
) -> None:
    order = make_order(placed_at=rfc3339(PLACED))

    outcome = cancel_at(settings, engine, api_code, order, PLACED + HOUR + offset, HOUR)

    assert code_of(outcome) == expected
    stored = service.find_order(engine, order.order_id)
    assert stored.status is (ProductionStatus.CANCELLED if expected == 0 else ProductionStatus.ORDERED)
    assert [entry.outcome for entry in service.list_attempts(engine, settings.environment)] == [expected]


def test_without_a_window_an_order_placed_years_ago_is_cancelled_as_before(
    settings: Settings, engine: Engine, api_code: str, make_order: OrderFactory
) -> None:
    order = make_order(placed_at="2001-01-01T00:00:00Z")
    assert code_of(cancel_at(settings, engine, api_code, order, database.utcnow(), None)) == 0


def test_a_refusal_past_the_window_still_gives_the_earlier_codes_first(
    settings: Settings, engine: Engine, api_code: str, make_order: OrderFactory
) -> None:
    late = PLACED + 2 * HOUR
    cancelled = make_order(status="Cancelled", placed_at=rfc3339(PLACED))
    started = make_order(status="InProduction", placed_at=rfc3339(PLACED))
    failed = make_order(payment_status="PaymentNOK", placed_at=rfc3339(PLACED))
    codes = [code_of(cancel_at(settings, engine, api_code, o, late, HOUR)) for o in (cancelled, started, failed)]
    assert codes == [507, 508, 506]


# Racing the window's end ---------------------------------------------------------------------------


class SteppingClock:
    """A clock that moves on by `step` each time it is read: a burst that crosses an instant."""

    def __init__(self, start: datetime, step: timedelta) -> None:
        self._next = start
        self._step = step

    def __call__(self) -> datetime:
        now, self._next = self._next, self._next + self._step
        return now


def test_a_burst_across_the_windows_end_cancels_exactly_the_requests_read_before_it(
    settings: Settings, engine: Engine, api_code: str, make_order: OrderFactory
) -> None:
    """Many orders placed at one instant, cancelled at once while the clock crosses their window's end."""
    made = [make_order(placed_at=rfc3339(PLACED)) for _ in range(24)]
    end = PLACED + HOUR
    store = store_with_clock(settings, SteppingClock(end - timedelta(milliseconds=12), timedelta(milliseconds=1)))
    key = key_id_of(engine, api_code)

    async def burst() -> list[Outcome]:
        await store.start()
        try:
            attempts = [Attempt(key, o.order_number, Lookup(False, o.order_number), window=HOUR) for o in made]
            return await asyncio.gather(*(store.cancel(attempt) for attempt in attempts))
        finally:
            await store.close()

    outcomes = asyncio.run(burst())

    assert {code_of(outcome) for outcome in outcomes} == {0, 509}
    attempts = service.list_attempts(engine, settings.environment)
    assert len(attempts) == len(made)
    for entry in attempts:  # each request's own instant, as the store recorded it, decided it
        assert entry.outcome == (0 if entry.at < end else 509), (entry.at, entry.outcome)
        stored = service.find_order(engine, entry.order_number or "")
        assert (stored.status is ProductionStatus.CANCELLED) == (entry.outcome == 0)
    assert sorted(code_of(o) for o in outcomes) == sorted(entry.outcome for entry in attempts)


def test_concurrent_cancellations_of_one_order_across_the_windows_end_succeed_at_most_once(
    settings: Settings, engine: Engine, api_code: str, make_order: OrderFactory
) -> None:
    order = make_order(placed_at=rfc3339(PLACED))
    end = PLACED + HOUR
    store = store_with_clock(settings, SteppingClock(end - timedelta(milliseconds=3), timedelta(milliseconds=1)))
    key = key_id_of(engine, api_code)

    async def burst() -> list[Outcome]:
        await store.start()
        try:
            attempt = Attempt(key, "same", Lookup(True, order.order_id), window=HOUR)
            return await asyncio.gather(*(store.cancel(attempt) for _ in range(12)))
        finally:
            await store.close()

    codes = [code_of(outcome) for outcome in asyncio.run(burst())]

    assert codes.count(0) <= 1
    assert set(codes) <= {0, 507, 509}
    stored = service.find_order(engine, order.order_id)
    attempts = service.list_attempts(engine, settings.environment)
    assert sorted(entry.outcome for entry in attempts) == sorted(codes)
    if 0 in codes:
        [success] = [entry for entry in attempts if entry.outcome == 0]
        assert success.at < end and stored.status is ProductionStatus.CANCELLED
        assert stored.cancelled_at == success.at
    else:
        assert stored.status is ProductionStatus.ORDERED
    for entry in attempts:
        if entry.outcome == 509:
            assert entry.at >= end  # refused past the window only, never before it
        if entry.outcome == 507:
            assert 0 in codes  # "already cancelled" only after the one success


# A key's own window over the real edge --------------------------------------------------------------


@pytest.fixture
def windowed(settings: Settings) -> Settings:
    """The test's database with ORDERCANCEL_CANCELLATION_WINDOW=1h."""
    return settings.with_values(cancellation_window="1h")


def keys_update(settings: Settings, api_code: str, window: str) -> None:
    argv = ["keys", "update", api_code, "--cancellation-window", window, "--database-url", settings.database_url]
    assert cli.main(argv) == 0


def answer_code(http: httpx.Client, api_code: str, order: Order) -> int:
    answer = http.post(BY_NUMBER, json={"orderNumber": order.order_number}, headers={"apiCode": api_code, **JSON})
    body = answer.json()
    return 0 if body["isCanceled"] else int(body["requestError"]["code"])


def test_a_keys_own_window_shorter_longer_or_none_overrides_the_setting_over_http(
    windowed: Settings, engine: Engine, make_order: OrderFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    codes = {name: service.create_key(engine, windowed.environment, name) for name in ("setting", "10m", "2h", "none")}
    keys_update(windowed, codes["10m"], "10m")
    keys_update(windowed, codes["2h"], "2h")
    keys_update(windowed, codes["none"], "none")
    assert capsys.readouterr().out.splitlines() == [
        "cancellation window: 600 s",
        "cancellation window: 7200 s",
        "cancellation window: none",
    ]
    now = database.utcnow()
    ago = {"5m": now - timedelta(minutes=5), "30m": now - timedelta(minutes=30), "90m": now - timedelta(minutes=90)}
    ago["3d"] = now - timedelta(days=3)
    expected = {
        ("setting", "30m"): 0,
        ("setting", "90m"): 509,
        ("10m", "5m"): 0,
        ("10m", "30m"): 509,
        ("2h", "90m"): 0,
        ("2h", "3d"): 509,
        ("none", "3d"): 0,
    }
    made = {case: make_order(api_code=codes[case[0]], placed_at=rfc3339(ago[case[1]])) for case in expected}
    with LiveServer(windowed) as live, httpx.Client(base_url=live.url, timeout=10) as http:
        got = {case: answer_code(http, codes[case[0]], order) for case, order in made.items()}
    assert got == expected


def test_a_key_set_back_to_default_follows_the_setting_again_and_keys_list_shows_each_window(
    windowed: Settings, engine: Engine, api_code: str, make_order: OrderFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    keys_update(windowed, api_code, "none")
    db = ["--database-url", windowed.database_url]
    assert cli.main(["keys", "list", "--json", *db]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["keys"][0]["cancellationWindow"] == NO_WINDOW
    keys_update(windowed, api_code, "default")
    assert cli.main(["keys", "list", "--json", *db]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["keys"][0]["cancellationWindow"] is None
    old = make_order(placed_at=rfc3339(database.utcnow() - 2 * HOUR))
    with LiveServer(windowed) as live, httpx.Client(base_url=live.url, timeout=10) as http:
        assert answer_code(http, api_code, old) == 509


@pytest.mark.parametrize("window", ["soon", "0", "-5m", "1.5s", "400d"])
def test_an_unusable_window_for_a_key_is_refused_and_changes_nothing(
    settings: Settings, engine: Engine, api_code: str, window: str, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["keys", "update", api_code, f"--cancellation-window={window}", "--database-url", settings.database_url]
    assert cli.main(argv) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert "'none' (no window), or 'default'" in err or "whole seconds, at most 365d" in err
    assert [key.cancellation_window for key in service.list_keys(engine, settings.environment)] == [None]


def test_a_changed_window_reaches_a_process_once_its_remembered_key_expires(
    settings: Settings, engine: Engine, api_code: str
) -> None:
    now = [0.0]
    store = RememberedKeys(
        open_store(dataclasses.replace(settings, key_cache_seconds=0)), seconds=5, clock=lambda: now[0]
    )
    code_hash = service.hash_api_code(api_code)

    async def scenario() -> list[int | None]:
        await store.start()
        try:
            first = await store.authenticate(code_hash)
            service.set_cancellation_window(engine, settings.environment, api_code, "30m")
            now[0] = 4.9
            remembered = await store.authenticate(code_hash)
            now[0] = 5.1
            fresh = await store.authenticate(code_hash)
            return [None if c is None else c.cancellation_window for c in (first, remembered, fresh)]
        finally:
            await store.close()

    assert asyncio.run(scenario()) == [None, None, 1800]


# The sandbox's test orders ------------------------------------------------------------------------------


@pytest.fixture
def windowed_http(windowed: Settings) -> Iterator[httpx.Client]:
    with LiveServer(windowed) as live, httpx.Client(base_url=live.url, timeout=10) as client:
        yield client


@pytest.mark.parametrize(
    ("placed_ago", "expected"),
    [(None, 0), (timedelta(minutes=59), 0), (timedelta(minutes=61), 509), (timedelta(days=2), 509)],
    ids=["now", "59 minutes ago", "61 minutes ago", "two days ago"],
)
def test_a_sandbox_order_placed_before_the_window_is_refused_509_by_id_and_by_number(
    windowed_http: httpx.Client, api_code: str, placed_ago: timedelta | None, expected: int
) -> None:
    for path, field in ((BY_NUMBER, "orderNumber"), (BY_ID, "orderId")):
        body = {} if placed_ago is None else {"placedAt": rfc3339(database.utcnow() - placed_ago)}
        created = windowed_http.post(TEST_ORDERS, json=body, headers={"apiCode": api_code, **JSON})
        assert created.status_code == 200, created.text
        order = created.json()
        if placed_ago is not None:
            assert order["placedAt"] == body["placedAt"]
        answer = windowed_http.post(path, json={field: order[field]}, headers={"apiCode": api_code, **JSON}).json()
        assert (0 if answer["isCanceled"] else answer["requestError"]["code"]) == expected
        if expected:
            assert answer["requestError"]["message"] == ProcessingStarted.message


def test_a_sandbox_order_in_xml_takes_placed_at_and_answers_it(windowed_http: httpx.Client, api_code: str) -> None:
    body = "<CreateTestOrderRequest><placedAt>2024-05-01T11:30:00+02:00</placedAt></CreateTestOrderRequest>"
    headers = {"apiCode": api_code, "Content-Type": "text/xml", "Accept": "text/xml"}
    answer = windowed_http.post(TEST_ORDERS, content=body, headers=headers)
    assert answer.status_code == 200
    assert "<placedAt>2024-05-01T09:30:00Z</placedAt>" in answer.text


def test_a_sandbox_order_with_an_unreadable_placed_at_is_refused_501_and_creates_nothing(
    http: httpx.Client, api_code: str, engine: Engine
) -> None:
    answer = http.post(TEST_ORDERS, json={"placedAt": "yesterday"}, headers={"apiCode": api_code, **JSON}).json()
    assert answer["requestError"] == {
        "code": 501,
        "message": "placedAt 'yesterday' is not an RFC 3339 date-time with an offset, such as 2024-05-01T09:30:00Z",
    }
    with engine.connect() as connection:
        assert connection.scalar(text("SELECT count(*) FROM orders")) == 0


def test_without_a_window_a_sandbox_order_placed_long_ago_is_cancelled(http: httpx.Client, api_code: str) -> None:
    created = http.post(TEST_ORDERS, json={"placedAt": "2001-01-01T00:00:00Z"}, headers={"apiCode": api_code, **JSON})
    order = created.json()
    answer = http.post(BY_ID, json={"orderId": order["orderId"]}, headers={"apiCode": api_code, **JSON}).json()
    assert answer["isCanceled"] is True


# Every entrance that makes orders takes placedAt ------------------------------------------------------


def test_orders_create_takes_placed_at_and_defaults_to_now(
    settings: Settings, engine: Engine, api_code: str, capsys: pytest.CaptureFixture[str]
) -> None:
    db = ["--database-url", settings.database_url]
    argv = ["orders", "create", "--api-code", api_code, "--placed-at", "2024-05-01T11:30:00+02:00", "--json", *db]
    assert cli.main(argv) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["placedAt"] == PLACED.isoformat()
    assert service.find_order(engine, shown["orderId"]).placed_at == PLACED
    before = database.utcnow()
    assert cli.main(["orders", "create", "--api-code", api_code, "--json", *db]) == 0
    placed = service.find_order(engine, json.loads(capsys.readouterr().out)["orderId"]).placed_at
    assert placed is not None and before - timedelta(seconds=1) <= placed <= database.utcnow()
    assert cli.main(["orders", "create", "--api-code", api_code, "--placed-at", "May 1st", *db]) == 1
    assert "placedAt 'May 1st' is not an RFC 3339 date-time" in capsys.readouterr().err


def test_the_admin_api_creates_an_order_with_placed_at_and_shows_it(
    admin_http: httpx.Client, engine: Engine, api_code: str
) -> None:
    created = admin_http.post("/admin/orders", json={"apiCode": api_code, "placedAt": "2024-05-01T09:30:00Z"})
    assert created.status_code == 201
    assert created.json()["placedAt"] == PLACED.isoformat()
    assert service.find_order(engine, created.json()["orderId"]).placed_at == PLACED
    refused = admin_http.post("/admin/orders", json={"apiCode": api_code, "placedAt": "2024-05-01"})
    assert refused.status_code == 400 and "placedAt '2024-05-01'" in refused.json()["error"]


@pytest.mark.parametrize("kind", ["jsonl", "csv"])
def test_an_import_keeps_each_rows_placed_at_and_the_window_then_binds_it(
    settings: Settings, engine: Engine, api_code: str, tmp_path: Path, kind: str
) -> None:
    rows = [("IMP-OLD", "2024-05-01T11:30:00+02:00"), ("IMP-NOW", "")]
    path = tmp_path / f"orders.{kind}"
    if kind == "csv":
        lines = ["orderNumber,status,paymentStatus,placedAt", *(f"{n},Ordered,PaymentOK,{p}" for n, p in rows)]
        path.write_text("\n".join(lines) + "\n")
    else:
        records = [
            {"orderNumber": n, "status": "Ordered", "paymentStatus": "PaymentOK", "placedAt": p or None}
            for n, p in rows
        ]
        path.write_text("".join(json.dumps(record) + "\n" for record in records))
    before = database.utcnow()

    importer.import_orders(engine, settings.environment, api_code, path)

    old, new = (service.find_order(engine, number) for number, _ in rows)
    assert old.placed_at == PLACED
    assert new.placed_at is not None and before - timedelta(seconds=1) <= new.placed_at <= database.utcnow()
    assert code_of(cancel_at(settings, engine, api_code, old, database.utcnow(), HOUR)) == 509
    assert code_of(cancel_at(settings, engine, api_code, new, database.utcnow(), HOUR)) == 0


def test_an_import_row_with_an_unreadable_placed_at_is_named_and_nothing_is_imported(
    settings: Settings, engine: Engine, api_code: str, tmp_path: Path
) -> None:
    path = tmp_path / "orders.jsonl"
    good = {"orderNumber": "OK-1", "status": "Ordered", "paymentStatus": "PaymentOK"}
    path.write_text(json.dumps(good) + "\n" + json.dumps({**good, "orderNumber": "BAD-1", "placedAt": "now"}) + "\n")
    with pytest.raises(importer.ImportFailed, match="line 2: placedAt 'now' is not an RFC 3339 date-time"):
        importer.import_orders(engine, settings.environment, api_code, path)
    with engine.connect() as connection:
        assert connection.scalar(text("SELECT count(*) FROM orders")) == 0


# The migration ------------------------------------------------------------------------------------------


def migrate_with_an_old_order(engine: Engine) -> datetime:
    """Migrate to 0004, store an order as 0004 knew it, and migrate to head; return its created_at."""
    config = database.alembic_config(engine)
    command.upgrade(config, "0004")
    created = datetime(2023, 3, 4, 5, 6, 7, 890123, tzinfo=UTC)
    with engine.begin() as connection:
        key = connection.execute(
            text(
                "INSERT INTO api_keys (code_hash, environment, name, created_at) "
                "VALUES ('h', 'sandbox', '', :at) RETURNING id"
            ),
            {"at": created if engine.dialect.name == "postgresql" else database.sqlite_timestamp(created)},
        ).scalar_one()
        connection.execute(
            text(
                "INSERT INTO orders (order_id, order_number, api_key_id, status, payment_status, created_at) "
                "VALUES ('00000000-0000-0000-0000-000000000001', 'OLD-1', :key, 'Ordered', 'PaymentOK', :at)"
            ),
            {"key": key, "at": created if engine.dialect.name == "postgresql" else database.sqlite_timestamp(created)},
        )
    command.upgrade(config, "head")
    return created


def test_the_migration_places_every_existing_order_when_it_was_created_on_sqlite(tmp_path: Path) -> None:
    engine = database.create_sync_engine(Settings(database_url=f"sqlite:///{tmp_path / 'old.db'}"))
    try:
        created = migrate_with_an_old_order(engine)
        assert service.find_order(engine, "OLD-1").placed_at == created
        assert [key.cancellation_window for key in service.list_keys(engine, Settings().environment)] == [None]
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_the_migration_places_every_existing_order_when_it_was_created_on_postgresql(
    postgres_schemas: PostgresSchemas,
) -> None:
    name = postgres_schemas.create(migrated=False)
    engine = database.create_sync_engine(Settings(database_url=postgres_url(name)))
    try:
        created = migrate_with_an_old_order(engine)
        assert service.find_order(engine, "OLD-1").placed_at == created
    finally:
        engine.dispose()
        postgres_schemas.drop(name)
