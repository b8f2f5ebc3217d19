"""HTTPS served directly: `ordercancel serve --ssl-certfile F --ssl-keyfile F`."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest
from sqlalchemy import Engine

from ordercancel import cli
from ordercancel.config import Settings
from tests.support.orders import OrderFactory
from tests.support.serving import ServeProcess
from tests.support.wire import BY_ID, BY_NUMBER

OPENSSL = shutil.which("openssl")
pytestmark = [
    pytest.mark.subprocess,
    pytest.mark.skipif(
        OPENSSL is None and os.environ.get("CI") != "true", reason="needs the openssl command (Debian package openssl)"
    ),
]


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1, made for this test."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            OPENSSL or "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


@pytest.fixture
def tls_server(settings: Settings, certificate: tuple[Path, Path], tmp_path: Path) -> ServeProcess:
    cert, key = certificate
    args = ("--ssl-certfile", str(cert), "--ssl-keyfile", str(key))
    return ServeProcess(settings.database_url, tmp_path / "serve.log", extra_args=args, ca_file=cert)


def test_both_endpoints_answer_over_tls(
    tls_server: ServeProcess, api_code: str, make_order: OrderFactory, engine: Engine
) -> None:
    by_number, by_id = make_order(), make_order()
    with tls_server, tls_server.client(timeout=10) as https:
        assert tls_server.url.startswith("https://")
        first = https.post(
            BY_NUMBER,
            json={"orderNumber": by_number.order_number},
            headers={"apiCode": api_code, "Accept": "application/json"},
        )
        second = https.post(
            BY_ID,
            content=f"<r><orderId>{by_id.order_id}</orderId></r>".encode(),
            headers={"apiCode": api_code, "Content-Type": "text/xml"},
        )
    assert first.json() == {"orderId": by_number.order_id, "orderNumber": by_number.order_number, "isCanceled": True}
    assert second.headers["content-type"] == "text/xml; charset=utf-8"
    assert b"<isCanceled>true</isCanceled>" in second.content


def test_plain_http_to_the_tls_port_fails_cleanly_and_the_server_stays_up(tls_server: ServeProcess) -> None:
    with tls_server:
        plain_url = tls_server.url.replace("https://", "http://")
        with pytest.raises(httpx.TransportError), httpx.Client(timeout=5) as http:
            http.get(f"{plain_url}/healthz")
        with tls_server.client(timeout=5) as https:
            assert https.get("/healthz").status_code == 200
    assert "Traceback" not in tls_server.logs()


def test_a_client_that_does_not_trust_the_certificate_is_refused(tls_server: ServeProcess) -> None:
    with tls_server, pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"), httpx.Client() as http:
        http.get(f"{tls_server.url}/healthz")


def test_serve_refuses_a_certificate_without_its_key(
    settings: Settings, certificate: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    cert, _ = certificate
    argv = ["serve", "--database-url", settings.database_url, "--ssl-certfile", str(cert)]
    assert cli.main(argv) == 1
    assert "--ssl-certfile and --ssl-keyfile go together" in capsys.readouterr().err
