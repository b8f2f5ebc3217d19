"""`ordercancel cancel`: the client CLI against the real app over TCP, and its exit statuses."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import Engine

from ordercancel.cli import main
from ordercancel.config import Settings
from ordercancel.domain import ProductionStatus
from ordercancel.storage import service
from ordercancel.storage.schema import cancellation_attempts
from tests.support.live import LiveServer
from tests.support.orders import OrderFactory
from tests.support.serving import free_port


def cancel(*args: str) -> int:
    return main(["cancel", *args])


def test_a_cancelled_order_exits_0_and_says_so(
    server: LiveServer, api_code: str, make_order: OrderFactory, engine: Engine, capsys: pytest.CaptureFixture[str]
) -> None:
    order = make_order()
    assert cancel(order.order_number, "--api-code", api_code, "--url", server.url) == 0
    assert capsys.readouterr().out == f"cancelled: order {order.order_number} ({order.order_id}) in the sandbox\n"
    assert service.find_order(engine, order.order_id).status is ProductionStatus.CANCELLED


def test_json_prints_the_decoded_xml_response(
    server: LiveServer, api_code: str, make_order: OrderFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    order = make_order()
    args = [order.order_id, "--by-id", "--format", "xml", "--json", "--api-code", api_code, "--url", server.url]
    assert cancel(*args) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == {"orderId": order.order_id, "orderNumber": order.order_number, "isCanceled": True}


def test_a_refusal_exits_3_with_the_servers_code_and_message(
    server: LiveServer, api_code: str, make_order: OrderFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    order = make_order(status="Cancelled")
    assert cancel(order.order_number, "--api-code", api_code, "--url", server.url) == 3
    assert capsys.readouterr().out == "not cancelled: 507 Order has already been cancelled before.\n"


def test_a_refusal_with_json_prints_the_whole_answer(
    server: LiveServer, api_code: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cancel("IMC999999", "--json", "--api-code", api_code, "--url", server.url) == 3
    assert json.loads(capsys.readouterr().out) == {
        "orderNumber": "IMC999999",
        "isCanceled": False,
        "requestError": {"message": "Wrong OrderNumber has been applied.", "code": 505},
    }


def test_an_unknown_api_code_is_a_refusal(
    server: LiveServer, make_order: OrderFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    code = "0f8fad5b-d9cb-469f-a165-70867728950e"
    assert cancel(make_order().order_number, "--api-code", code, "--url", server.url) == 3
    assert capsys.readouterr().out == "not cancelled: 401 Unauthorized\n"


def test_the_api_code_can_come_from_the_environment(
    server: LiveServer,
    api_code: str,
    make_order: OrderFactory,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("ORDERCANCEL_API_CODE", api_code)
    assert cancel(make_order().order_number, "--url", server.url) == 0
    assert capsys.readouterr().out.startswith("cancelled: order ")


def test_no_answer_exits_4(capsys: pytest.CaptureFixture[str]) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    assert cancel("IMC000001", "--api-code", "x", "--url", url, "--retries", "1") == 4
    captured = capsys.readouterr()
    assert captured.out == ""
    waited, gave_up = captured.err.splitlines()  # it says when it waits before trying again
    assert waited.startswith("ordercancel cancel: ConnectError(") and "waiting" in waited
    assert gave_up.startswith("ordercancel cancel: no answer after 2 attempts: ConnectError(")


def test_a_server_failure_exits_5(
    settings: Settings, engine: Engine, api_code: str, make_order: OrderFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    order = make_order()
    with engine.begin() as connection:  # every cancellation now fails inside its transaction
        cancellation_attempts.drop(connection)
    with LiveServer(settings) as server:
        assert cancel(order.order_number, "--api-code", api_code, "--url", server.url, "--retries", "0") == 5
    assert capsys.readouterr().out.startswith("failed: 500 Unknown Error.")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["IMC000001", "--url", "http://127.0.0.1:1"], "give --api-code or set ORDERCANCEL_API_CODE"),
        (["IMC000001", "--api-code", "x", "--url", "127.0.0.1:8080"], "base_url must be an http:// or https:// URL"),
    ],
)
def test_a_usage_error_exits_2(
    args: list[str], message: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("ORDERCANCEL_API_CODE", raising=False)
    assert cancel(*args) == 2
    assert message in capsys.readouterr().err


@pytest.mark.subprocess
def test_the_installed_command_exits_with_the_documented_status(
    server: LiveServer, api_code: str, make_order: OrderFactory
) -> None:
    order = make_order(status="InProduction")
    command = Path(sys.executable).parent / "ordercancel"
    done = subprocess.run(
        [str(command), "cancel", order.order_number, "--api-code", api_code, "--url", server.url],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 3, done.stderr
    assert done.stdout.startswith("not cancelled: 508 Impossible to cancel order. Production has already been started.")
