"""The admin command line: `ordercancel serve | db | keys | orders | audit | webhooks | dispatch | demo | cancel`."""

from __future__ import annotations

import argparse
import asyncio
import logging.config
import os
import resource
import shlex
import signal
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any

import orjson
from sqlalchemy import Engine
from sqlalchemy.exc import OperationalError

from ordercancel import __version__, cancel_command
from ordercancel.cancel_command import URL_VARIABLES
from ordercancel.config import ConfigError, Settings
from ordercancel.domain import NO_WINDOW, CancellationReason, Order, PaymentStatus, ProductionStatus
from ordercancel.events import EventType, InvalidSubscription
from ordercancel.http.observability import logging_config, share_metrics_between_workers
from ordercancel.http.protocol import BoundedHttpToolsProtocol
from ordercancel.storage import database, outbox, service

Command = Callable[[argparse.Namespace, Settings], int]


class CliError(Exception):
    """A one-line reason to stop with a non-zero exit."""


def _print_json(value: object) -> None:
    sys.stdout.write(orjson.dumps(value).decode() + "\n")


def _engine(settings: Settings, *, must_exist: bool = True) -> Engine:
    path = settings.sqlite_path()
    if must_exist and path is not None and not path.exists():
        # The advice names the database, so that following it from anywhere creates this one.
        raise CliError(
            f"no database at {path}: run 'ordercancel db upgrade --database-url {settings.database_url}' first"
            " (or set ORDERCANCEL_DATABASE_URL to the database you meant)"
        )
    engine = database.create_sync_engine(settings)
    _opened.append(engine)
    if must_exist:
        database.ensure_current(engine)
    return engine


#: Engines a command opened; main closes them, so calling main in-process leaks no connections.
_opened: list[Engine] = []


def cmd_db_upgrade(args: argparse.Namespace, settings: Settings) -> int:
    database.upgrade(_engine(settings, must_exist=False))
    print(f"database at head: {settings.database_url}")
    return 0


def cmd_db_prune(args: argparse.Namespace, settings: Settings) -> int:
    removed = service.prune_idempotency_keys(_engine(settings))
    print(f"forgot {removed} expired idempotency key{'' if removed == 1 else 's'}")
    return 0


def cmd_keys_create(args: argparse.Namespace, settings: Settings) -> int:
    code = service.create_key(_engine(settings), settings.environment, args.name or "")
    if args.json:
        _print_json({"apiCode": code, "name": args.name or "", "environment": settings.environment.value})
    else:
        print(code)
    return 0


def cmd_keys_revoke(args: argparse.Namespace, settings: Settings) -> int:
    service.revoke_key(_engine(settings), settings.environment, args.api_code)
    print("revoked")
    return 0


def cmd_keys_update(args: argparse.Namespace, settings: Settings) -> int:
    if args.rate_limit is None and args.cancellation_window is None:
        raise CliError("nothing to update: give --rate-limit or --cancellation-window")
    engine = _engine(settings)
    if args.rate_limit is not None:
        stored = service.set_rate_limit(engine, settings.environment, args.api_code, args.rate_limit)
        print(f"rate limit: {stored or 'the default (ORDERCANCEL_RATE_LIMIT)'}")
    if args.cancellation_window is not None:
        window = service.set_cancellation_window(engine, settings.environment, args.api_code, args.cancellation_window)
        print(f"cancellation window: {_window_shown(window)}")
    return 0


def _window_shown(seconds: int | None) -> str:
    if seconds is None:
        return "the default (ORDERCANCEL_CANCELLATION_WINDOW)"
    return "none" if seconds == NO_WINDOW else f"{seconds} s"


JSON_HELP = "print JSON instead of text"
#: The header rows of the list commands' tab-separated output.
KEYS_HEADER = ("id", "name", "created", "state")
AUDIT_HEADER = ("time", "key", "order", "outcome", "request id")


def cmd_keys_list(args: argparse.Namespace, settings: Settings) -> int:
    keys = service.list_keys(_engine(settings), settings.environment)
    rows = [
        {
            "id": key.id,
            "name": key.name,
            "createdAt": key.created_at.isoformat(),
            "revokedAt": key.revoked_at.isoformat() if key.revoked_at else None,
            "rateLimit": key.rate_limit,
            "cancellationWindow": key.cancellation_window,
        }
        for key in keys
    ]
    if args.json:
        _print_json({"keys": rows})
    else:
        print("\t".join(KEYS_HEADER))
        for row in rows:
            state = f"revoked {row['revokedAt']}" if row["revokedAt"] else "active"
            print(f"{row['id']}\t{row['name'] or '-'}\t{row['createdAt']}\t{state}")
    return 0


def _show(order: Order, as_json: bool) -> None:
    fields = service.order_fields(order)
    if as_json:
        _print_json(fields)
    else:
        for name, value in fields.items():
            print(f"{name}: {'-' if value is None else value}")


def cmd_orders_create(args: argparse.Namespace, settings: Settings) -> int:
    order = service.create_order(
        _engine(settings),
        settings.environment,
        args.api_code,
        status=args.status,
        payment_status=args.payment_status,
        engineer=args.engineer,
        number=args.number,
        order_id=args.order_id,
        placed_at=args.placed_at,
    )
    if args.json:
        _print_json(service.order_fields(order))
    else:
        print(f"{order.order_number} {order.order_id}")
    return 0


def cmd_orders_show(args: argparse.Namespace, settings: Settings) -> int:
    _show(service.find_order(_engine(settings), args.order), args.json)
    return 0


def cmd_orders_set_status(args: argparse.Namespace, settings: Settings) -> int:
    operator = args.operator or os.environ.get("USER") or service.DEFAULT_OPERATOR
    order = service.set_status(
        _engine(settings), args.order, args.status, operator=operator, reason=args.reason, note=args.note
    )
    _show(order, args.json)
    return 0


def cmd_orders_set_payment(args: argparse.Namespace, settings: Settings) -> int:
    _show(service.set_payment(_engine(settings), args.order, args.payment_status), args.json)
    return 0


def cmd_orders_claim(args: argparse.Namespace, settings: Settings) -> int:
    _show(service.claim(_engine(settings), args.order, args.engineer), args.json)
    return 0


def cmd_orders_release(args: argparse.Namespace, settings: Settings) -> int:
    _show(service.release(_engine(settings), args.order), args.json)
    return 0


def cmd_audit_list(args: argparse.Namespace, settings: Settings) -> int:
    entries = service.list_attempts(
        _engine(settings), settings.environment, api_code=args.api_code, order=args.order, limit=args.limit
    )
    if args.json:
        _print_json({"attempts": [service.audit_fields(entry) for entry in entries]})
    else:
        print("\t".join(AUDIT_HEADER))
        for entry in entries:
            outcome = "cancelled" if entry.outcome == 0 else str(entry.outcome)
            outcome += " (replayed)" if entry.replayed else ""
            key = f"key {entry.key_id} {entry.key_name or '-'}" if entry.key_id else f"operator {entry.operator}"
            print(f"{entry.at.isoformat()}\t{key}\t{entry.order_number or '-'}\t{outcome}\t{entry.request_id}")
    return 0


# Webhooks ---------------------------------------------------------------------------------------

WEBHOOKS_HEADER = ("id", "url", "events", "owner", "state")
DELIVERIES_HEADER = ("delivery", "event", "type", "order", "endpoint", "state", "attempts")


def _registrable(settings: Settings, url: str) -> str:
    from ordercancel.delivery import registrable_url

    try:
        return asyncio.run(registrable_url(url, settings))
    except InvalidSubscription as error:
        raise CliError(str(error)) from None


def _event_list(text: str | None) -> list[str] | None:
    return None if text is None else [part for part in text.split(",") if part.strip()]


def _print_secret(endpoint: outbox.Endpoint, secret: str, as_json: bool) -> None:
    if as_json:
        _print_json({"id": endpoint.endpoint_id, "url": endpoint.url, "events": endpoint.events, "secret": secret})
        return
    print(f"id: {endpoint.endpoint_id}\nurl: {endpoint.url}\nevents: {', '.join(endpoint.events)}")
    print(f"secret: {secret}\n(shown this once: verify each delivery's webhook-signature with it)")


def cmd_webhooks_add(args: argparse.Namespace, settings: Settings) -> int:
    engine = _engine(settings)
    url = _registrable(settings, args.url)
    endpoint, secret = outbox.add_endpoint_for_code(
        engine, settings.environment, url, api_code=args.api_code, types=_event_list(args.events)
    )
    _print_secret(endpoint, secret, args.json)
    return 0


def cmd_webhooks_list(args: argparse.Namespace, settings: Settings) -> int:
    endpoints = outbox.list_endpoints(_engine(settings), operator=True)
    if args.json:
        _print_json({"webhooks": [endpoint.fields() for endpoint in endpoints]})
        return 0
    print("\t".join(WEBHOOKS_HEADER))
    for e in endpoints:
        owner = "all keys" if e.api_key_id is None else f"key {e.api_key_id}"
        state = "active" if e.disabled_at is None else f"disabled {e.disabled_at.isoformat()} ({e.disabled_reason})"
        print(f"{e.endpoint_id}\t{e.url}\t{','.join(e.events)}\t{owner}\t{state}")
    return 0


def cmd_webhooks_remove(args: argparse.Namespace, settings: Settings) -> int:
    outbox.remove_endpoint(_engine(settings), args.id, operator=True)
    print("removed")
    return 0


def cmd_webhooks_rotate_secret(args: argparse.Namespace, settings: Settings) -> int:
    endpoint, secret = outbox.rotate_secret(_engine(settings), args.id)
    _print_secret(endpoint, secret, args.json)
    if not args.json and endpoint.previous_secret_until is not None:
        print(f"the old secret signs too until {endpoint.previous_secret_until.isoformat()}")
    return 0


def cmd_webhooks_deliveries(args: argparse.Namespace, settings: Settings) -> int:
    deliveries = outbox.list_deliveries(_engine(settings), endpoint_id=args.endpoint, limit=args.limit)
    if args.json:
        _print_json({"deliveries": [delivery.fields() for delivery in deliveries]})
        return 0
    print("\t".join(DELIVERIES_HEADER))
    for d in deliveries:
        print(f"{d.id}\t{d.event_id}\t{d.event_type}\t{d.order_number}\t{d.endpoint_id}\t{d.state}\t{len(d.attempts)}")
        for a in d.attempts:
            answer = f"HTTP {a.status}" if a.status is not None else "no answer"
            print(f"\t{a.at.isoformat()}\t{answer}\t{a.latency_ms} ms\t{a.error or ''}".rstrip())
    return 0


def cmd_webhooks_replay(args: argparse.Namespace, settings: Settings) -> int:
    made = outbox.replay(_engine(settings), args.event_id, endpoint_id=args.endpoint)
    print(f"replayed to {made} endpoint{'' if made == 1 else 's'}")
    return 0


def cmd_dispatch(args: argparse.Namespace, settings: Settings) -> int:
    from ordercancel.delivery import Dispatcher

    engine = _engine(settings)
    logging.config.dictConfig(logging_config(args.log_level.upper()))

    async def run() -> None:
        dispatcher = Dispatcher.from_settings(settings, engine)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        await dispatcher.start()
        print(f"ordercancel dispatcher on {settings.database_url}", flush=True)
        await stop.wait()
        await dispatcher.stop()

    asyncio.run(run())
    return 0


def _webhook_commands(webhooks: Any, command: Callable[..., argparse.ArgumentParser]) -> None:
    add = command(webhooks, "add", cmd_webhooks_add, "register an endpoint that is sent order events, signed")
    add.add_argument("url", metavar="URL", help="where events are POSTed (https in production)")
    owner = add.add_mutually_exclusive_group(required=True)
    owner.add_argument("--api-code", help="the API code whose orders' events it receives")
    owner.add_argument("--all-keys", action="store_true", help="an operator's endpoint: every order's events")
    add.add_argument(
        "--events", metavar="T,...", help=f"the event types it wants (default all): {', '.join(EventType)}"
    )
    add.add_argument("--json", action="store_true", help=JSON_HELP)
    listed = command(webhooks, "list", cmd_webhooks_list, "list every endpoint (secrets are never shown)")
    listed.add_argument("--json", action="store_true", help=JSON_HELP)
    remove = command(webhooks, "remove", cmd_webhooks_remove, "remove an endpoint: nothing more is sent to it")
    remove.add_argument("id", metavar="ID", help="the endpoint's id (ep_...)")
    rotate = command(
        webhooks,
        "rotate-secret",
        cmd_webhooks_rotate_secret,
        "give an endpoint a new secret; the old one signs 24 h more",
    )
    rotate.add_argument("id", metavar="ID", help="the endpoint's id (ep_...)")
    rotate.add_argument("--json", action="store_true", help=JSON_HELP)
    deliveries = command(webhooks, "deliveries", cmd_webhooks_deliveries, "list deliveries with every attempt")
    deliveries.add_argument("--endpoint", metavar="ID", help="only this endpoint's")
    deliveries.add_argument("--limit", type=_positive, default=100, help="the newest N (default %(default)s)")
    deliveries.add_argument("--json", action="store_true", help=JSON_HELP)
    replay = command(webhooks, "replay", cmd_webhooks_replay, "send an event again, with its own webhook-id")
    replay.add_argument("event_id", metavar="EVENT_ID", help="the event's id (evt_..., the webhook-id header)")
    replay.add_argument("--endpoint", metavar="ID", help="to this endpoint only (default: every one it went to)")


def cmd_orders_import(args: argparse.Namespace, settings: Settings) -> int:
    from ordercancel.storage import importer

    path = Path(args.file)
    if not path.is_file():
        raise CliError(f"no file {path}")
    engine = _engine(settings)
    with ImportProgress(sys.stderr) as progress:
        report = importer.import_orders(
            engine, settings.environment, args.api_code, path, progress=progress if sys.stderr.isatty() else None
        )
    print(f"imported {report.imported} orders in {report.seconds:.1f} s")
    return 0


class ImportProgress:
    """Rows done, rows per second and time left (from the share of the file read), drawn by rich."""

    def __init__(self, stream: IO[str], *, clock: Callable[[], float] = time.monotonic) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TaskID, TaskProgressColumn, TextColumn, TimeRemainingColumn

        self._clock = clock
        self._started = clock()
        self._progress = Progress(
            BarColumn(),
            TaskProgressColumn(),
            TextColumn("{task.fields[rows]:,} rows"),
            TextColumn("{task.fields[rate]:,.0f} rows/s"),
            TimeRemainingColumn(),
            TextColumn("left"),
            console=Console(file=stream),
        )
        self._task: TaskID | None = None

    def __call__(self, done: int, total: int, rows: int) -> None:
        if self._task is None:
            self._progress.start()
            self._task = self._progress.add_task("import", total=total, rows=0, rate=0.0)
        elapsed = self._clock() - self._started
        self._progress.update(self._task, completed=done, rows=rows, rate=rows / elapsed if elapsed > 0 else 0.0)

    def __enter__(self) -> ImportProgress:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._task is not None:
            self._progress.stop()  # leaves the last line on the screen, and the cursor below it


#: One order for each outcome of the demo: (label, status, payment status, engineer).
DEMO_ORDERS = [
    ("cancellable (isCanceled: true)", "Ordered", "PaymentOK", None),
    ("cancellable, in Processing", "Processing", "PaymentOK", None),
    ("already cancelled (507)", "Cancelled", "PaymentOK", None),
    ("not placed correctly (506)", "Draft", "PaymentPending", None),
    ("production started (508)", "InProduction", "PaymentOK", None),
    ("claimed by an engineer (509)", "Processing", "PaymentOK", "Ada"),
]


def demo_exports(settings: Settings, code: str, base: str) -> list[tuple[str, str]]:
    """The variables the documentation's examples read, as `make run` prints them."""
    bin_dir = Path(os.path.abspath(sys.executable)).parent  # the virtualenv's bin, where `ordercancel` is
    return [
        ("PATH", f"{bin_dir}:$PATH"),
        ("ORDERCANCEL_DATABASE_URL", settings.database_url),
        ("ORDERCANCEL_ENVIRONMENT", settings.environment.value),
        ("ORDERCANCEL_API_CODE", code),
        (URL_VARIABLES[settings.environment.value], base),
    ]


def _export_line(name: str, value: str) -> str:
    # PATH keeps $PATH for the shell to expand; every other value is quoted to be taken as it is.
    quoted = f'"{value}"' if name == "PATH" else shlex.quote(value)
    return f"export {name}={quoted}"


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    engine = _engine(settings)
    code = service.create_key(engine, settings.environment, "demo")
    base = f"http://{args.host}:{args.port}"
    print(f"Demo API code ({settings.environment.value}): {code}\n")
    print("Orders, one for each outcome:")
    first = None
    for label, status, payment, engineer in DEMO_ORDERS:
        order = service.create_order(
            engine, settings.environment, code, status=status, payment_status=payment, engineer=engineer
        )
        first = first or order
        print(f"  {order.order_number}  {order.order_id}  {label}")
    print("  IMC999999  (no such order: 505)\n")
    assert first is not None
    exports = [_export_line(name, value) for name, value in demo_exports(settings, code, base)]
    if args.env_file:
        env_file = Path(args.env_file).absolute()
        env_file.parent.mkdir(parents=True, exist_ok=True)
        env_file.write_text("\n".join([*exports, _export_line("ORDERCANCEL_DEMO_API_CODE", code)]) + "\n")
    print("In another terminal, set what the examples of docs/integrating.md use:")
    for line in exports:
        print(f"  {line}")
    if args.env_file:
        print(f"  (or: . {env_file})")
    print()
    print("Cancel by number, JSON in and out:")
    print(
        f"  curl -s -X POST {base}/web-api/order/CancelOrderByNumber -H 'apiCode: {code}' "
        f"-H 'Content-Type: application/json' -H 'Accept: application/json' "
        f'-d \'{{"orderNumber": "{first.order_number}"}}\'\n'
    )
    print("Cancel by number, XML in and out (try it after the JSON one: 507):")
    print(
        f"  curl -s -X POST {base}/web-api/order/CancelOrderByNumber -H 'apiCode: {code}' "
        f"-H 'Content-Type: text/xml' -H 'Accept: text/xml' "
        f"-d '<CancelOrderByNumberRequest><orderNumber>{first.order_number}</orderNumber>"
        "</CancelOrderByNumberRequest>'\n"
    )
    print(f"Or in a browser: {base}/ (the demo pages; the demo code is offered there)\n")
    print(
        "`make run` serves next, in this terminal, until Ctrl-C; the service is ready at the line\n"
        f"  ordercancel ({settings.environment.value}) on {base}"
    )
    return 0


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    import uvicorn

    _engine(settings)  # refuse to start on a missing or outdated database, with one line
    # Worker processes build their own app from the environment: hand the settings down.
    os.environ["ORDERCANCEL_DATABASE_URL"] = settings.database_url
    os.environ["ORDERCANCEL_ENVIRONMENT"] = settings.environment.value
    os.environ["ORDERCANCEL_POOL_SIZE"] = str(settings.pool_size)
    os.environ["ORDERCANCEL_ADMIN_TOKEN"] = settings.admin_token
    if bool(args.ssl_certfile) != bool(args.ssl_keyfile):
        raise CliError("--ssl-certfile and --ssl-keyfile go together")
    for path in (args.ssl_certfile, args.ssl_keyfile):
        if path and not os.path.isfile(path):
            raise CliError(f"no such file: {path}")
    scheme = "https" if args.ssl_certfile else "http"
    connections = connection_cap(settings)
    print(f"ordercancel ({settings.environment.value}) on {scheme}://{args.host}:{args.port}", flush=True)
    if args.workers > 1:  # so that /metrics on any worker sums them all
        share_metrics_between_workers()
    uvicorn.run(
        "ordercancel.http.app:create_app_from_env",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        access_log=False,
        server_header=False,
        log_level="warning",
        log_config=logging_config(args.log_level.upper()),
        http=BoundedHttpToolsProtocol,  # uvicorn's own, with bounded heads, pipelines and connections
        limit_concurrency=connections,  # open connections per process: BoundedHttpToolsProtocol enforces it
        backlog=min(2048, connections),  # a connection the kernel holds longer than that would time out anyway
        ws="none",  # no WebSocket: an upgrade is refused like every other request we cannot serve
        # Not "auto", which falls back to asyncio's loop without a word: that loop leaves Nagle on
        # for uvicorn's sockets and so adds the client's delayed ACK (40 ms) to every response.
        loop="uvloop",
        ssl_certfile=args.ssl_certfile,
        ssl_keyfile=args.ssl_keyfile,
        # X-Forwarded-For is believed only from the configured proxies, and from nobody by default.
        proxy_headers=bool(settings.trusted_proxies),
        forwarded_allow_ips=list(settings.trusted_proxies),
    )
    return 0


#: File descriptors kept for what is not a client connection: the listening socket, the database, logs.
RESERVED_DESCRIPTORS = 64


def connection_cap(settings: Settings) -> int:
    """Raise the soft file-descriptor limit as far as the hard one allows; return the connections it leaves room for.

    A process out of descriptors cannot even accept a connection to refuse it: the kernel
    then resets new clients while idle ones hold every descriptor.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = settings.max_connections + RESERVED_DESCRIPTORS + settings.pool_size
    if soft != resource.RLIM_INFINITY and (hard == resource.RLIM_INFINITY or soft < hard) and soft < wanted:
        soft = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    room = soft - RESERVED_DESCRIPTORS - settings.pool_size if soft != resource.RLIM_INFINITY else wanted
    if room < settings.max_connections:
        print(
            f"ordercancel: the file-descriptor limit ({soft}) leaves room for {max(room, 1)} connections,"
            f" not ORDERCANCEL_MAX_CONNECTIONS={settings.max_connections}",
            file=sys.stderr,
            flush=True,
        )
    return max(1, min(room, settings.max_connections))


_LIFECYCLE_COMMANDS: list[tuple[str, Command, str, Callable[[argparse.ArgumentParser], object]]] = [
    (
        "set-status",
        cmd_orders_set_status,
        "move an order to another production status",
        lambda sub: (
            sub.add_argument("status", metavar="STATUS", help=", ".join(ProductionStatus)),
            sub.add_argument(
                "--operator",
                metavar="NAME",
                help="who cancels, for the cancellation record (default: $USER, else 'operator')",
            ),
            sub.add_argument("--reason", choices=list(CancellationReason), help="why it is cancelled (Cancelled only)"),
            sub.add_argument("--note", help="a note kept with the cancellation (Cancelled only)"),
        ),
    ),
    (
        "set-payment",
        cmd_orders_set_payment,
        "record the outcome of a pending payment",
        lambda sub: sub.add_argument("payment_status", metavar="STATUS", help=", ".join(PaymentStatus)),
    ),
    (
        "claim",
        cmd_orders_claim,
        "an engineer starts processing an order: it can no longer be cancelled",
        lambda sub: sub.add_argument("--engineer", required=True, metavar="NAME", help="who processes the order"),
    ),
    ("release", cmd_orders_release, "end an engineer's claim on an order", lambda sub: None),
]


def _positive(text: str) -> int:
    number = int(text)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {number}")
    return number


def _serve_arguments(serve: argparse.ArgumentParser) -> None:
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8080, help="port to listen on (default 8080)")
    serve.add_argument("--workers", type=int, default=1, help="processes sharing the port")
    serve.add_argument(
        "--pool-size",
        default=argparse.SUPPRESS,
        help="PostgreSQL connections per process; overrides ORDERCANCEL_POOL_SIZE",
    )
    serve.add_argument(
        "--admin-token",
        default=argparse.SUPPRESS,
        help="enables the admin HTTP API; overrides ORDERCANCEL_ADMIN_TOKEN (prefer the variable: argv is visible)",
    )
    serve.add_argument("--ssl-certfile", help="serve HTTPS with this PEM certificate (chain)")
    serve.add_argument("--ssl-keyfile", help="the certificate's PEM private key")
    serve.add_argument(
        "--log-level",
        default="info",
        choices=["debug", "info", "warning", "error"],
        help="the JSON log on stderr; warning turns the access log off (default info)",
    )


def _order_commands(orders: Any, command: Callable[..., argparse.ArgumentParser]) -> None:
    create_order = command(orders, "create", cmd_orders_create, "create an order for an API code")
    create_order.add_argument("--api-code", required=True, help="the API code the order belongs to")
    create_order.add_argument(
        "--status",
        default=ProductionStatus.ORDERED.value,
        help=f"production status, one of {', '.join(ProductionStatus)} (default %(default)s)",
    )
    create_order.add_argument(
        "--payment-status",
        default=PaymentStatus.OK.value,
        help=f"one of {', '.join(PaymentStatus)} (default %(default)s)",
    )
    create_order.add_argument(
        "--engineer", metavar="NAME", help="an engineer processing it (Ordered or Processing only): cancelling gets 509"
    )
    create_order.add_argument("--number", help="default: the next free IMCnnnnnn")
    create_order.add_argument("--order-id", help="default: a new GUID")
    create_order.add_argument(
        "--placed-at",
        metavar="RFC3339",
        help="when it was placed, such as 2024-05-01T09:30:00Z (default: now); the cancellation window runs from here",
    )
    create_order.add_argument("--json", action="store_true", help=JSON_HELP)
    import_orders = command(orders, "import", cmd_orders_import, "import orders from JSON Lines or CSV, all or none")
    import_orders.add_argument("file", metavar="FILE", help="*.csv: CSV; *.jsonl or starting with {: JSON Lines")
    import_orders.add_argument("--api-code", required=True, help="the API code the orders belong to")
    show = command(orders, "show", cmd_orders_show, "show an order by number or ID")
    show.add_argument("order", metavar="NUMBER_OR_ID", help="an order number or order ID")
    show.add_argument("--json", action="store_true", help=JSON_HELP)
    for name, handler, help_text, extra in _LIFECYCLE_COMMANDS:
        sub = command(orders, name, handler, help_text)
        sub.add_argument("order", metavar="NUMBER_OR_ID", help="an order number or order ID")
        extra(sub)
        sub.add_argument("--json", action="store_true", help=JSON_HELP)


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--database-url",
        default=argparse.SUPPRESS,
        help="sqlite:///FILE or postgresql://...; overrides ORDERCANCEL_DATABASE_URL "
        "(default: sqlite in $XDG_DATA_HOME/ordercancel, else ~/.local/share/ordercancel)",
    )
    common.add_argument(
        "--environment", default=argparse.SUPPRESS, help="sandbox or production; overrides ORDERCANCEL_ENVIRONMENT"
    )
    parser = argparse.ArgumentParser(prog="ordercancel", description=__doc__, parents=[common])
    parser.add_argument("--version", action="version", version=f"ordercancel {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(group: Any, name: str, handler: Command, help_text: str) -> argparse.ArgumentParser:
        sub: argparse.ArgumentParser = group.add_parser(name, parents=[common], help=help_text)
        sub.set_defaults(handler=handler)
        return sub

    _serve_arguments(command(commands, "serve", cmd_serve, "run the HTTP service"))

    db = commands.add_parser("db", help="database schema", parents=[common]).add_subparsers(
        dest="db_command", required=True
    )
    command(db, "upgrade", cmd_db_upgrade, "create the database or migrate it to this version")
    command(db, "prune", cmd_db_prune, "forget expired Idempotency-Keys (the service also does, in the background)")

    keys = commands.add_parser("keys", help="API codes", parents=[common]).add_subparsers(
        dest="keys_command", required=True
    )
    create_key = command(keys, "create", cmd_keys_create, "issue an API code (shown once)")
    create_key.add_argument("--name", default="", help="whose code it is, shown by keys list (say, the shop)")
    create_key.add_argument("--json", action="store_true", help=JSON_HELP)
    revoke = command(keys, "revoke", cmd_keys_revoke, "revoke an API code")
    revoke.add_argument("api_code", metavar="API_CODE", help="the code to revoke: it is refused (401) at once")
    update_key = command(keys, "update", cmd_keys_update, "change an API code's own limits")
    update_key.add_argument("api_code", metavar="API_CODE", help="the code to change")
    update_key.add_argument(
        "--rate-limit",
        metavar="RATE",
        help="requests allowed to this code, such as 500/second; 'none' for no limit, "
        "'default' to follow ORDERCANCEL_RATE_LIMIT",
    )
    update_key.add_argument(
        "--cancellation-window",
        metavar="DURATION",
        help="how long after an order was placed this code may cancel it, such as 30m or 2h; "
        "'none' for no window, 'default' to follow ORDERCANCEL_CANCELLATION_WINDOW",
    )
    list_keys = command(keys, "list", cmd_keys_list, "list API codes (their hashes are never shown)")
    list_keys.add_argument("--json", action="store_true", help=JSON_HELP)

    orders = commands.add_parser("orders", help="orders", parents=[common]).add_subparsers(
        dest="orders_command", required=True
    )
    _order_commands(orders, command)

    audit = commands.add_parser("audit", help="the cancellation record", parents=[common]).add_subparsers(
        dest="audit_command", required=True
    )
    audit_list = command(audit, "list", cmd_audit_list, "list cancellation attempts, oldest first")
    which = audit_list.add_mutually_exclusive_group()
    which.add_argument("--api-code", help="only this API code's attempts (revoked codes too)")
    which.add_argument("--order", metavar="NUMBER_OR_ID", help="only the attempts that found this order")
    audit_list.add_argument("--limit", type=_positive, help="only the newest N")
    audit_list.add_argument("--json", action="store_true", help=JSON_HELP)

    webhooks = commands.add_parser("webhooks", help="webhook endpoints and deliveries", parents=[common])
    _webhook_commands(webhooks.add_subparsers(dest="webhooks_command", required=True), command)
    dispatch = command(commands, "dispatch", cmd_dispatch, "run a webhook dispatcher alone (serve runs one too)")
    dispatch.add_argument(
        "--log-level", default="info", choices=["debug", "info", "warning", "error"], help="the JSON log on stderr"
    )

    demo = command(commands, "demo", cmd_demo, "seed a demo API code with one order per outcome")
    demo.add_argument("--host", default="127.0.0.1", help="the host the printed examples use (default 127.0.0.1)")
    demo.add_argument("--port", type=int, default=8080, help="the port the printed examples use (default 8080)")
    demo.add_argument(
        "--env-file",
        metavar="FILE",
        help="also write the export lines to FILE, to be sourced (make run: var/demo.env)",
    )

    cancel_command.register(commands, common)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = Settings.from_env()
        names = ("database_url", "environment", "pool_size", "admin_token")
        overrides = {k: getattr(args, k) for k in names if hasattr(args, k)}
        settings = settings.with_values(**overrides)
        handler: Command = args.handler
        return handler(args, settings)
    except (CliError, ConfigError, service.AdminError, database.DatabaseNotReady) as error:
        print(f"ordercancel: {error}", file=sys.stderr)
        return 1
    except OperationalError as error:
        print(f"ordercancel: the database did not answer: {error.orig}", file=sys.stderr)
        return 1
    finally:
        while _opened:
            _opened.pop().dispose()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
