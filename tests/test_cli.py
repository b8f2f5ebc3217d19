"""The admin CLI, in-process and as a subprocess, on a real database."""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, select

import ordercancel
from ordercancel.cli import ImportProgress, _parser, main
from ordercancel.config import Settings, default_database_path
from ordercancel.domain import hash_api_code
from ordercancel.storage import service
from ordercancel.storage.database import create_sync_engine
from ordercancel.storage.schema import api_keys
from tests.support.serving import free_port
from tests.support.wire import BY_NUMBER, decode


def run(capsys: pytest.CaptureFixture[str], settings: Settings, *args: str) -> tuple[int, str, str]:
    code = main(["--database-url", settings.database_url, *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def cli(database_url: str, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ordercancel", *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "ORDERCANCEL_DATABASE_URL": database_url, **(env or {})},
    )


@pytest.mark.subprocess
def test_db_upgrade_creates_a_database_that_the_other_commands_use(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/new/ordercancel.db"
    upgraded = cli(url, "db", "upgrade")
    assert upgraded.returncode == 0, upgraded.stderr
    assert (tmp_path / "new" / "ordercancel.db").exists()
    assert cli(url, "db", "upgrade").returncode == 0  # again: nothing to do, still fine
    created = cli(url, "keys", "create", "--name", "shop", "--json")
    assert created.returncode == 0
    assert re.fullmatch(r"[0-9a-f-]{36}", json.loads(created.stdout)["apiCode"])


@pytest.mark.subprocess
def test_commands_on_a_missing_database_say_so_in_one_line(tmp_path: Path) -> None:
    result = cli(f"sqlite:///{tmp_path}/absent.db", "keys", "list")
    assert result.returncode == 1
    assert result.stderr.strip().count("\n") == 0
    assert "ordercancel db upgrade" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "absent.db").exists()


def test_keys_create_prints_the_code_once_and_stores_only_its_hash(
    capsys: pytest.CaptureFixture[str], settings: Settings
) -> None:
    code, out, _ = run(capsys, settings, "keys", "create", "--name", "shop", "--json")
    assert code == 0
    api_code = json.loads(out)["apiCode"]
    engine = create_sync_engine(settings)
    with engine.connect() as connection:
        stored = repr(connection.execute(select(api_keys)).all())
    engine.dispose()
    assert api_code not in stored
    assert hash_api_code(api_code) in stored
    database = settings.sqlite_path()
    if database is not None:  # and not in any page of the file, the WAL included
        raw = b"".join(path.read_bytes() for path in database.parent.glob(database.name + "*"))
        assert api_code.encode() not in raw
    code, out, _ = run(capsys, settings, "keys", "list", "--json")
    assert [key["name"] for key in json.loads(out)["keys"]] == ["shop"]
    assert api_code not in out


def test_keys_revoke_makes_the_code_unauthorized(
    capsys: pytest.CaptureFixture[str], settings: Settings, api_code: str, http: httpx.Client
) -> None:
    assert run(capsys, settings, "keys", "revoke", api_code)[0] == 0
    _, out, _ = run(capsys, settings, "keys", "list")
    assert "revoked" in out
    response = http.post(BY_NUMBER, json={"orderNumber": "IMC000001"}, headers={"apiCode": api_code})
    assert response.status_code == 401
    code, _, err = run(capsys, settings, "keys", "revoke", api_code)
    assert code == 1
    assert "no active API code" in err


def test_orders_create_gives_the_next_imc_number_and_the_asked_state(
    capsys: pytest.CaptureFixture[str], settings: Settings, api_code: str
) -> None:
    code, out, _ = run(capsys, settings, "orders", "create", "--api-code", api_code, "--json")
    assert code == 0
    first = json.loads(out)
    assert re.fullmatch(r"IMC\d{6}", first["orderNumber"])
    assert (first["status"], first["paymentStatus"], first["engineer"]) == ("Ordered", "PaymentOK", None)
    _, out, _ = run(
        capsys,
        settings,
        "orders",
        "create",
        "--api-code",
        api_code.upper(),
        "--status",
        "Processing",
        "--payment-status",
        "PaymentPending",
        "--engineer",
        "Ada",
        "--json",
    )
    second = json.loads(out)
    assert int(second["orderNumber"][3:]) == int(first["orderNumber"][3:]) + 1
    assert (second["status"], second["paymentStatus"], second["engineer"]) == ("Processing", "PaymentPending", "Ada")
    assert second["claimedAt"] is not None
    _, out, _ = run(capsys, settings, "orders", "create", "--api-code", api_code, "--number", "PLATFORM-77", "--json")
    assert json.loads(out)["orderNumber"] == "PLATFORM-77"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--status", "Paused"], "unknown status 'Paused'"),
        (["--payment-status", "Maybe"], "unknown paymentStatus 'Maybe'"),
        (["--number", "IMC 1"], "is not 1-32 letters"),
        (["--order-id", "nope"], "is not a GUID"),
        (["--status", "Shipped", "--engineer", "Ada"], "engineer can only hold"),
    ],
)
def test_orders_create_refuses_bad_values_in_one_line_and_creates_nothing(
    capsys: pytest.CaptureFixture[str], settings: Settings, api_code: str, args: list[str], message: str
) -> None:
    code, _, err = run(capsys, settings, "orders", "create", "--api-code", api_code, *args)
    assert code == 1
    assert message in err
    assert err.count("\n") == 1
    assert run(capsys, settings, "orders", "show", "IMC000001")[0] == 1


def test_orders_create_refuses_an_unknown_api_code_and_a_duplicate_number(
    capsys: pytest.CaptureFixture[str], settings: Settings, api_code: str
) -> None:
    code, _, err = run(capsys, settings, "orders", "create", "--api-code", "0f8fad5b-d9cb-469f-a165-70867728950e")
    assert (code, "no active API code" in err) == (1, True)
    code, _, err = run(capsys, settings, "orders", "create", "--api-code", "not-a-guid")
    assert (code, "is a GUID" in err) == (1, True)
    assert run(capsys, settings, "orders", "create", "--api-code", api_code, "--number", "X1")[0] == 0
    code, _, err = run(capsys, settings, "orders", "create", "--api-code", api_code, "--number", "X1")
    assert (code, "exists already" in err) == (1, True)


def test_orders_show_finds_an_order_by_number_or_id_and_reports_its_cancellation(
    capsys: pytest.CaptureFixture[str], settings: Settings, api_code: str, http: httpx.Client
) -> None:
    _, out, _ = run(capsys, settings, "orders", "create", "--api-code", api_code, "--json")
    order = json.loads(out)
    http.post(BY_NUMBER, json={"orderNumber": order["orderNumber"]}, headers={"apiCode": api_code})
    for ref in (order["orderNumber"], order["orderId"], order["orderId"].upper()):
        code, out, _ = run(capsys, settings, "orders", "show", ref, "--json")
        shown = json.loads(out)
        assert code == 0
        assert set(shown) >= {"orderId", "orderNumber", "status", "paymentStatus", "engineer", "cancelledAt"}
        assert (shown["status"], shown["orderId"]) == ("Cancelled", order["orderId"])
        assert shown["cancelledAt"] is not None
    code, out, _ = run(capsys, settings, "orders", "show", order["orderNumber"])
    assert "status: Cancelled" in out
    code, _, err = run(capsys, settings, "orders", "show", "IMC999999")
    assert (code, err) == (1, "ordercancel: no order 'IMC999999'\n")


@pytest.mark.subprocess
def test_a_bad_environment_or_url_is_one_line_and_not_a_traceback(settings: Settings) -> None:
    result = cli(settings.database_url, "keys", "list", env={"ORDERCANCEL_ENVIRONMENT": "staging"})
    assert result.returncode == 1
    assert result.stderr == "ordercancel: ORDERCANCEL_ENVIRONMENT: must be 'sandbox' or 'production', not 'staging'\n"
    result = cli("mysql://nope", "keys", "list")
    assert result.returncode == 1
    assert "ORDERCANCEL_DATABASE_URL" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.subprocess
def test_keys_belong_to_the_environment_they_were_created_in(settings: Settings) -> None:
    created = cli(settings.database_url, "--environment", "production", "keys", "create", "--json")
    production_code = json.loads(created.stdout)["apiCode"]
    assert cli(settings.database_url, "keys", "list", "--environment", "production").stdout.count("\n") == 2
    assert cli(settings.database_url, "keys", "list", "--environment", "sandbox").stdout == "id\tname\tcreated\tstate\n"
    result = cli(settings.database_url, "orders", "create", "--api-code", production_code, "--environment", "sandbox")
    assert result.returncode == 1


@pytest.mark.subprocess
def test_demo_and_serve_give_a_working_service_with_the_printed_commands(settings: Settings) -> None:
    port = free_port()
    demo = cli(settings.database_url, "demo", "--port", str(port))
    assert demo.returncode == 0, demo.stderr
    api_code = re.search(r"Demo API code \(sandbox\): (\S+)", demo.stdout)
    assert api_code is not None
    curls = [line.strip() for line in demo.stdout.splitlines() if line.strip().startswith("curl ")]
    assert len(curls) == 2
    server = subprocess.Popen(
        [sys.executable, "-m", "ordercancel", "serve", "--port", str(port)],
        env={**os.environ, "ORDERCANCEL_DATABASE_URL": settings.database_url},
        stdout=subprocess.DEVNULL,
    )
    try:
        wait_until_up(f"http://127.0.0.1:{port}/healthz")
        first = subprocess.run(["/bin/sh", "-c", curls[0]], capture_output=True, check=True, timeout=30)
        assert json.loads(first.stdout)["isCanceled"] is True
        second = subprocess.run(["/bin/sh", "-c", curls[1]], capture_output=True, check=True, timeout=30)
        assert decode(httpx.Response(200, content=second.stdout, headers={"content-type": "text/xml"})) == {
            "orderId": json.loads(first.stdout)["orderId"],
            "orderNumber": json.loads(first.stdout)["orderNumber"],
            "isCanceled": False,
            "requestError": {"message": "Order has already been cancelled before.", "code": 507},
        }
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=15)


def wait_until_up(url: str, seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.05)
    raise AssertionError(f"{url} did not come up")


@pytest.mark.subprocess
def test_serve_refuses_a_database_that_is_not_migrated(tmp_path: Path) -> None:
    result = cli(f"sqlite:///{tmp_path}/absent.db", "serve", "--port", str(free_port()))
    assert result.returncode == 1
    assert f"run 'ordercancel db upgrade --database-url sqlite:///{tmp_path}/absent.db' first" in result.stderr


# The CLI explains itself ----------------------------------------------------------------------


def _parsers(parser: argparse.ArgumentParser, name: str = "ordercancel") -> Iterator[tuple[str, Any]]:
    yield name, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub_name, sub in action.choices.items():
                yield from _parsers(sub, f"{name} {sub_name}")


def test_every_option_of_every_command_has_help() -> None:
    walked = list(_parsers(_parser()))
    assert len(walked) > 15  # serve, db upgrade, keys *, orders *, audit list, demo, cancel: all of them
    missing = [
        f"{name} {'/'.join(action.option_strings) or action.dest}"
        for name, parser in walked
        for action in parser._actions
        if not isinstance(action, argparse._SubParsersAction) and not action.help
    ]
    assert missing == []


def test_every_command_takes_environment_and_database_url() -> None:
    for name, parser in _parsers(_parser()):
        options = {option for action in parser._actions for option in action.option_strings}
        assert {"--environment", "--database-url"} <= options, name


def test_orders_create_lists_the_status_values_in_its_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["orders", "create", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "Draft, Ordered, Processing, InProduction, ReadyToShip" in text
    assert "PaymentPending, PaymentOK, PaymentNOK" in text


def test_version_prints_the_package_version() -> None:
    result = cli("sqlite:///unused.db", "--version")
    assert (result.returncode, result.stdout) == (0, f"ordercancel {ordercancel.__version__}\n")


def test_keys_list_and_audit_list_print_a_header_row(
    capsys: pytest.CaptureFixture[str], settings: Settings, api_code: str, http: httpx.Client
) -> None:
    http.post(BY_NUMBER, json={"orderNumber": "IMC999999"}, headers={"apiCode": api_code})
    _, out, _ = run(capsys, settings, "keys", "list")
    assert out.splitlines()[0].split("\t") == ["id", "name", "created", "state"]
    assert out.splitlines()[1].split("\t")[1] == "test"
    _, out, _ = run(capsys, settings, "audit", "list")
    assert out.splitlines()[0].split("\t") == ["time", "key", "order", "outcome", "request id"]
    assert out.splitlines()[1].split("\t")[3] == "505"
    _, out, _ = run(capsys, settings, "audit", "list", "--json")
    assert [attempt["outcome"] for attempt in json.loads(out)["attempts"]] == [505]


@pytest.mark.parametrize(
    ("environment", "variable"), [("sandbox", "ORDERCANCEL_SANDBOX_URL"), ("production", "ORDERCANCEL_PRODUCTION_URL")]
)
def test_cancel_without_url_uses_the_environments_base_url_variable(
    settings: Settings, environment: str, variable: str
) -> None:
    env = {"ORDERCANCEL_SANDBOX_URL": "", "ORDERCANCEL_PRODUCTION_URL": "", "ORDERCANCEL_API_CODE": str(uuid.uuid4())}
    unset = cli(settings.database_url, "cancel", "IMC000001", "--environment", environment, env=env)
    assert unset.returncode == 2
    assert unset.stderr == (
        f"ordercancel cancel: give --url or set {variable} "
        f"(the {environment}'s base URL, such as http://127.0.0.1:8080)\n"
    )
    # A port nobody listens on: the command tried the configured URL (exit 4, no answer), not another.
    port = free_port()
    configured = cli(
        settings.database_url,
        "cancel",
        "IMC000001",
        "--environment",
        environment,
        "--retries",
        "0",
        env={**env, variable: f"http://127.0.0.1:{port}"},
    )
    assert configured.returncode == 4, configured.stderr
    assert f"127.0.0.1:{port}" in configured.stderr or "no answer" in configured.stderr


def test_cancel_with_the_sandbox_url_variable_cancels_and_shows_the_hint_of_a_refusal(
    settings: Settings, engine: Engine, server: Any, api_code: str
) -> None:
    env = {"ORDERCANCEL_SANDBOX_URL": server.url, "ORDERCANCEL_API_CODE": api_code}
    order = service.create_order(engine, settings.environment, api_code)
    done = cli(settings.database_url, "cancel", order.order_number, env=env)
    assert (done.returncode, done.stdout.split(":")[0]) == (0, "cancelled")
    refused = cli(settings.database_url, "cancel", "IMC999999", env=env)
    assert refused.returncode == 3
    assert refused.stderr.startswith("hint: no order with this orderNumber belongs to your apiCode")


def test_a_relative_database_url_is_resolved_once_against_the_starting_directory(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "ordercancel", "db", "upgrade", "--database-url", "sqlite:///rel/x.db"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"database at head: sqlite:///{tmp_path}/rel/x.db\n"


def test_the_default_database_is_in_the_xdg_data_directory_whatever_the_current_directory(tmp_path: Path) -> None:
    data = tmp_path / "data"
    assert default_database_path({"XDG_DATA_HOME": str(data)}) == data / "ordercancel" / "ordercancel.db"
    assert default_database_path({"XDG_DATA_HOME": "relative"}).is_absolute()  # the XDG spec: ignored
    env = {key: value for key, value in os.environ.items() if key != "ORDERCANCEL_DATABASE_URL"}
    env["XDG_DATA_HOME"] = str(data)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    def ordercancel(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "ordercancel", *args],
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    missing = ordercancel("keys", "list", cwd=elsewhere)
    database = data / "ordercancel" / "ordercancel.db"
    assert missing.returncode == 1
    assert (
        f"no database at {database}: run 'ordercancel db upgrade --database-url sqlite:///{database}'" in missing.stderr
    )
    assert ordercancel("db", "upgrade", cwd=tmp_path).returncode == 0
    assert ordercancel("keys", "create", "--name", "one", cwd=tmp_path).returncode == 0
    listed = ordercancel("keys", "list", cwd=elsewhere)  # the same database from another directory
    assert listed.returncode == 0 and "\tone\t" in listed.stdout
    assert not (elsewhere / "var").exists() and not (tmp_path / "var").exists()


# Import feedback ------------------------------------------------------------------------------


def test_an_import_reports_every_bad_row_and_every_repeated_number_in_one_pass(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], settings: Settings, engine: Engine, api_code: str
) -> None:
    service.create_order(engine, settings.environment, api_code, number="STORED-1")
    good = '{{"orderNumber": "{}", "status": "Ordered", "paymentStatus": "PaymentOK"}}'
    lines = [
        good.format("A-1"),
        '{"orderNumber": "A 2", "status": "Ordered", "paymentStatus": "PaymentOK"}',
        '{"orderNumber": "A-3", "status": "Lost", "paymentStatus": "PaymentOK"}',
        '{"orderNumber": "A-4", "status": "Shipped", "paymentStatus": "PaymentOK", "engineer": "Ada"}',
        "{not json",
        '{"orderNumber": "A-6", "status": "Ordered"}',
        '{"orderNumber": "A-7", "status": "Ordered", "paymentStatus": "PaymentOK", "orderId": "nope"}',
        good.format("A-1"),
        good.format("STORED-1"),
    ]
    path = tmp_path / "orders.jsonl"
    path.write_text("\n".join(lines) + "\n")
    code, _, err = run(capsys, settings, "orders", "import", str(path), "--api-code", api_code)
    assert code == 1
    reported = [int(match) for match in re.findall(r"orders\.jsonl:line (\d+):", err)]
    assert reported == [2, 3, 4, 5, 6, 7, 8, 9]
    assert "line 8: orderNumber 'A-1' already on line 1" in err
    assert "line 9: orderNumber 'STORED-1' exists already" in err
    assert "8 bad row(s)" in err


def test_an_import_whose_only_problem_is_a_repeat_in_a_later_chunk_still_checks_every_row(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], settings: Settings, api_code: str
) -> None:
    good = '{{"orderNumber": "{}", "status": "Ordered", "paymentStatus": "PaymentOK"}}'
    lines = [good.format(f"B-{i}") for i in range(25)] + [good.format("B-3"), '{"orderNumber": "B-X"}']
    path = tmp_path / "orders.jsonl"
    path.write_text("\n".join(lines) + "\n")
    code, _, err = run(capsys, settings, "orders", "import", str(path), "--api-code", api_code)
    assert code == 1
    assert "line 26: orderNumber 'B-3' already on line 4" in err
    assert "line 27: status is missing" in err
    assert run(capsys, settings, "orders", "show", "B-0")[0] == 1  # all or nothing


def test_the_import_progress_shows_rows_rate_and_time_left() -> None:
    screen = io.StringIO()
    now = [100.0]
    with ImportProgress(screen, clock=lambda: now[0]) as progress:
        now[0] = 102.0
        progress(250, 1000, 5000)
        now[0] = 104.0
        progress(500, 1000, 10_000)
    shown = screen.getvalue()
    assert "10,000 rows" in shown
    assert "2,500 rows/s" in shown
    assert "left" in shown
    assert "50%" in shown
