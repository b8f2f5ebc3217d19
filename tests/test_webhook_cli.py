"""`ordercancel webhooks ...` end to end, in-process, on a real SQLite file; deliveries by a real
dispatcher to a real receiver on loopback."""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, text

from ordercancel.cli import main
from ordercancel.config import Environment, Settings
from ordercancel.delivery import Dispatcher
from ordercancel.events import EventType
from ordercancel.storage import outbox, service
from ordercancel.storage.database import utcnow
from tests.support.receiver import Delivery, Receiver

ALL_EVENTS = [kind.value for kind in EventType]
UNKNOWN_ENDPOINT = "ep_0000000000000000"


@pytest.fixture
def settings(migrated_sqlite: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """A migrated SQLite file; the CLI may register loopback URLs (the receiver's), as only tests do."""
    path = tmp_path / "ordercancel.db"
    shutil.copy(migrated_sqlite, path)
    monkeypatch.setenv("ORDERCANCEL_ENVIRONMENT", "sandbox")
    monkeypatch.setenv("ORDERCANCEL_WEBHOOK_ALLOW_PRIVATE", "1")
    return Settings(database_url=f"sqlite:///{path}", environment=Environment.SANDBOX)


@pytest.fixture
def api_code(engine: Engine) -> str:
    return service.create_key(engine, Environment.SANDBOX, "shop")


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as running:
        yield running


def run(capsys: pytest.CaptureFixture[str], settings: Settings, *args: str) -> tuple[int, str, str]:
    code = main(["--database-url", settings.database_url, *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def run_json(capsys: pytest.CaptureFixture[str], settings: Settings, *args: str) -> Any:
    code, out, err = run(capsys, settings, *args, "--json")
    assert code == 0, err
    return json.loads(out)


def refused(capsys: pytest.CaptureFixture[str], settings: Settings, *args: str) -> str:
    """Run a command that must fail: exit 1, one line on stderr, nothing on stdout; return the line."""
    code, out, err = run(capsys, settings, *args)
    assert (code, out) == (1, "")
    assert err.startswith("ordercancel: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    return err


def usage_error(capsys: pytest.CaptureFixture[str], settings: Settings, *args: str) -> str:
    with pytest.raises(SystemExit) as exited:
        main(["--database-url", settings.database_url, *args])
    assert exited.value.code == 2
    return capsys.readouterr().err


def endpoint_rows(engine: Engine) -> list[tuple[Any, ...]]:
    with engine.connect() as connection:
        query = text(
            "SELECT endpoint_id, api_key_id, url, event_mask FROM webhook_endpoints "
            "WHERE removed_at IS NULL ORDER BY id"
        )
        return [tuple(row) for row in connection.execute(query)]


def key_id(engine: Engine, api_code: str) -> int:
    with engine.connect() as connection:
        return service.active_key_id(connection, Environment.SANDBOX, api_code)


def deliver(engine: Engine, timeout: float = 10.0) -> None:
    """Run a real dispatcher until no delivery is pending (bounded): a failed attempt is retried after 0.05 s."""

    async def dispatch() -> None:
        dispatcher = Dispatcher(engine, allow_private=True, schedule=(0.05,), poll=0.05)
        await dispatcher.start()
        try:
            deadline = time.monotonic() + timeout
            while (await asyncio.to_thread(outbox.backlog, engine))[0]:
                assert time.monotonic() < deadline, "deliveries still pending"
                await asyncio.sleep(0.05)
        finally:
            await dispatcher.stop()

    asyncio.run(dispatch())


# add ---------------------------------------------------------------------------------------------


def test_webhooks_add_json_prints_exactly_the_id_url_events_and_secret(
    capsys: pytest.CaptureFixture[str], settings: Settings, engine: Engine, api_code: str, receiver: Receiver
) -> None:
    added = run_json(capsys, settings, "webhooks", "add", receiver.url, "--api-code", api_code)
    assert set(added) == {"id", "url", "events", "secret"}
    assert (added["url"], added["events"]) == (receiver.url, ALL_EVENTS)
    assert added["id"].startswith("ep_") and added["secret"].startswith("whsec_")
    assert endpoint_rows(engine) == [(added["id"], key_id(engine, api_code), receiver.url, 15)]


def test_webhooks_add_prints_the_secret_once_in_words_and_takes_the_events_asked(
    capsys: pytest.CaptureFixture[str], settings: Settings, engine: Engine, api_code: str, receiver: Receiver
) -> None:
    code, out, _ = run(
        capsys,
        settings,
        "webhooks",
        "add",
        receiver.url,
        "--api-code",
        api_code,
        "--events",
        "order.cancelled, order.released",
    )
    assert code == 0
    lines = dict(line.split(": ", 1) for line in out.splitlines() if ": " in line)
    assert lines["url"] == receiver.url
    assert lines["events"] == "order.cancelled, order.released"
    assert lines["secret"].startswith("whsec_")
    assert "shown this once" in out
    [(endpoint_id, _, _, mask)] = endpoint_rows(engine)
    assert (endpoint_id, mask) == (lines["id"], 1 | 8)


def test_webhooks_add_all_keys_makes_an_operators_endpoint_for_every_order(
    capsys: pytest.CaptureFixture[str], settings: Settings, engine: Engine, receiver: Receiver
) -> None:
    added = run_json(capsys, settings, "webhooks", "add", receiver.url, "--all-keys", "--events", "order.claimed")
    assert added["events"] == ["order.claimed"]
    assert endpoint_rows(engine) == [(added["id"], None, receiver.url, 4)]
    code, out, _ = run(capsys, settings, "webhooks", "list")
    assert code == 0
    assert f"{added['id']}\t{receiver.url}\torder.claimed\tall keys\tactive" in out.splitlines()


def test_webhooks_add_takes_exactly_one_of_api_code_and_all_keys(
    capsys: pytest.CaptureFixture[str], settings: Settings, engine: Engine, api_code: str, receiver: Receiver
) -> None:
    both = usage_error(capsys, settings, "webhooks", "add", receiver.url, "--api-code", api_code, "--all-keys")
    assert "not allowed with argument" in both
    neither = usage_error(capsys, settings, "webhooks", "add", receiver.url)
    assert "one of the arguments --api-code --all-keys is required" in neither
    assert endpoint_rows(engine) == []


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        (["--events", "order.cancelled,order.shipped"], "unknown event type 'order.shipped'"),
        (["--api-code", "0f8fad5b-d9cb-469f-a165-70867728950e"], "no active API code"),
        (["--api-code", "not-a-guid"], "is a GUID"),
    ],
    ids=["unknown-event", "unknown-code", "not-a-guid"],
)
def test_webhooks_add_refuses_in_one_line_and_registers_nothing(
    capsys: pytest.CaptureFixture[str],
    settings: Settings,
    engine: Engine,
    api_code: str,
    receiver: Receiver,
    args: list[str],
    reason: str,
) -> None:
    owner = [] if "--api-code" in args else ["--api-code", api_code]
    assert reason in refused(capsys, settings, "webhooks", "add", receiver.url, *owner, *args)
    assert endpoint_rows(engine) == []


@pytest.mark.parametrize(
    ("url", "allow_private", "reason"),
    [
        ("http://127.0.0.1/hook", "0", "public addresses only"),
        ("http://localhost/hook", "0", "public addresses only"),
        ("http://169.254.169.254/", "0", "public addresses only"),
        ("ftp://192.88.99.1/", "1", "must be https or http"),
        ("http://user:secret@127.0.0.1/hook", "1", "no user name or password"),
    ],
)
def test_webhooks_add_refuses_a_url_no_webhook_may_reach(
    capsys: pytest.CaptureFixture[str],
    settings: Settings,
    engine: Engine,
    monkeypatch: pytest.MonkeyPatch,
    url: str,
    allow_private: str,
    reason: str,
) -> None:
    monkeypatch.setenv("ORDERCANCEL_WEBHOOK_ALLOW_PRIVATE", allow_private)
    assert reason in refused(capsys, settings, "webhooks", "add", url, "--all-keys")
    assert endpoint_rows(engine) == []


def test_webhooks_add_in_production_takes_https_only(
    capsys: pytest.CaptureFixture[str], settings: Settings, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ORDERCANCEL_ENVIRONMENT", "production")
    assert "must be https, not http" in refused(capsys, settings, "webhooks", "add", "http://127.0.0.1/", "--all-keys")
    assert endpoint_rows(engine) == []
    added = run_json(capsys, settings, "webhooks", "add", "https://127.0.0.1/", "--all-keys")
    assert added["url"] == "https://127.0.0.1/"


# list, remove ------------------------------------------------------------------------------------


def test_webhooks_list_shows_every_endpoint_and_never_a_secret(
    capsys: pytest.CaptureFixture[str], settings: Settings, engine: Engine, api_code: str, receiver: Receiver
) -> None:
    other = service.create_key(engine, Environment.SANDBOX, "other")
    first = run_json(capsys, settings, "webhooks", "add", receiver.url, "--api-code", api_code)
    second = run_json(
        capsys, settings, "webhooks", "add", receiver.url, "--api-code", other, "--events", "order.cancelled"
    )
    third = run_json(capsys, settings, "webhooks", "add", receiver.url, "--all-keys")
    listing = run_json(capsys, settings, "webhooks", "list")
    assert list(listing) == ["webhooks"]
    webhooks = listing["webhooks"]
    assert [w["id"] for w in webhooks] == [first["id"], second["id"], third["id"]]
    assert [w["apiKeyId"] for w in webhooks] == [key_id(engine, api_code), key_id(engine, other), None]
    assert set(webhooks[0]) == {"id", "url", "events", "apiKeyId", "createdAt", "disabledAt", "disabledReason"}
    assert webhooks[1]["events"] == ["order.cancelled"]
    code, out, _ = run(capsys, settings, "webhooks", "list")
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == "id\turl\tevents\towner\tstate"
    assert lines[1] == f"{first['id']}\t{receiver.url}\t{','.join(ALL_EVENTS)}\tkey {key_id(engine, api_code)}\tactive"
    assert len(lines) == 4
    for secret in (first["secret"], second["secret"], third["secret"]):
        assert secret not in out and secret not in json.dumps(listing)
    assert "whsec_" not in out


def test_webhooks_remove_removes_the_endpoint_and_its_deliveries(
    capsys: pytest.CaptureFixture[str], settings: Settings, engine: Engine, api_code: str, receiver: Receiver
) -> None:
    gone = run_json(capsys, settings, "webhooks", "add", receiver.url, "--api-code", api_code)
    kept = run_json(capsys, settings, "webhooks", "add", receiver.url, "--all-keys")
    order = service.create_order(engine, Environment.SANDBOX, api_code)
    service.set_status(engine, order.order_id, "Processing")  # a pending delivery to each
    assert len(outbox.list_deliveries(engine, endpoint_id=gone["id"])) == 1
    assert run(capsys, settings, "webhooks", "remove", gone["id"])[:2] == (0, "removed\n")
    assert [row[0] for row in endpoint_rows(engine)] == [kept["id"]]
    assert [d.endpoint_id for d in outbox.list_deliveries(engine)] == [kept["id"]]
    assert "no webhook endpoint" in refused(capsys, settings, "webhooks", "remove", gone["id"])


# rotate-secret -------------------------------------------------------------------------------------


def test_webhooks_rotate_secret_gives_a_new_secret_and_both_sign_for_a_while(
    capsys: pytest.CaptureFixture[str], settings: Settings, engine: Engine, api_code: str, receiver: Receiver
) -> None:
    added = run_json(capsys, settings, "webhooks", "add", receiver.url, "--api-code", api_code)
    rotated = run_json(capsys, settings, "webhooks", "rotate-secret", added["id"])
    assert set(rotated) == {"id", "url", "events", "secret"}
    assert (rotated["id"], rotated["url"], rotated["events"]) == (added["id"], added["url"], added["events"])
    assert rotated["secret"].startswith("whsec_") and rotated["secret"] != added["secret"]

    order = service.create_order(engine, Environment.SANDBOX, api_code)
    service.set_status(engine, order.order_id, "Processing")
    [due] = outbox.settle_and_claim(engine, [], now=utcnow(), lease=timedelta(seconds=30), limit=10)
    assert due.secrets == (rotated["secret"], added["secret"])  # the new one first

    code, out, _ = run(capsys, settings, "webhooks", "rotate-secret", added["id"])
    assert code == 0
    newest = dict(line.split(": ", 1) for line in out.splitlines() if ": " in line)["secret"]
    assert newest not in (added["secret"], rotated["secret"])
    assert "the old secret signs too until" in out
    assert "no webhook endpoint" in refused(capsys, settings, "webhooks", "rotate-secret", UNKNOWN_ENDPOINT)


# deliveries, replay ----------------------------------------------------------------------------------


def test_webhooks_deliveries_shows_every_attempt_with_its_http_status(
    capsys: pytest.CaptureFixture[str], settings: Settings, engine: Engine, api_code: str
) -> None:
    answers = iter([503, 204])
    with Receiver(lambda delivery: next(answers, 204)) as receiver:
        added = run_json(capsys, settings, "webhooks", "add", receiver.url, "--api-code", api_code)
        other = run_json(capsys, settings, "webhooks", "add", receiver.url, "--all-keys", "--events", "order.claimed")
        order = service.create_order(engine, Environment.SANDBOX, api_code)
        service.set_status(engine, order.order_id, "Processing")
        deliver(engine)
        first, second = receiver.received()
        assert first.webhook_id == second.webhook_id  # one delivery, tried twice

    [record] = run_json(capsys, settings, "webhooks", "deliveries")["deliveries"]
    assert (record["endpointId"], record["type"], record["orderNumber"]) == (
        added["id"],
        "order.status_changed",
        order.order_number,
    )
    assert (record["state"], record["nextAttemptAt"]) == ("delivered", None)
    assert [(a["status"], a["error"]) for a in record["attempts"]] == [(503, "answered HTTP 503"), (204, None)]
    assert all(a["latencyMs"] >= 0 for a in record["attempts"])

    code, out, _ = run(capsys, settings, "webhooks", "deliveries")
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == "delivery\tevent\ttype\torder\tendpoint\tstate\tattempts"
    assert lines[1].split("\t")[1:] == [
        record["eventId"],
        "order.status_changed",
        order.order_number,
        added["id"],
        "delivered",
        "2",
    ]
    assert "\tHTTP 503\t" in lines[2] and lines[2].endswith("answered HTTP 503")
    assert "\tHTTP 204\t" in lines[3]
    assert run_json(capsys, settings, "webhooks", "deliveries", "--endpoint", other["id"]) == {"deliveries": []}
    assert "no webhook endpoint" in refused(capsys, settings, "webhooks", "deliveries", "--endpoint", UNKNOWN_ENDPOINT)


def test_webhooks_deliveries_limit_shows_the_newest(
    capsys: pytest.CaptureFixture[str], settings: Settings, engine: Engine, api_code: str, receiver: Receiver
) -> None:
    run_json(capsys, settings, "webhooks", "add", receiver.url, "--api-code", api_code)
    order = service.create_order(engine, Environment.SANDBOX, api_code)
    service.set_status(engine, order.order_id, "Processing")
    service.claim(engine, order.order_id, "Ada")
    every = run_json(capsys, settings, "webhooks", "deliveries")["deliveries"]
    assert [d["type"] for d in every] == ["order.status_changed", "order.claimed"]
    assert all(d["state"] == "pending" and d["nextAttemptAt"] is not None for d in every)
    newest = run_json(capsys, settings, "webhooks", "deliveries", "--limit", "1")["deliveries"]
    assert newest == every[1:]
    assert "--limit" in usage_error(capsys, settings, "webhooks", "deliveries", "--limit", "0")


def test_webhooks_replay_makes_a_new_pending_delivery_of_the_same_event(
    capsys: pytest.CaptureFixture[str], settings: Settings, engine: Engine, api_code: str, receiver: Receiver
) -> None:
    added = run_json(capsys, settings, "webhooks", "add", receiver.url, "--api-code", api_code)
    operator = run_json(capsys, settings, "webhooks", "add", receiver.url, "--all-keys")
    order = service.create_order(engine, Environment.SANDBOX, api_code)
    service.set_status(engine, order.order_id, "Processing")
    deliver(engine)
    [first, second] = receiver.received()
    event_id = first.webhook_id
    assert second.webhook_id == event_id

    assert run(capsys, settings, "webhooks", "replay", event_id) == (0, "replayed to 2 endpoints\n", "")
    code, out, _ = run(capsys, settings, "webhooks", "replay", event_id, "--endpoint", added["id"])
    assert (code, out) == (0, "replayed to 1 endpoint\n")
    records = outbox.list_deliveries(engine)
    assert [r.event_id for r in records] == [event_id] * 5
    made = [(r.endpoint_id, r.state, len(r.attempts)) for r in records[2:]]
    assert sorted(made[:2]) == sorted([(added["id"], "pending", 0), (operator["id"], "pending", 0)])  # to each
    assert made[2] == (added["id"], "pending", 0)  # to the one named
    assert [r.state for r in records[:2]] == ["delivered", "delivered"]  # the first ones stay as they were
    deliver(engine)
    replayed: list[Delivery] = receiver.received()[2:]
    assert [d.webhook_id for d in replayed] == [event_id] * 3  # receivers that drop duplicates by id drop these

    assert "no event" in refused(capsys, settings, "webhooks", "replay", "evt_00000000000000000000000000000000")
    assert "no webhook endpoint" in refused(
        capsys, settings, "webhooks", "replay", event_id, "--endpoint", UNKNOWN_ENDPOINT
    )


def test_webhooks_replay_refuses_an_endpoint_that_may_not_hear_of_the_event(
    capsys: pytest.CaptureFixture[str], settings: Settings, engine: Engine, api_code: str, receiver: Receiver
) -> None:
    other = service.create_key(engine, Environment.SANDBOX, "other")
    mine = run_json(capsys, settings, "webhooks", "add", receiver.url, "--api-code", api_code)
    theirs = run_json(capsys, settings, "webhooks", "add", receiver.url, "--api-code", other)
    order = service.create_order(engine, Environment.SANDBOX, api_code)
    service.set_status(engine, order.order_id, "Processing")
    [record] = outbox.list_deliveries(engine)
    assert record.endpoint_id == mine["id"]
    assert "may not hear of event" in refused(
        capsys, settings, "webhooks", "replay", record.event_id, "--endpoint", theirs["id"]
    )
    assert len(outbox.list_deliveries(engine)) == 1
