"""`ordercancel cancel NUMBER`: cancel one order through the API, with the client library.

Exit status:
  0  cancelled
  3  refused: the server answered with a refusal (401, 501-509); the code and message are printed
  4  no answer: the connection failed on every attempt
  5  the server failed (500 after retries) or answered something that is not this API
  (2 is a usage error, as for every command.)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Mapping
from typing import Any

import httpx

from ordercancel.client import (
    PRODUCTION_URL_VARIABLE,
    REASONS,
    SANDBOX_URL_VARIABLE,
    ApiError,
    Cancellation,
    Client,
    ServerError,
    TransportError,
    UnexpectedResponse,
)

EXIT_CANCELLED = 0
EXIT_USAGE = 2
EXIT_REFUSED = 3
EXIT_NO_ANSWER = 4
EXIT_SERVER_FAILED = 5
#: Read when --api-code is not given, so that the code need not appear in a process listing.
API_CODE_VARIABLE = "ORDERCANCEL_API_CODE"


#: The base URL of each environment, read when --url is not given (the client library's variables).
URL_VARIABLES = {"sandbox": SANDBOX_URL_VARIABLE, "production": PRODUCTION_URL_VARIABLE}


def register(commands: Any, common: argparse.ArgumentParser) -> None:
    """Add the `cancel` command to the CLI's subcommands, with the options every command takes."""
    cancel = commands.add_parser(
        "cancel",
        help="cancel an order through the API (the client)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[common],
    )
    cancel.set_defaults(handler=lambda args, settings: run(args, settings.environment.value))
    cancel.add_argument("order", metavar="NUMBER", help="the order number (with --by-id: the order ID)")
    cancel.add_argument("--api-code", default=os.environ.get(API_CODE_VARIABLE), help=f"default: ${API_CODE_VARIABLE}")
    cancel.add_argument(
        "--url",
        help=f"base URL of the service, such as http://127.0.0.1:8080 (default: ${SANDBOX_URL_VARIABLE}, "
        f"or ${PRODUCTION_URL_VARIABLE} with --environment production)",
    )
    cancel.add_argument("--format", choices=["json", "xml"], default="json", help="request and response format")
    cancel.add_argument("--by-id", action="store_true", help="NUMBER is an order ID (a GUID)")
    cancel.add_argument("--json", action="store_true", help="print the decoded response as JSON")
    cancel.add_argument("--timeout", type=float, default=10.0, help="seconds per attempt (default 10)")
    cancel.add_argument("--retries", type=int, default=2, help="retries on connection failure or 500 (default 2)")
    cancel.add_argument("--reason", choices=REASONS, help="why the order is cancelled (kept with the order)")
    cancel.add_argument("--note", help="a note kept with the order (at most 500 printable characters)")
    cancel.add_argument(
        "--idempotency-key",
        metavar="KEY",
        help="sent as Idempotency-Key (default: a new UUID4, the same for every retry of this call)",
    )


def _print(fields: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(fields) + "\n")


def _cancelled(result: Cancellation, as_json: bool) -> int:
    if as_json:
        _print(result.fields)
    else:
        where = f" in the {result.environment}" if result.environment else ""
        again = " (the answer to an earlier request with this Idempotency-Key)" if result.replayed else ""
        print(f"cancelled: order {result.order_number} ({result.order_id}){where}{again}")
    return EXIT_CANCELLED


def _refused(error: ApiError, as_json: bool) -> int:
    failed = isinstance(error, ServerError | UnexpectedResponse)
    if as_json and error.fields:
        _print(error.fields)
    else:
        print(f"{'failed' if failed else 'not cancelled'}: {error.code} {error.message}")
    if error.hint:
        print(f"hint: {error.hint}", file=sys.stderr)
    if error.code == 507 and error.retried:
        print(
            f"note: after {error.attempts} attempts; an earlier attempt most likely cancelled the order",
            file=sys.stderr,
        )
    return EXIT_SERVER_FAILED if failed else EXIT_REFUSED


def base_url(given: str | None, environment: str, env: Mapping[str, str] | None = None) -> str:
    """Return --url, else the environment's configured base URL; raise LookupError naming both."""
    if given:
        return given
    variable = URL_VARIABLES[environment]
    url = (os.environ if env is None else env).get(variable, "").strip()
    if not url:
        raise LookupError(f"give --url or set {variable} (the {environment}'s base URL, such as http://127.0.0.1:8080)")
    return url


def _say_wait(seconds: float, reason: str) -> None:
    print(f"ordercancel cancel: {reason}; waiting {seconds:.1f} s before trying again", file=sys.stderr)


def run(args: argparse.Namespace, environment: str = "sandbox") -> int:
    if not args.api_code:
        print(f"ordercancel cancel: give --api-code or set {API_CODE_VARIABLE}", file=sys.stderr)
        return EXIT_USAGE
    try:
        url = base_url(args.url, environment)
    except LookupError as error:
        print(f"ordercancel cancel: {error.args[0]}", file=sys.stderr)
        return EXIT_USAGE
    try:
        client = Client(
            args.api_code,
            base_url=url,
            format=args.format,
            timeout=args.timeout,
            retries=args.retries,
            on_wait=_say_wait,
        )
    except (ValueError, httpx.InvalidURL) as error:
        print(f"ordercancel cancel: {error}", file=sys.stderr)
        return EXIT_USAGE
    with client:
        try:
            cancel = client.cancel_by_id if args.by_id else client.cancel_by_number
            result = cancel(args.order, reason=args.reason, note=args.note, idempotency_key=args.idempotency_key)
        except ApiError as error:
            return _refused(error, args.json)
        except TransportError as error:
            print(f"ordercancel cancel: {error.message}", file=sys.stderr)
            return EXIT_NO_ANSWER
    return _cancelled(result, args.json)
