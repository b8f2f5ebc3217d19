"""make deploy-check: run deploy/ for real on loopback and check what it promises, with figures.

PostgreSQL (a scratch database, dropped at the end), two `ordercancel serve --workers 2`
processes on two ports (two "machines"), Debian's nginx in front with deploy/nginx/ordercancel.conf
(only its addresses and paths rewritten) and a self-signed certificate, and Debian's Prometheus
scraping both backends with deploy/prometheus/ordercancel-rules.yml loaded. Every process is
started in a process group of its own and stopped at the end, whatever happened.
Each check prints one line, PASS or FAIL, with its figure; the exit status is 1 if any failed.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import queue
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
from defusedxml import ElementTree
from sqlalchemy.engine import make_url

DEPLOY = Path(__file__).resolve().parent
ORDERCANCEL = str(Path(sys.executable).with_name("ordercancel"))
BY_NUMBER = "/web-api/order/CancelOrderByNumber"
BY_ID = "/web-api/order/CancelOrderById"
MEDIA = {"json": "application/json", "xml": "text/xml"}
#: The outcome codes by endpoint: (missing reference, unknown order).
CODES = {BY_NUMBER: (503, 505), BY_ID: (502, 504)}
#: Requests the Prometheus check sends, and orders the SIGKILL check cancels under load.
COUNTED_REQUESTS = 40
LOAD_ORDERS = 400
LOAD_CLIENTS = 8
RACERS = 50
SCRATCH_PREFIX = "ordercancel_deploy_check_"
#: Generous bounds: the machine this runs on may be shared and busy (a serve took 17 s to start here).
STARTUP_TIMEOUT = 120.0
REQUEST_TIMEOUT = 30.0


class CheckFailed(Exception):
    """A check's expectation did not hold; the message is its figure."""


# Processes, each in a group of its own -------------------------------------------------------


@dataclass
class Processes:
    """What the check started: stopped at the end, the whole group each, even on failure."""

    running: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def start(self, name: str, args: list[str], log: Path, env: dict[str, str] | None = None) -> None:
        with log.open("ab") as out:
            self.running[name] = subprocess.Popen(
                args, stdout=out, stderr=out, env=env, start_new_session=True, stdin=subprocess.DEVNULL
            )

    def kill(self, name: str) -> None:
        """SIGKILL the group: the machine is gone, its workers with it."""
        process = self.running[name]
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)

    def alive(self, name: str) -> bool:
        return self.running[name].poll() is None

    def groups(self) -> set[int]:
        """The process group ids: each process leads its own group (start_new_session)."""
        return {process.pid for process in self.running.values()}

    def stop_all(self) -> None:
        for process in self.running.values():
            with _gone():
                os.killpg(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        for process in self.running.values():
            with suppress(subprocess.TimeoutExpired):
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            with _gone():
                os.killpg(process.pid, signal.SIGKILL)  # the group: workers left behind too
            process.wait(timeout=10)


def _gone() -> suppress:
    return suppress(ProcessLookupError)  # the process, or its whole group, has already gone


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def wait_for(what: str, ready: Callable[[], bool], timeout: float = STARTUP_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if ready():
                return
        except (httpx.HTTPError, OSError):
            pass
        time.sleep(0.1)
    raise CheckFailed(f"{what} was not ready in {timeout:.0f} s")


def run(*args: str, cwd: Path | None = None) -> str:
    done = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=120, check=False)
    if done.returncode != 0:
        raise CheckFailed(f"{' '.join(args)} exited {done.returncode}: {done.stdout}{done.stderr}".strip())
    return done.stdout + done.stderr


# The deployment ----------------------------------------------------------------------------


@dataclass
class Backend:
    name: str
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_lines(self) -> list[dict[str, Any]]:
        lines = []
        for line in self.log.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                lines.append(json.loads(line))
        return lines

    def logged(self, request_id: str) -> dict[str, Any] | None:
        return next((entry for entry in self.log_lines() if entry.get("request_id") == request_id), None)


@dataclass
class Deployment:
    tmp: Path
    database_url: str
    api_code: str
    orders: dict[str, tuple[str, str]]  # label -> (order number, order id)
    backends: list[Backend]
    edge_port: int
    prometheus_port: int
    cert: Path
    processes: Processes

    def edge(self, **options: Any) -> httpx.Client:
        context = ssl.create_default_context(cafile=str(self.cert))
        transport = httpx.HTTPTransport(verify=context, local_address=options.pop("local_address", None))
        return httpx.Client(
            base_url=f"https://127.0.0.1:{self.edge_port}", transport=transport, timeout=REQUEST_TIMEOUT, **options
        )

    def prometheus(self, query: str) -> list[dict[str, Any]]:
        answer = httpx.get(f"http://127.0.0.1:{self.prometheus_port}/api/v1/query", params={"query": query}, timeout=5)
        answer.raise_for_status()
        result: list[dict[str, Any]] = answer.json()["data"]["result"]
        return result

    def logged_anywhere(self, request_id: str, timeout: float = 15.0) -> tuple[Backend, dict[str, Any]]:
        """Find a request's log line in either backend's log (written just after its answer)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for backend in self.backends:
                entry = backend.logged(request_id)
                if entry is not None:
                    return backend, entry
            time.sleep(0.05)
        raise CheckFailed(f"no backend logged request {request_id}")


#: The orders the checks need, by label: (status, payment status, engineer).
SEED = {
    "cancel-number-json": ("Ordered", "PaymentOK", None),
    "cancel-number-xml": ("Processing", "PaymentOK", None),
    "cancel-id-json": ("Ordered", "PaymentOK", None),
    "cancel-id-xml": ("Ordered", "PaymentOK", None),
    "draft": ("Draft", "PaymentPending", None),
    "payment-nok": ("Ordered", "PaymentNOK", None),
    "in-production": ("InProduction", "PaymentOK", None),
    "claimed": ("Processing", "PaymentOK", "Ada"),
    "race": ("Ordered", "PaymentOK", None),
    **{f"load-{n}": ("Ordered", "PaymentOK", None) for n in range(LOAD_ORDERS)},
}


def seed(tmp: Path, env: dict[str, str]) -> tuple[str, dict[str, tuple[str, str]]]:
    """Migrate the scratch database, issue an API code, import the orders: the CLI, as an operator would."""
    subprocess.run([ORDERCANCEL, "db", "upgrade"], env=env, check=True, capture_output=True, timeout=120)
    created = subprocess.run(
        [ORDERCANCEL, "keys", "create", "--name", "deploy-check", "--json"],
        env=env, check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    api_code: str = json.loads(created.stdout)["apiCode"]
    orders = {label: (f"DC-{label}".upper()[:32], str(uuid.uuid4())) for label in SEED}
    rows = []
    for label, (status, payment, engineer) in SEED.items():
        number, order_id = orders[label]
        row = {"orderNumber": number, "orderId": order_id, "status": status, "paymentStatus": payment}
        rows.append(json.dumps(row | ({"engineer": engineer} if engineer else {})))
    path = tmp / "orders.jsonl"
    path.write_text("\n".join(rows) + "\n")
    subprocess.run(
        [ORDERCANCEL, "orders", "import", str(path), "--api-code", api_code],
        env=env, check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    return api_code, orders


def make_certificate(tmp: Path) -> tuple[Path, Path]:
    cert, key = tmp / "edge.pem", tmp / "edge.key"
    run(
        "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
        "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost", "-keyout", str(key), "-out", str(cert),
    )  # fmt: skip
    return cert, key


def start_backends(tmp: Path, env: dict[str, str], processes: Processes, workers: int) -> list[Backend]:
    backends = [Backend(name, free_port(), tmp / f"backend-{name}.log") for name in ("a", "b")]
    for backend in backends:
        args = [ORDERCANCEL, "serve", "--host", "127.0.0.1", "--port", str(backend.port), "--workers", str(workers)]
        processes.start(f"backend-{backend.name}", args, backend.log, env)
    for backend in backends:
        wait_for(
            f"backend {backend.name} (its log: {backend.log})",
            lambda b=backend: httpx.get(f"{b.url}/healthz", timeout=1).status_code == 200,  # type: ignore[misc]
            timeout=STARTUP_TIMEOUT,
        )
    return backends


def substitute(text: str, pattern: str, replacement: str, count: int) -> str:
    """Rewrite the production site for loopback; fail loudly if the site no longer has what is rewritten."""
    new, found = re.subn(pattern, replacement, text, flags=re.MULTILINE)
    if found != count:
        raise CheckFailed(f"deploy/nginx/ordercancel.conf: expected {count} match(es) of {pattern!r}, found {found}")
    return new


def render_nginx(tmp: Path, backends: list[Backend], edge_port: int, cert: Path, key: Path) -> Path:
    site = (DEPLOY / "nginx" / "ordercancel.conf").read_text()
    servers = iter(backends)
    site, found = re.subn(
        r"^(\s*server )10\.0\.0\.\d+:8000( .*;)$", lambda m: f"{m[1]}127.0.0.1:{next(servers).port}{m[2]}", site,
        flags=re.MULTILINE,
    )  # fmt: skip
    if found != len(backends):
        raise CheckFailed(f"deploy/nginx/ordercancel.conf: expected {len(backends)} upstream servers, found {found}")
    site = substitute(site, r"^\s*listen \[::\]:\d+.*\n", "", 2)  # loopback only: no IPv6 wildcard
    site = substitute(site, r"^(\s*)listen 80;$", rf"\g<1>listen 127.0.0.1:{free_port()};", 1)
    site = substitute(site, r"^(\s*)listen 443 ssl", rf"\g<1>listen 127.0.0.1:{edge_port} ssl", 1)
    site = substitute(site, r"^(\s*ssl_certificate\s+)\S+;$", rf"\g<1>{cert};", 1)
    site = substitute(site, r"^(\s*ssl_certificate_key\s+)\S+;$", rf"\g<1>{key};", 1)
    root = tmp / "nginx"
    for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (root / name).mkdir(parents=True)
        (root / name).chmod(0o777)  # nginx's workers run as nobody when the master is root
    (root / "ordercancel.conf").write_text(site)
    config = root / "nginx.conf"
    temp_paths = "\n".join(
        f"    {name}_temp_path {root / name};" for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    config.write_text(
        f"""pid {root / "nginx.pid"};
error_log {root / "error.log"} warn;
worker_processes 2;
events {{ worker_connections 1024; }}
http {{
    include /etc/nginx/mime.types;
    default_type application/octet-stream;
    access_log {root / "access.log"};
{temp_paths}
    include {root / "ordercancel.conf"};
}}
"""
    )
    return config


def start_nginx(tmp: Path, config: Path, edge_port: int, cert: Path, processes: Processes) -> None:
    root = config.parent
    run("nginx", "-t", "-q", "-e", str(root / "error.log"), "-p", str(root), "-c", str(config))
    processes.start(
        "nginx",
        ["nginx", "-e", str(root / "error.log"), "-p", str(root), "-c", str(config), "-g", "daemon off;"],
        root / "stderr.log",
    )
    context = ssl.create_default_context(cafile=str(cert))
    wait_for(
        "nginx", lambda: httpx.get(f"https://127.0.0.1:{edge_port}/", verify=context, timeout=1).status_code == 404
    )


def start_prometheus(tmp: Path, backends: list[Backend], port: int, processes: Processes) -> None:
    config = tmp / "prometheus.yml"
    targets = ", ".join(f'"127.0.0.1:{backend.port}"' for backend in backends)
    config.write_text(
        f"""global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files:
  - {DEPLOY / "prometheus" / "ordercancel-rules.yml"}
scrape_configs:
  - job_name: ordercancel
    static_configs:
      - targets: [{targets}]
"""
    )
    args = [
        "prometheus", f"--config.file={config}", f"--storage.tsdb.path={tmp / 'prometheus-data'}",
        f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn",
    ]  # fmt: skip
    processes.start("prometheus", args, tmp / "prometheus.log")
    wait_for("prometheus", lambda: httpx.get(f"http://127.0.0.1:{port}/-/ready", timeout=1).status_code == 200)


# Requests ---------------------------------------------------------------------------------


def body(path: str, fmt: str, value: str | None) -> bytes:
    name = "orderNumber" if path == BY_NUMBER else "orderId"
    if fmt == "json":
        return json.dumps({} if value is None else {name: value}).encode()
    root = "CancelOrderByNumberRequest" if path == BY_NUMBER else "CancelOrderByIdRequest"
    inner = "" if value is None else f"<{name}>{value}</{name}>"
    return f"<{root}>{inner}</{root}>".encode()


def read(response: httpx.Response) -> dict[str, Any]:
    """Decode an answer of ours, JSON or XML, into the fields the contract names."""
    media_type = response.headers.get("content-type", "").split(";")[0]
    if media_type.endswith("json"):
        decoded: dict[str, Any] = response.json()
        return decoded
    root = ElementTree.fromstring(response.content)
    fields: dict[str, Any] = {child.tag: child.text for child in root if len(child) == 0}
    fields["isCanceled"] = fields.get("isCanceled") == "true"
    error = root.find("requestError")
    if error is not None:
        fields["requestError"] = {"message": error.findtext("message"), "code": int(error.findtext("code") or 0)}
    return fields


def cancel(
    http: httpx.Client, code: str | None, path: str, fmt: str, value: str | None, **headers: str
) -> httpx.Response:
    sent = {"Content-Type": MEDIA[fmt], "Accept": MEDIA[fmt], **headers}
    if code is not None:
        sent["apiCode"] = code
    return http.post(path, content=body(path, fmt, value), headers=sent)


def outcome(response: httpx.Response) -> int:
    """0 for a cancellation, else the answer's code."""
    fields = read(response)
    return 0 if fields.get("isCanceled") is True else int(fields["requestError"]["code"])


# The checks ---------------------------------------------------------------------------------


def check_prometheus_count(d: Deployment) -> str:
    """Send a known number of API requests through the edge; Prometheus' sum over both targets counts them."""
    with d.edge() as http:
        for n in range(COUNTED_REQUESTS):
            path, fmt = (BY_NUMBER, BY_ID)[n % 2], ("json", "xml")[n // 2 % 2]
            unknown = f"DC-NONE-{n}" if path == BY_NUMBER else str(uuid.uuid4())
            if outcome(cancel(http, d.api_code, path, fmt, unknown)) != CODES[path][1]:
                raise CheckFailed(f"request {n} was not refused as unknown")
    query = 'sum(ordercancel_requests_total{job="ordercancel", endpoint=~"/web-api/order/.*"})'
    per_target = query.replace("sum(", "sum by (instance) (")
    seen = -1.0
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        result = d.prometheus(query)
        seen = float(result[0]["value"][1]) if result else -1.0
        if seen == COUNTED_REQUESTS:
            break
        time.sleep(0.5)
    targets = {r["metric"]["instance"]: float(r["value"][1]) for r in d.prometheus(per_target)}
    direct = {b.name: direct_count(b) for b in d.backends}
    up = sum(float(r["value"][1]) for r in d.prometheus('up{job="ordercancel"}'))
    figure = (
        f"sent {COUNTED_REQUESTS} through the edge; Prometheus {query} = {seen:g} "
        f"(by target {targets}; {up:g} of 2 targets up); each backend's /metrics now reports {direct}"
    )
    if seen != COUNTED_REQUESTS:
        raise CheckFailed(figure + " (with --workers > 1, a /metrics that counts one worker per scrape cannot add up)")
    return figure


def direct_count(backend: Backend) -> float:
    text = httpx.get(f"{backend.url}/metrics", timeout=5).text
    pattern = re.compile(
        r'^ordercancel_requests_total\{[^}]*endpoint="/web-api/order/[^"]*"[^}]*\} (\S+)$', re.MULTILINE
    )
    return sum(float(value) for value in pattern.findall(text))


def smoke_cases(d: Deployment, path: str, fmt: str) -> list[tuple[str, str | None, str | None, int, int]]:
    """(case, API code, value sent, HTTP status, outcome code) for one endpoint and format."""
    by_id = path == BY_ID
    ref = {label: d.orders[label][1 if by_id else 0] for label in d.orders}
    missing, unknown = CODES[path]
    mine = f"cancel-{'id' if by_id else 'number'}-{fmt}"
    return [
        ("cancellable order", d.api_code, ref[mine], 200, 0),
        ("the same again", d.api_code, ref[mine], 200, 507),
        ("draft", d.api_code, ref["draft"], 200, 506),
        ("payment failed", d.api_code, ref["payment-nok"], 200, 506),
        ("in production", d.api_code, ref["in-production"], 200, 508),
        ("claimed by an engineer", d.api_code, ref["claimed"], 200, 509),
        ("no such order", d.api_code, str(uuid.uuid4()) if by_id else "DC-NOBODY", 200, unknown),
        ("no reference", d.api_code, None, 200, missing),
        ("no API code", None, ref["draft"], 401, 401),
        ("an unknown API code", str(uuid.uuid4()), ref["draft"], 401, 401),
    ]


def check_one_smoke(http: httpx.Client, d: Deployment, path: str, fmt: str) -> int:
    checked = 0
    for case, code, value, status, expected in smoke_cases(d, path, fmt):
        response = cancel(http, code, path, fmt, value)
        got = (response.status_code, outcome(response), response.headers.get("content-type"))
        want = (status, expected, f"{MEDIA[fmt]}; charset=utf-8")
        if got != want or response.headers.get("x-ordercancel-environment") != "production":
            raise CheckFailed(f"{path} {fmt} {case}: got {got}, expected {want}")
        if (
            expected == 0
            and read(response)["orderNumber"] != d.orders[f"cancel-{'id' if path == BY_ID else 'number'}-{fmt}"][0]
        ):
            raise CheckFailed(f"{path} {fmt} {case}: the answer names another order")
        checked += 1
    too_large = http.post(path, content=b" " * (64 * 1024 + 1), headers={"apiCode": d.api_code, "Accept": MEDIA[fmt]})
    if (too_large.status_code, outcome(too_large)) != (413, 501) or MEDIA[fmt] not in too_large.headers["content-type"]:
        raise CheckFailed(f"{path} {fmt} over 64 KiB: {too_large.status_code} {too_large.text[:200]}")
    wrong_method = http.get(path, headers={"apiCode": d.api_code})
    if (wrong_method.status_code, wrong_method.headers.get("allow")) != (405, "POST"):
        raise CheckFailed(f"GET {path}: {wrong_method.status_code}, Allow {wrong_method.headers.get('allow')}")
    return checked + 2


def check_smoke(d: Deployment) -> str:
    """The contract's smoke cases through the edge: both endpoints, both formats."""
    with d.edge() as http:
        total = sum(check_one_smoke(http, d, path, fmt) for path in (BY_NUMBER, BY_ID) for fmt in ("json", "xml"))
    cases = "0, 507, 506 x2, 508, 509, 504/505, 502/503, 401 x2, 413, 405"
    return f"{total} cases over HTTPS (2 endpoints x 2 formats: {cases})"


def check_race(d: Deployment) -> str:
    """RACERS clients, each on its own connection, cancel one order at once through the edge."""
    start = threading.Barrier(RACERS)
    number = d.orders["race"][0]

    def race(n: int) -> int:
        with d.edge() as http:
            http.get("/")  # connect (TLS included) before the barrier, so the requests leave together
            start.wait(timeout=30)
            return outcome(
                cancel(http, d.api_code, BY_NUMBER, ("json", "xml")[n % 2], number, **{"X-Request-ID": f"race-{n}"})
            )

    with ThreadPoolExecutor(RACERS) as pool:
        outcomes = Counter(pool.map(race, range(RACERS)))
    served = Counter(d.logged_anywhere(f"race-{n}")[0].name for n in range(RACERS))
    figure = (
        f"{RACERS} racers: {outcomes[0]} isCanceled true, {outcomes[507]} x 507; "
        f"backend a served {served['a']}, b {served['b']}"
    )
    if outcomes != Counter({0: 1, 507: RACERS - 1}):
        raise CheckFailed(figure + f" (all outcomes: {dict(outcomes)})")
    if not served["a"] or not served["b"]:
        raise CheckFailed(figure + ": nginx did not balance over both backends")
    return figure


def check_request_id(d: Deployment) -> str:
    """nginx passes a client's X-Request-ID on, and makes one when there is none; the backend logs it."""
    with d.edge() as http:
        given = cancel(http, d.api_code, BY_NUMBER, "json", "DC-NOBODY", **{"X-Request-ID": "dc-given-id"})
        made = cancel(http, d.api_code, BY_NUMBER, "json", "DC-NOBODY")
    made_id = made.headers.get("x-request-id", "")
    if given.headers.get("x-request-id") != "dc-given-id" or not re.fullmatch(r"[0-9a-f]{32}", made_id):
        raise CheckFailed(f"echoed {given.headers.get('x-request-id')!r} and {made_id!r}")
    backend, _ = d.logged_anywhere(made_id)
    d.logged_anywhere("dc-given-id")
    return (
        f"the client's id kept end to end; without one, nginx's {made_id} "
        f"was echoed and logged by backend {backend.name}"
    )


def check_forwarded_for(d: Deployment) -> str:
    """The edge's X-Forwarded-For is believed by the backends; the same header sent to a backend directly is not."""
    spoof = {"X-Forwarded-For": "203.0.113.7"}
    # The client calls from 127.0.0.2 and 127.0.0.3, so its address differs from nginx's own (127.0.0.1).
    with d.edge(local_address="127.0.0.2") as http:
        cancel(http, d.api_code, BY_NUMBER, "json", "DC-NOBODY", **spoof, **{"X-Request-ID": "xff-edge"})
    direct = httpx.Client(
        transport=httpx.HTTPTransport(local_address="127.0.0.3"), base_url=d.backends[1].url, timeout=REQUEST_TIMEOUT
    )
    with direct:
        cancel(direct, d.api_code, BY_NUMBER, "json", "DC-NOBODY", **spoof, **{"X-Request-ID": "xff-direct"})
    _, through_edge = d.logged_anywhere("xff-edge")
    _, straight = d.logged_anywhere("xff-direct")
    figure = (
        f"through nginx from 127.0.0.2 (claiming 203.0.113.7) the log says {through_edge['client']}; "
        f"straight to a backend from 127.0.0.3 claiming 203.0.113.7 it says {straight['client']}"
    )
    if (through_edge["client"], straight["client"]) != ("127.0.0.2", "127.0.0.3"):
        raise CheckFailed(figure)
    return figure


def check_internal_paths(d: Deployment) -> str:
    """/metrics, /healthz and /openapi.json: 404 at the edge, answered by the backends."""
    with d.edge() as http:
        edge = {path: http.get(path).status_code for path in ("/metrics", "/healthz", "/openapi.json")}
    direct = {b.name: httpx.get(f"{b.url}/metrics", timeout=5) for b in d.backends}
    figure = f"edge {edge}; backends' /metrics { ({n: r.status_code for n, r in direct.items()}) }"
    if set(edge.values()) != {404} or any(
        r.status_code != 200 or "ordercancel_requests_total" not in r.text for r in direct.values()
    ):
        raise CheckFailed(figure)
    return figure


@dataclass
class LoadResult:
    answers: dict[str, int] = field(default_factory=dict)  # order number -> outcome of its last answer
    cut_off: list[str] = field(default_factory=list)  # order numbers whose request got no answer of ours
    after_kill: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


def load(d: Deployment, numbers: list[str], kill_after: int, result: LoadResult) -> None:
    todo: queue.Queue[str] = queue.Queue()
    for number in numbers:
        todo.put(number)
    killed = threading.Event()

    def client() -> None:
        with d.edge() as http:
            while True:
                try:
                    number = todo.get_nowait()
                except queue.Empty:
                    return
                try:
                    response = cancel(http, d.api_code, BY_NUMBER, "json", number)
                    answer = outcome(response) if response.status_code == 200 else None
                except (httpx.HTTPError, ValueError, KeyError):
                    answer = None
                with result.lock:
                    if answer is None:
                        result.cut_off.append(number)
                    else:
                        result.answers[number] = answer
                        result.after_kill += killed.is_set()
                    if len(result.answers) + len(result.cut_off) == kill_after and not killed.is_set():
                        d.processes.kill("backend-a")
                        killed.set()

    with ThreadPoolExecutor(LOAD_CLIENTS) as pool:
        for future in [pool.submit(client) for _ in range(LOAD_CLIENTS)]:
            future.result()


def check_sigkill(d: Deployment) -> str:
    """SIGKILL backend a under load: nginx moves to b, and no acknowledged cancellation is lost."""
    numbers = [d.orders[f"load-{n}"][0] for n in range(LOAD_ORDERS)]
    result = LoadResult()
    load(d, numbers, LOAD_ORDERS // 3, result)
    acknowledged = {number for number, answer in result.answers.items() if answer == 0}
    retried: Counter[int] = Counter()
    with d.edge() as http:
        for number in result.cut_off:  # as a client does: send it again
            retried[outcome(cancel(http, d.api_code, BY_NUMBER, "json", number))] += 1
    cancelled, audited = database_state(d.database_url, numbers)
    lost = acknowledged - cancelled
    figure = (
        f"{LOAD_ORDERS} orders, {LOAD_CLIENTS} clients, backend a SIGKILLed after {LOAD_ORDERS // 3} answers: "
        f"{len(acknowledged)} acknowledged, {len(result.cut_off)} cut off (retried: {retried[0]} cancelled, "
        f"{retried[507]} already cancelled by the cut-off attempt), {result.after_kill} answered after the kill "
        f"(by b); in the database {len(cancelled)} cancelled, {audited} cancellation audit rows; lost {len(lost)}"
    )
    every_answer_ok = set(result.answers.values()) <= {0} and set(retried) <= {0, 507}
    if lost or len(cancelled) != LOAD_ORDERS or audited != LOAD_ORDERS or not every_answer_ok:
        raise CheckFailed(figure + f" (answers {Counter(result.answers.values())}, retried {dict(retried)})")
    if d.processes.alive("backend-a") or result.after_kill < LOAD_ORDERS // 3:
        raise CheckFailed(figure + ": backend a still alive, or b did not take over")
    return figure


def database_state(database_url: str, numbers: list[str]) -> tuple[set[str], int]:
    """Return the orders among these that are Cancelled, and the number of their outcome-0 audit rows."""
    with psycopg.connect(database_url.replace("postgresql+psycopg://", "postgresql://")) as connection:
        cancelled = {
            row[0]
            for row in connection.execute(
                "SELECT order_number FROM orders WHERE status = 'Cancelled' AND order_number = ANY(%s)", (numbers,)
            )
        }
        audited = connection.execute(
            "SELECT count(*) FROM cancellation_attempts a JOIN orders o ON o.id = a.order_ref"
            " WHERE a.outcome = 0 AND o.order_number = ANY(%s)",
            (numbers,),
        ).fetchone()
    return cancelled, int(audited[0]) if audited else 0


def check_backend_down_seen(d: Deployment) -> str:
    """Prometheus sees the killed backend down (the OrderCancelBackendDown alert's input)."""
    killed = f"127.0.0.1:{d.backends[0].port}"
    state: dict[str, float] = {}

    def seen() -> bool:
        state.update({r["metric"]["instance"]: float(r["value"][1]) for r in d.prometheus('up{job="ordercancel"}')})
        return state.get(killed) == 0 and state.get(f"127.0.0.1:{d.backends[1].port}") == 1

    wait_for("up == 0 for the killed backend", seen, timeout=15)
    rules = httpx.get(f"http://127.0.0.1:{d.prometheus_port}/api/v1/rules", timeout=5).json()["data"]["groups"]
    loaded = sum(len(group["rules"]) for group in rules)
    return f"up {state}; {loaded} alert rules loaded from deploy/prometheus/ordercancel-rules.yml"


def check_listening(d: Deployment) -> str:
    """Every socket the started processes listen on is a loopback address."""
    sockets = listening_sockets(d.processes.groups())
    outside = [address for address in sockets if not ipaddress.ip_address(address[0]).is_loopback]
    figure = f"{len(sockets)} listening sockets: {sorted(set(sockets))}"
    if outside or not sockets:
        raise CheckFailed(figure)
    return figure


def group_members(groups: set[int]) -> list[Path]:
    """The /proc entries of every process in these process groups."""
    members = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if int((proc / "stat").read_text().rsplit(")", 1)[1].split()[2]) in groups:
                    members.append(proc)
            except (OSError, IndexError, ValueError):
                continue  # a process that ended while we looked
    return members


def listening_sockets(groups: set[int]) -> list[tuple[str, int]]:
    inodes: set[str] = set()
    for proc in group_members(groups):
        try:
            for fd in (proc / "fd").iterdir():
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
        except OSError:
            continue
    found = []
    for table, family in (("tcp", socket.AF_INET), ("tcp6", socket.AF_INET6)):
        for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
            columns = line.split()
            if columns[3] == "0A" and columns[9] in inodes:  # 0A: LISTEN
                address, port = columns[1].split(":")
                raw = bytes.fromhex(address)
                raw = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
                found.append((socket.inet_ntop(family, raw), int(port, 16)))
    return found


def check_promtool() -> str:
    rules = DEPLOY / "prometheus"
    checked = run("promtool", "check", "rules", "ordercancel-rules.yml", cwd=rules)
    tested = run("promtool", "test", "rules", "ordercancel-rules.test.yml", cwd=rules)
    found = re.search(r"SUCCESS: (\d+) rules found", checked)
    tests = (rules / "ordercancel-rules.test.yml").read_text().count("  - name:")
    if not found or "SUCCESS" not in tested:
        raise CheckFailed(checked + tested)
    return f"check rules: {found[1]} rules; test rules: {tests} test groups, SUCCESS"


def check_systemd(tmp: Path) -> str | None:
    """systemd-analyze verify both units, ExecStart pointed at this virtualenv's ordercancel; None if absent."""
    if shutil.which("systemd-analyze") is None:
        return None
    units = tmp / "systemd"
    units.mkdir()
    for unit in sorted((DEPLOY / "systemd").glob("*.service")):
        (units / unit.name).write_text(unit.read_text().replace("/opt/ordercancel/bin/ordercancel", ORDERCANCEL))
    names = sorted(str(path) for path in units.iterdir())
    output = run("systemd-analyze", "verify", *names).strip()
    if output:
        raise CheckFailed(f"systemd-analyze verify said: {output}")
    return f"systemd-analyze verify: {len(names)} units, no complaint"


# The run ----------------------------------------------------------------------------------


@dataclass
class Report:
    failures: int = 0

    def check(self, name: str, step: Callable[[], str | None]) -> None:
        try:
            figure = step()
        except CheckFailed as failure:
            self.failures += 1
            print(f"FAIL  {name}: {failure}", flush=True)
        except Exception as error:  # a check that broke is a failed check; the others still run
            self.failures += 1
            print(f"FAIL  {name}: {type(error).__name__}: {error}", flush=True)
        else:
            print(f"{'SKIP' if figure is None else 'PASS'}  {name}: {figure or 'not available here'}", flush=True)


@contextmanager
def scratch_database(postgres_url: str) -> Iterator[str]:
    """A database of the check's own on the PostgreSQL server, dropped afterwards."""
    name = f"{SCRATCH_PREFIX}{uuid.uuid4().hex[:8]}"
    with psycopg.connect(postgres_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield make_url(postgres_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(postgres_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def deploy(tmp: Path, database_url: str, processes: Processes, workers: int) -> Deployment:
    env = {
        **os.environ,
        "ORDERCANCEL_DATABASE_URL": database_url,
        "ORDERCANCEL_ENVIRONMENT": "production",
        "ORDERCANCEL_POOL_SIZE": "2",
        "ORDERCANCEL_TRUSTED_PROXIES": "127.0.0.1",  # nginx, which reaches the backends from 127.0.0.1
    }
    api_code, orders = seed(tmp, env)
    cert, key = make_certificate(tmp)
    backends = start_backends(tmp, env, processes, workers)
    edge_port, prometheus_port = free_port(), free_port()
    start_nginx(tmp, render_nginx(tmp, backends, edge_port, cert, key), edge_port, cert, processes)
    start_prometheus(tmp, backends, prometheus_port, processes)
    return Deployment(tmp, database_url, api_code, orders, backends, edge_port, prometheus_port, cert, processes)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--postgres-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--workers", type=int, default=2, help="per serve process (the issue's check: 2)")
    args = parser.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="ordercancel-deploy-check-"))
    tmp.chmod(0o755)  # nginx's workers (nobody) reach their temporary paths inside
    report, processes = Report(), Processes()
    try:
        with scratch_database(args.postgres_url) as database_url:
            try:
                d = deploy(tmp, database_url, processes, args.workers)
                ports = (
                    f"backends a :{d.backends[0].port}, b :{d.backends[1].port} (serve --workers {args.workers} each)"
                )
                print(
                    f"deployed on loopback: {ports}, nginx :{d.edge_port}, prometheus :{d.prometheus_port}", flush=True
                )
                report.check("nothing listens beyond loopback", lambda: check_listening(d))
                report.check("prometheus counts the requests sent", lambda: check_prometheus_count(d))
                report.check("contract smoke cases through nginx", lambda: check_smoke(d))
                report.check("50 racers on one order through nginx", lambda: check_race(d))
                report.check("X-Request-ID", lambda: check_request_id(d))
                report.check("X-Forwarded-For", lambda: check_forwarded_for(d))
                report.check("internal paths stay internal", lambda: check_internal_paths(d))
                report.check("one backend SIGKILLed under load", lambda: check_sigkill(d))
                report.check("prometheus sees the backend down", lambda: check_backend_down_seen(d))
            except Exception as failure:  # the deployment did not come up: stop what did, say why
                report.failures += 1
                print(f"FAIL  deployment: {type(failure).__name__}: {failure}", flush=True)
            finally:
                processes.stop_all()
        report.check("promtool", check_promtool)
        report.check("systemd units", lambda: check_systemd(tmp))
        report.check("everything started is stopped", lambda: stopped_figure(processes, args.postgres_url))
    finally:
        processes.stop_all()
        if report.failures:
            print(f"logs and configuration kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    print(
        f"deploy-check: {'FAILED, ' + str(report.failures) + ' check(s)' if report.failures else 'all checks passed'}"
    )
    return 1 if report.failures else 0


def stopped_figure(processes: Processes, postgres_url: str) -> str:
    # A worker whose supervisor was killed first is reparented and reaped a moment later: wait for it.
    deadline = time.monotonic() + 15
    while (left := group_members(processes.groups())) and time.monotonic() < deadline:
        time.sleep(0.1)
    with psycopg.connect(postgres_url) as admin:
        databases = admin.execute("SELECT datname FROM pg_database WHERE datname LIKE %s", (f"{SCRATCH_PREFIX}%",))
        scratch = [row[0] for row in databases]
    if left or scratch:
        raise CheckFailed(f"still running: {[proc.name for proc in left]}; scratch databases left: {scratch}")
    names = ", ".join(processes.running)
    return f"{len(processes.running)} process groups ({names}) have no process left; no scratch database left"


if __name__ == "__main__":
    sys.exit(main())
