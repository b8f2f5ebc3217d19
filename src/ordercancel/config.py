"""Configuration: one frozen object, read once from the environment and passed down."""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from functools import lru_cache
from pathlib import Path

import limits
from limits import RateLimitItem

from ordercancel.domain import MAX_WINDOW, parse_guid
from ordercancel.events import DEFAULT_SCHEDULE, DEFAULT_TIMEOUT

DEFAULT_SQLITE_BUSY_TIMEOUT = 10.0
#: The shortest admin token accepted: a shorter one could be guessed.
MIN_ADMIN_TOKEN = 32

#: Where the default database lives: the user's data directory (XDG), the same from every
#: directory, so that a command run elsewhere never finds (or makes) another, empty database.
DATA_DIRECTORY_NAME = "ordercancel"


def default_database_path(env: Mapping[str, str] | None = None) -> Path:
    """Return the default SQLite file: $XDG_DATA_HOME/ordercancel/ordercancel.db, absolute."""
    env = os.environ if env is None else env
    data_home = env.get("XDG_DATA_HOME", "").strip()
    # The XDG spec says a relative XDG_DATA_HOME is invalid and to be ignored.
    base = Path(data_home) if data_home and Path(data_home).is_absolute() else Path.home() / ".local" / "share"
    return base / DATA_DIRECTORY_NAME / "ordercancel.db"


def sqlite_url(path: Path) -> str:
    """Return the SQLAlchemy URL of a SQLite file, made absolute."""
    return f"sqlite:///{path.absolute()}"


def default_database_url() -> str:
    return sqlite_url(default_database_path())


class Environment(StrEnum):
    SANDBOX = "sandbox"
    PRODUCTION = "production"


class ConfigError(ValueError):
    """A setting has a value we cannot use; the message names it."""


@dataclass(frozen=True, slots=True)
class Settings:
    database_url: str = field(default_factory=default_database_url)
    #: The sandbox is the default so that a development instance is never taken for production.
    environment: Environment = Environment.SANDBOX
    #: Connections per process in the PostgreSQL pool.
    pool_size: int = 8
    #: Token for the admin HTTP API (at least 32 characters); the API is disabled while it is empty.
    admin_token: str = ""
    #: Largest request body read, in bytes (the contract's 64 KiB).
    max_body_bytes: int = 64 * 1024
    #: Seconds a client may take to send its whole request body.
    body_timeout: float = 10.0
    #: Requests one process serves at once; more are answered 503 at once.
    max_concurrency: int = 1024
    #: Seconds an API code found active is remembered before it is looked up again (0: never).
    #: Revocation still takes effect at once: every cancellation re-checks the key itself.
    key_cache_seconds: float = 5.0
    #: Seconds a SQLite write waits for the lock another writer holds (an import, a second
    #: process) before it fails; a cancellation waiting on it is answered 500 within this plus 1 s.
    sqlite_busy_timeout: float = DEFAULT_SQLITE_BUSY_TIMEOUT
    #: Addresses whose X-Forwarded-For header is believed.
    trusted_proxies: tuple[str, ...] = field(default=())
    #: Seconds an Idempotency-Key keeps its answer (the IETF draft's and Stripe's 24 hours).
    idempotency_ttl: float = 24 * 3600.0
    #: The sandbox demo's API code, offered by the demo pages (`make run` sets it; never shown in production).
    demo_api_code: str = ""
    #: Requests per API code, such as `100/second` (None: no limit); a key's own policy overrides it.
    rate_limit: str | None = None
    #: Where the rate limits count: None is this process's memory, else a `redis://HOST:PORT/DB` URL.
    rate_limit_storage: str | None = None
    #: 401s an address may earn in a minute before it is answered 429 for the rest of that minute.
    auth_failures: int = 20
    #: Seconds after an order was placed during which its integrator may cancel it (None: no
    #: window, as before); past it the order counts as pushed into the processing queue (509).
    #: A key's own window overrides it (`keys update CODE --cancellation-window`).
    cancellation_window: float | None = None
    #: Connections one process holds open; past it the longest idle one is closed (else 503).
    #: Lowered at start to what the process's file-descriptor limit allows.
    max_connections: int = 4096
    #: Let webhooks go to loopback, private, link-local and other non-public addresses (tests,
    #: and platforms whose consumers live on their own network). Off: such URLs are refused.
    webhook_allow_private: bool = False
    #: Seconds before each retry of a failed webhook delivery; after the last, it has failed.
    webhook_schedule: tuple[float, ...] = DEFAULT_SCHEDULE
    #: Seconds one delivery attempt may take, from connecting to the end of the answer.
    webhook_timeout: float = DEFAULT_TIMEOUT
    #: Whether `serve` runs a webhook dispatcher in each process (off: `ordercancel dispatch` does).
    webhook_dispatcher: bool = True

    def __post_init__(self) -> None:
        try:
            _admin_token(self.admin_token)  # however the settings are made, not only from the environment
        except ValueError as error:
            raise ConfigError(f"ORDERCANCEL_ADMIN_TOKEN: {error}") from None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read ORDERCANCEL_* variables; anything unset keeps its default."""
        env = os.environ if env is None else env
        settings = cls(database_url=sqlite_url(default_database_path(env)))
        raw = {
            "database_url": env.get("ORDERCANCEL_DATABASE_URL"),
            "environment": env.get("ORDERCANCEL_ENVIRONMENT"),
            "pool_size": env.get("ORDERCANCEL_POOL_SIZE"),
            "admin_token": env.get("ORDERCANCEL_ADMIN_TOKEN"),
            "body_timeout": env.get("ORDERCANCEL_BODY_TIMEOUT"),
            "max_concurrency": env.get("ORDERCANCEL_MAX_CONCURRENCY"),
            "trusted_proxies": env.get("ORDERCANCEL_TRUSTED_PROXIES"),
            "key_cache_seconds": env.get("ORDERCANCEL_KEY_CACHE_SECONDS"),
            "idempotency_ttl": env.get("ORDERCANCEL_IDEMPOTENCY_TTL"),
            "sqlite_busy_timeout": env.get("ORDERCANCEL_SQLITE_BUSY_TIMEOUT"),
            "demo_api_code": env.get("ORDERCANCEL_DEMO_API_CODE"),
            "rate_limit": env.get("ORDERCANCEL_RATE_LIMIT"),
            "rate_limit_storage": env.get("ORDERCANCEL_RATE_LIMIT_STORAGE"),
            "auth_failures": env.get("ORDERCANCEL_AUTH_FAILURES"),
            "max_connections": env.get("ORDERCANCEL_MAX_CONNECTIONS"),
            "cancellation_window": env.get("ORDERCANCEL_CANCELLATION_WINDOW"),
            "webhook_allow_private": env.get("ORDERCANCEL_WEBHOOK_ALLOW_PRIVATE"),
            "webhook_schedule": env.get("ORDERCANCEL_WEBHOOK_SCHEDULE"),
            "webhook_timeout": env.get("ORDERCANCEL_WEBHOOK_TIMEOUT"),
            "webhook_dispatcher": env.get("ORDERCANCEL_WEBHOOK_DISPATCHER"),
        }
        return settings.with_values(**{k: v for k, v in raw.items() if v is not None})

    def with_values(self, **values: str) -> Settings:
        """Return a copy with the given settings parsed from their text form."""
        parsed: dict[str, object] = {}
        for name, text in values.items():
            try:
                parsed[name] = _PARSERS[name](text)
            except ValueError as error:
                raise ConfigError(f"{_VARIABLES[name]}: {error}") from None
        return replace(self, **parsed)  # type: ignore[arg-type]

    def sqlite_path(self) -> Path | None:
        """Return the database file of a SQLite URL, or None for another database."""
        prefix = "sqlite:///"
        if not self.database_url.startswith(prefix):
            return None
        return Path(self.database_url[len(prefix) :])

    @property
    def is_postgres(self) -> bool:
        return self.database_url.startswith(("postgresql:", "postgresql+", "postgres:"))


def _environment(text: str) -> Environment:
    try:
        return Environment(text.strip().lower())
    except ValueError:
        raise ValueError(f"must be 'sandbox' or 'production', not {text!r}") from None


def _database_url(text: str) -> str:
    text = text.strip()
    if text.startswith("sqlite:///"):
        # Resolved once, against the directory the command started in, and shown absolute from then on.
        path = text[len("sqlite:///") :]
        return text if not path or path.startswith(":memory:") else sqlite_url(Path(path))
    if text.startswith(("postgresql:", "postgresql+", "postgres:")):
        return text
    raise ValueError(f"must be a sqlite:/// or postgresql:// URL, not {text!r}")


def _positive_int(text: str) -> int:
    number = int(text)
    if number < 1:
        raise ValueError(f"must be at least 1, not {number}")
    return number


def _positive_float(text: str) -> float:
    number = float(text)
    if not number > 0:
        raise ValueError(f"must be positive, not {text}")
    return number


def _non_negative_float(text: str) -> float:
    number = float(text)
    if not number >= 0:
        raise ValueError(f"must be zero or more, not {text}")
    return number


_DURATION = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*\Z")
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    """Read a duration such as `90`, `90s`, `30m`, `2h` or `1d` as seconds (more than zero)."""
    match = _DURATION.match(text.lower())
    if match is None or float(match[1]) <= 0:
        raise ValueError(f"a duration is a positive number of seconds, or one with s, m, h or d, not {text!r}")
    return float(match[1]) * _UNIT_SECONDS[match[2]]


def _window(text: str) -> float | None:
    """Read the cancellation window: a duration of at most 365 days, or nothing (no window)."""
    if not text.strip():
        return None
    seconds = parse_duration(text)
    if seconds > MAX_WINDOW.total_seconds():
        raise ValueError(f"a cancellation window is at most 365d, not {text.strip()!r}")
    return seconds


def _guid_or_empty(text: str) -> str:
    text = text.strip()
    if text and parse_guid(text) is None:
        raise ValueError(f"must be an API code (a GUID), not {text!r}")
    return text.lower()


#: A per-key rate policy that lifts the limit for that key.
UNLIMITED = "none"


def parse_rate(text: str) -> RateLimitItem:
    """Read a rate such as `100/second` or `1000 per minute`; raise ValueError naming the form."""
    try:
        return _parse_rate(text.strip())
    except ValueError:
        raise ValueError(f"a rate is a number per second, minute or hour, such as 100/second, not {text!r}") from None


@lru_cache(maxsize=1024)
def _parse_rate(text: str) -> RateLimitItem:
    item = limits.parse(text)
    if item.amount < 1:
        raise ValueError(text)
    return item


def _rate(text: str) -> str | None:
    text = text.strip()
    if not text:
        return None
    parse_rate(text)
    return text


def _redis_url(text: str) -> str | None:
    text = text.strip()
    if not text:
        return None
    if not text.startswith(("redis://", "rediss://")):
        raise ValueError(f"must be a redis://HOST:PORT/DB URL, not {text!r}")
    return text


def _admin_token(text: str) -> str:
    token = text.strip()
    if token and len(token) < MIN_ADMIN_TOKEN:
        raise ValueError(f"must be at least {MIN_ADMIN_TOKEN} characters (or empty: no admin API), not {len(token)}")
    return token


_FLAGS = {"1": True, "true": True, "yes": True, "on": True, "0": False, "false": False, "no": False, "off": False}


def _flag(text: str) -> bool:
    try:
        return _FLAGS[text.strip().lower()]
    except KeyError:
        raise ValueError(f"must be 1 or 0 (true/false, yes/no, on/off), not {text!r}") from None


def _schedule(text: str) -> tuple[float, ...]:
    """Read the webhook retry schedule: comma-separated durations, such as 5s,5m,30m,2h."""
    delays = tuple(parse_duration(part) for part in text.split(",") if part.strip())
    if not delays or len(delays) > 50:
        raise ValueError(f"a schedule is 1-50 comma-separated durations, such as 5s,5m,30m,2h, not {text!r}")
    return delays


def _addresses(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


_PARSERS: dict[str, Callable[[str], object]] = {
    "database_url": _database_url,
    "environment": _environment,
    "pool_size": _positive_int,
    "admin_token": _admin_token,
    "body_timeout": _positive_float,
    "max_concurrency": _positive_int,
    "trusted_proxies": _addresses,
    "key_cache_seconds": _non_negative_float,
    "idempotency_ttl": parse_duration,
    "sqlite_busy_timeout": _non_negative_float,
    "demo_api_code": _guid_or_empty,
    "rate_limit": _rate,
    "rate_limit_storage": _redis_url,
    "auth_failures": _positive_int,
    "max_connections": _positive_int,
    "cancellation_window": _window,
    "webhook_allow_private": _flag,
    "webhook_schedule": _schedule,
    "webhook_timeout": _positive_float,
    "webhook_dispatcher": _flag,
}
_VARIABLES = {name: f"ORDERCANCEL_{name.upper()}" for name in _PARSERS}
