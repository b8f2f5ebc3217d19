"""Operability: request ids, JSON access logs, /metrics, X-Forwarded-For, and `ordercancel audit list`."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import orjson
import pytest
from sqlalchemy import Engine, text

from ordercancel import cli
from ordercancel.config import Settings
from ordercancel.domain import hash_api_code
from ordercancel.http.observability import Metrics
from ordercancel.storage import service
from tests.support.orders import OrderFactory
from tests.support.serving import ServeProcess
from tests.support.wire import BY_ID, BY_NUMBER


def cancel(http: httpx.Client, api_code: str, number: str, **headers: str) -> httpx.Response:
    return http.post(
        BY_NUMBER, json={"orderNumber": number}, headers={"apiCode": api_code, "Accept": "application/json", **headers}
    )


def metric(exposition: str, name: str, **labels: str) -> float:
    """Read one sample of a Prometheus text exposition; 0 when absent."""
    wanted = ",".join(f'{k}="{v}"' for k, v in labels.items())
    for line in exposition.splitlines():
        sample, _, value = line.rpartition(" ")
        if sample == (f"{name}{{{wanted}}}" if labels else name):
            return float(value)
    return 0.0


def test_a_well_formed_request_id_is_echoed(http: httpx.Client, api_code: str) -> None:
    response = cancel(http, api_code, "IMC000001", **{"X-Request-ID": "trace-42.a:b"})
    assert response.headers["x-request-id"] == "trace-42.a:b"


def test_a_malformed_request_id_is_replaced_by_a_generated_one(http: httpx.Client, api_code: str) -> None:
    response = cancel(http, api_code, "IMC000001", **{"X-Request-ID": "no spaces; or <tags>"})
    assert re.fullmatch(r"[0-9a-f]{32}", response.headers["x-request-id"])


def test_every_request_gets_a_distinct_request_id(http: httpx.Client) -> None:
    ids = {http.get("/healthz").headers["x-request-id"] for _ in range(5)}
    assert len(ids) == 5


def test_metrics_count_requests_by_endpoint_and_outcome(
    http: httpx.Client, api_code: str, make_order: OrderFactory
) -> None:
    order = make_order()
    assert cancel(http, api_code, order.order_number).json()["isCanceled"] is True
    assert cancel(http, api_code, order.order_number).json()["requestError"]["code"] == 507
    assert cancel(http, api_code, "IMC999999").json()["requestError"]["code"] == 505
    http.post(BY_ID, content=b"{}", headers={"apiCode": "0f8fad5b-d9cb-469f-a165-70867728950e"})
    http.get("/no/such/path/1")
    http.get("/no/such/path/2")

    response = http.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    body = response.text
    requests = "ordercancel_requests_total"
    assert metric(body, requests, endpoint=BY_NUMBER, outcome="0", status="200") == 1
    assert metric(body, requests, endpoint=BY_NUMBER, outcome="507", status="200") == 1
    assert metric(body, requests, endpoint=BY_NUMBER, outcome="505", status="200") == 1
    assert metric(body, requests, endpoint=BY_ID, outcome="401", status="401") == 1
    # Unknown paths share one label: a scanner cannot grow the metrics without bound.
    assert metric(body, requests, endpoint="other", outcome="404", status="404") == 2
    histogram = "ordercancel_request_duration_seconds"
    assert metric(body, f"{histogram}_count", endpoint=BY_NUMBER) == 3
    assert metric(body, f"{histogram}_bucket", endpoint=BY_NUMBER, le="+Inf") == 3
    assert metric(body, f"{histogram}_bucket", endpoint=BY_NUMBER, le="10.0") == 3
    assert metric(body, f"{histogram}_sum", endpoint=BY_NUMBER) > 0
    assert metric(body, "ordercancel_database_errors_total") == 0
    # The series are those `serve --workers N` shows, which merges the workers' files: no `_created`.
    assert "_created" not in body


def test_metrics_refuse_a_shared_directory_when_the_client_already_counts_in_memory(tmp_path: Path) -> None:
    # This test process imported prometheus_client without PROMETHEUS_MULTIPROC_DIR: nothing it
    # counted would reach the directory, and its scrapes would show only the other workers.
    with pytest.raises(RuntimeError, match="PROMETHEUS_MULTIPROC_DIR must be set before"):
        Metrics(["/metrics"], multiprocess_dir=str(tmp_path))


def test_a_database_failure_is_a_500_without_details_and_is_counted(
    http: httpx.Client, api_code: str, make_order: OrderFactory, engine: Engine
) -> None:
    order = make_order()
    with engine.begin() as connection:  # the audit table vanishes: every cancellation now fails to record
        connection.execute(text("DROP TABLE cancellation_attempts"))
    response = cancel(http, api_code, order.order_number)
    assert response.status_code == 500
    assert response.json() == {
        "isCanceled": False,
        "requestError": {
            "message": "Unknown Error. Try again later. If the problem persists, please contact us.",
            "code": 500,
        },
    }
    assert service.find_order(engine, order.order_number).status == "Ordered"  # rolled back with the audit row
    body = http.get("/metrics").text
    assert metric(body, "ordercancel_database_errors_total") == 1
    assert metric(body, "ordercancel_requests_total", endpoint=BY_NUMBER, outcome="500", status="500") == 1


def _log_lines(process: ServeProcess) -> list[dict[str, object]]:
    return [orjson.loads(line) for line in process.logs().splitlines() if line.startswith("{")]


@pytest.mark.subprocess
def test_the_access_log_is_one_json_line_per_request_without_the_api_code(
    settings: Settings, api_code: str, make_order: OrderFactory, tmp_path: Path, engine: Engine
) -> None:
    order = make_order()
    key_id = service.list_keys(engine, settings.environment)[0].id
    with ServeProcess(settings.database_url, tmp_path / "serve.log") as served, served.client() as http:
        cancel(http, api_code, order.order_number, **{"X-Request-ID": "req-1"})
        cancel(http, api_code.upper(), "IMC999999", **{"X-Request-ID": "req-2"})
        http.post(BY_NUMBER, json={}, headers={"apiCode": "0f8fad5b-d9cb-469f-a165-70867728950e"})
    entries = {entry["request_id"]: entry for entry in _log_lines(served) if entry.get("message") == "request"}
    first = entries["req-1"]
    assert first["logger"] == "ordercancel.access"
    assert first["endpoint"] == BY_NUMBER
    assert (first["status"], first["outcome"], first["key_id"], first["method"]) == (200, 0, key_id, "POST")
    assert isinstance(first["latency_ms"], float)
    assert first["client"] == "127.0.0.1"
    assert (entries["req-2"]["outcome"], entries["req-2"]["key_id"]) == (505, key_id)
    unauthorized = [e for e in entries.values() if e["outcome"] == 401]
    assert len(unauthorized) == 1
    assert unauthorized[0]["key_id"] is None
    logs = served.logs().lower()
    assert api_code.lower() not in logs
    assert "0f8fad5b-d9cb-469f-a165-70867728950e" not in logs
    assert hash_api_code(api_code) not in logs


@pytest.mark.subprocess
@pytest.mark.parametrize(
    ("trusted", "logged_client"),
    [("127.0.0.1", "203.0.113.7"), ("", "127.0.0.1"), ("10.0.0.1", "127.0.0.1")],
    ids=["from-a-trusted-proxy", "no-proxy-configured", "from-another-address"],
)
def test_x_forwarded_for_is_believed_only_from_a_configured_proxy(
    settings: Settings, tmp_path: Path, trusted: str, logged_client: str
) -> None:
    env = {"ORDERCANCEL_TRUSTED_PROXIES": trusted}
    with (
        ServeProcess(settings.database_url, tmp_path / "serve.log", env=env) as served,
        served.client() as http,
    ):
        http.get("/openapi.json", headers={"X-Forwarded-For": "203.0.113.7", "X-Request-ID": "xff"})
    [entry] = [entry for entry in _log_lines(served) if entry.get("request_id") == "xff"]
    assert entry["client"] == logged_client


def test_audit_list_shows_the_record_by_api_code_and_by_order(
    http: httpx.Client,
    api_code: str,
    *,
    make_order: OrderFactory,
    engine: Engine,
    settings: Settings,
    capsys: pytest.CaptureFixture[str],
) -> None:
    other_code = service.create_key(engine, settings.environment, "other")
    mine, theirs = make_order(), make_order(api_code=other_code)
    cancel(http, api_code, mine.order_number, **{"X-Request-ID": "a1"})
    cancel(http, api_code, mine.order_number, **{"X-Request-ID": "a2"})
    cancel(http, other_code, theirs.order_number, **{"X-Request-ID": "b1"})
    cancel(http, api_code, theirs.order_number, **{"X-Request-ID": "a3"})  # not ours: 505, no order recorded
    common = ["--database-url", settings.database_url, "--environment", "sandbox", "--json"]

    def audit(*args: str) -> list[dict[str, object]]:
        capsys.readouterr()
        assert cli.main(["audit", "list", *args, *common]) == 0
        attempts: list[dict[str, object]] = orjson.loads(capsys.readouterr().out)["attempts"]
        return attempts

    assert [(a["requestId"], a["outcome"]) for a in audit()] == [("a1", 0), ("a2", 507), ("b1", 0), ("a3", 505)]
    by_code = audit("--api-code", api_code.upper())
    assert [a["requestId"] for a in by_code] == ["a1", "a2", "a3"]
    assert by_code[0]["orderNumber"] == mine.order_number
    assert by_code[0]["orderId"] == mine.order_id
    assert by_code[2]["orderNumber"] is None
    assert [a["requestId"] for a in audit("--order", mine.order_id)] == ["a1", "a2"]
    assert [a["requestId"] for a in audit("--order", theirs.order_number)] == ["b1"]
    assert [a["requestId"] for a in audit("--limit", "2")] == ["b1", "a3"]
    assert api_code not in str(audit()) and other_code not in str(audit())

    assert cli.main(["audit", "list", "--api-code", "0f8fad5b-d9cb-469f-a165-70867728950e", *common]) == 1
    assert "no API code like that" in capsys.readouterr().err
    assert cli.main(["audit", "list", "--order", "IMC424242", *common]) == 1
    assert "no order 'IMC424242'" in capsys.readouterr().err


def test_audit_list_prints_one_line_per_attempt(
    http: httpx.Client, api_code: str, make_order: OrderFactory, settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    order = make_order()
    cancel(http, api_code, order.order_number, **{"X-Request-ID": "line-1"})
    capsys.readouterr()
    assert cli.main(["audit", "list", "--database-url", settings.database_url, "--environment", "sandbox"]) == 0
    header, line = capsys.readouterr().out.splitlines()
    assert header.split("\t") == ["time", "key", "order", "outcome", "request id"]
    assert line.split("\t")[1:] == ["key 1 test", order.order_number, "cancelled", "line-1"]
