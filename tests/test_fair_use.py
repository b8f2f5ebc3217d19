"""Fair use: a rate limit per API code with the IETF draft's headers, and the failed-authentication throttle."""

from __future__ import annotations

import dataclasses
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from sqlalchemy import Engine, func, select

from ordercancel.config import ConfigError, Settings
from ordercancel.domain import ProductionStatus
from ordercancel.storage import service
from ordercancel.storage.schema import cancellation_attempts
from tests.support.live import LiveServer
from tests.support.orders import OrderFactory
from tests.support.serving import ServeProcess, free_port
from tests.support.wire import BY_NUMBER

JSON = {"Content-Type": "application/json", "Accept": "application/json"}
XML = {"Content-Type": "text/xml", "Accept": "text/xml"}
TOO_MANY = "Too many requests. Retry after the number of seconds in Retry-After."
REDIS_URL = os.environ.get("ORDERCANCEL_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def _cancel(http: httpx.Client, code: str, number: str, headers: dict[str, str] = JSON) -> httpx.Response:
    if headers is XML:
        body = f"<CancelOrderByNumberRequest><orderNumber>{number}</orderNumber></CancelOrderByNumberRequest>"
    else:
        body = f'{{"orderNumber": "{number}"}}'
    return http.post(BY_NUMBER, content=body, headers={"apiCode": code, **headers})


def _attempts(engine: Engine) -> int:
    with engine.connect() as connection:
        return int(connection.scalar(select(func.count()).select_from(cancellation_attempts)) or 0)


@pytest.fixture
def limited(settings: Settings) -> Iterator[LiveServer]:
    """The real app with a limit of 3 requests per minute per API code."""
    with LiveServer(dataclasses.replace(settings, rate_limit="3/minute")) as live:
        yield live


@pytest.mark.parametrize("wire", [JSON, XML], ids=["json", "xml"])
def test_the_request_over_the_limit_gets_429_with_retry_after_and_changes_nothing(
    limited: LiveServer, engine: Engine, api_code: str, make_order: OrderFactory, wire: dict[str, str]
) -> None:
    refused = [make_order() for _ in range(3)]
    spared = make_order()
    with httpx.Client(base_url=limited.url, timeout=10) as http:
        answers = [_cancel(http, api_code, order.order_number, wire) for order in refused]
        assert [a.status_code for a in answers] == [200, 200, 200]
        assert [a.headers["ratelimit"].split(";")[1] for a in answers] == ["r=2", "r=1", "r=0"]
        assert {a.headers["ratelimit-policy"] for a in answers} == {'"default";q=3;w=60'}
        recorded = _attempts(engine)
        over = _cancel(http, api_code, spared.order_number, wire)
    assert over.status_code == 429
    assert 1 <= int(over.headers["retry-after"]) <= 60
    assert over.headers["ratelimit"].split(";")[1] == "r=0"
    assert over.headers["ratelimit-policy"] == '"default";q=3;w=60'
    assert over.headers["content-type"] == f"{wire['Accept']}; charset=utf-8"
    if wire is JSON:
        assert over.json() == {"isCanceled": False, "requestError": {"code": 429, "message": TOO_MANY}}
    else:
        assert "<code>429</code>" in over.text
        assert f"<message>{TOO_MANY}</message>" in over.text
    assert _attempts(engine) == recorded  # nothing recorded as an attempt
    assert service.find_order(engine, spared.order_number).status is ProductionStatus.ORDERED


def test_without_a_limit_no_rate_limit_header_is_sent(
    http: httpx.Client, api_code: str, make_order: OrderFactory
) -> None:
    answer = _cancel(http, api_code, make_order().order_number)
    assert answer.json()["isCanceled"] is True
    assert "ratelimit" not in answer.headers
    assert "ratelimit-policy" not in answer.headers


def test_each_api_code_has_its_own_count_and_a_key_policy_overrides_the_setting(
    settings: Settings, engine: Engine, api_code: str, make_order: OrderFactory
) -> None:
    tight = service.create_key(engine, settings.environment, "tight")
    free = service.create_key(engine, settings.environment, "free")
    service.set_rate_limit(engine, settings.environment, tight, "1/minute")
    service.set_rate_limit(engine, settings.environment, free, "none")
    with (
        LiveServer(dataclasses.replace(settings, rate_limit="2/minute")) as live,
        httpx.Client(base_url=live.url, timeout=10) as http,
    ):
        default = [_cancel(http, api_code, "IMC999999").status_code for _ in range(3)]
        tightened = [_cancel(http, tight, "IMC999999") for _ in range(2)]
        unlimited = [_cancel(http, free, "IMC999999") for _ in range(5)]
    assert default == [200, 200, 429]
    assert [a.status_code for a in tightened] == [200, 429]
    assert tightened[0].headers["ratelimit-policy"] == '"default";q=1;w=60'
    assert [a.status_code for a in unlimited] == [200] * 5
    assert all("ratelimit" not in a.headers for a in unlimited)


def test_a_key_policy_can_be_set_back_to_the_default_and_bad_ones_are_refused(
    settings: Settings, engine: Engine, api_code: str
) -> None:
    assert service.set_rate_limit(engine, settings.environment, api_code, "500/second") == "500/second"
    assert service.list_keys(engine, settings.environment)[0].rate_limit == "500/second"
    assert service.set_rate_limit(engine, settings.environment, api_code, "default") is None
    assert service.list_keys(engine, settings.environment)[0].rate_limit is None
    with pytest.raises(service.InvalidValue, match="such as 100/second"):
        service.set_rate_limit(engine, settings.environment, api_code, "lots")
    with pytest.raises(ConfigError, match="ORDERCANCEL_RATE_LIMIT"):
        Settings.from_env({"ORDERCANCEL_RATE_LIMIT": "fast"})


def test_the_cli_updates_a_key_policy(
    settings: Settings, engine: Engine, api_code: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from ordercancel.cli import main

    url = ["--database-url", settings.database_url]
    assert main(["keys", "update", api_code, "--rate-limit", "20/minute", *url]) == 0
    assert "20/minute" in capsys.readouterr().out
    assert main(["keys", "list", "--json", *url]) == 0
    assert '"rateLimit":"20/minute"' in capsys.readouterr().out


# The failed-authentication throttle ----------------------------------------------------------


def _serve(settings: Settings, tmp_path: Path, env: dict[str, str], *args: str) -> ServeProcess:
    return ServeProcess(settings.database_url, tmp_path / "serve.log", env=env, extra_args=args)


WRONG_CODE = "0f8fad5b-d9cb-469f-a165-70867728950e"


@pytest.mark.subprocess
@pytest.mark.parametrize("trusted", [True, False], ids=["behind-a-trusted-proxy", "no-proxy-trusted"])
def test_an_address_that_keeps_failing_authentication_gets_429_for_the_rest_of_the_minute(
    settings: Settings, tmp_path: Path, api_code: str, trusted: bool
) -> None:
    env = {"ORDERCANCEL_AUTH_FAILURES": "3"}
    if trusted:
        env["ORDERCANCEL_TRUSTED_PROXIES"] = "127.0.0.1"
    guesser, neighbour = {"X-Forwarded-For": "203.0.113.7"}, {"X-Forwarded-For": "203.0.113.8"}
    with _serve(settings, tmp_path, env) as serve, serve.client(timeout=10) as http:
        guesses = [_cancel(http, WRONG_CODE, "IMC000001", {**JSON, **guesser}).status_code for _ in range(3)]
        throttled = _cancel(http, api_code, "IMC000001", {**JSON, **guesser})
        neighbours = _cancel(http, api_code, "IMC000001", {**JSON, **neighbour})
    assert guesses == [401, 401, 401]
    # Even the right code is refused from that address now: guessing costs no more look-ups.
    assert throttled.status_code == 429
    assert throttled.json()["requestError"] == {"code": 429, "message": TOO_MANY}
    assert 1 <= int(throttled.headers["retry-after"]) <= 60
    # Behind a trusted proxy the neighbour is another address; without one, everyone is the proxy.
    assert neighbours.status_code == (200 if trusted else 429)


# Redis: one limit across workers, and failing open ---------------------------------------------


def _redis_reachable(url: str) -> str | None:
    host, port = url.removeprefix("redis://").split("/")[0].split(":")
    try:
        with socket.create_connection((host, int(port)), timeout=1) as probe:
            probe.sendall(b"PING\r\n")
            if probe.recv(16).startswith(b"+PONG"):
                return None
    except OSError as error:
        return f"Redis is not reachable at {url}: {error}"
    return f"{url} does not answer PING"


def _need_redis(url: str = REDIS_URL) -> None:
    reason = _redis_reachable(url)
    if reason is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason} (CI starts it)", pytrace=False)
        pytest.skip(reason)


@pytest.mark.subprocess
def test_one_limit_holds_across_workers_with_redis_storage(settings: Settings, tmp_path: Path, api_code: str) -> None:
    _need_redis()
    env = {"ORDERCANCEL_RATE_LIMIT": "20/hour", "ORDERCANCEL_RATE_LIMIT_STORAGE": REDIS_URL}
    serve = _serve(settings, tmp_path, env, "--workers", "2").start(timeout=90)  # workers start slowly
    try:

        def one(_: int) -> int:
            with serve.client(timeout=10) as http:  # a new connection each: both workers answer
                return _cancel(http, api_code, "IMC999999").status_code

        with ThreadPoolExecutor(8) as pool:
            statuses = list(pool.map(one, range(60)))
    finally:
        serve.stop()
    assert statuses.count(200) == 20
    assert statuses.count(429) == 40


@pytest.mark.subprocess
def test_requests_are_served_when_redis_is_down_and_health_says_degraded(
    settings: Settings, tmp_path: Path, api_code: str, make_order: OrderFactory
) -> None:
    redis_server = shutil.which("redis-server")
    if redis_server is None:
        if os.environ.get("CI") == "true":
            pytest.fail("redis-server is not installed (CI installs it)", pytrace=False)
        pytest.skip("redis-server is not installed: apt-get install redis-server")
    port = free_port()
    redis = subprocess.Popen(
        [redis_server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    try:
        deadline = time.monotonic() + 10
        while _redis_reachable(url) is not None and time.monotonic() < deadline:
            time.sleep(0.05)
        env = {"ORDERCANCEL_RATE_LIMIT": "100/minute", "ORDERCANCEL_RATE_LIMIT_STORAGE": url}
        with _serve(settings, tmp_path, env) as serve, serve.client(timeout=10) as http:
            before = _cancel(http, api_code, make_order().order_number)
            assert before.json()["isCanceled"] is True
            assert before.headers["ratelimit"].startswith('"default";r=99;')
            redis.kill()
            redis.wait(timeout=10)
            during = [_cancel(http, api_code, make_order().order_number) for _ in range(3)]
            health = http.get("/healthz").json()
            metrics = http.get("/metrics").text
            logs = serve.logs()
    finally:
        if redis.poll() is None:
            redis.kill()
    assert [a.json()["isCanceled"] for a in during] == [True, True, True]
    assert all("ratelimit" not in a.headers for a in during)
    assert health["status"] == "degraded"
    errors = [line for line in metrics.splitlines() if line.startswith("ordercancel_rate_limit_storage_errors_total ")]
    assert errors and float(errors[0].split()[1]) >= 1
    assert logs.count("rate-limit storage failed") == 1  # one line per outage, not one per request


# The client ------------------------------------------------------------------------------------


def test_the_client_waits_out_retry_after_and_then_succeeds(
    settings: Settings, engine: Engine, api_code: str, make_order: OrderFactory
) -> None:
    from ordercancel.client import Client, TooManyRequests

    service.set_rate_limit(engine, settings.environment, api_code, "1/second")
    first, second = make_order(), make_order()
    waits: list[tuple[float, str]] = []
    with (
        LiveServer(settings) as live,
        Client(api_code, base_url=live.url, retries=2, on_wait=lambda s, why: waits.append((s, why))) as client,
    ):
        assert client.cancel_by_number(first.order_number).order_number == first.order_number
        assert client.cancel_by_number(second.order_number).order_number == second.order_number
        # The second cancellation spent this second's one request: a client that never retries is told.
        with Client(api_code, base_url=live.url, retries=0) as impatient, pytest.raises(TooManyRequests) as raised:
            impatient.cancel_by_number("IMC999999")
    assert waits == [(1.0, "HTTP 429 (Retry-After: 1)")]
    assert (raised.value.code, raised.value.status_code) == (429, 429)


def test_the_cli_says_when_it_waited_for_the_rate_limit(
    settings: Settings, engine: Engine, api_code: str, make_order: OrderFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    from ordercancel.cli import main

    service.set_rate_limit(engine, settings.environment, api_code, "1/second")
    first, second = make_order(), make_order()
    with LiveServer(settings) as live:
        for order in (first, second):
            assert main(["cancel", order.order_number, "--api-code", api_code, "--url", live.url]) == 0
    err = capsys.readouterr().err
    assert err.count("waiting 1.0 s before trying again") == 1
    assert "HTTP 429 (Retry-After: 1)" in err
