"""Configuration: one frozen object, read once from the environment and passed down."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path

DEFAULT_DATABASE_URL = "sqlite:///var/ordercancel.db"
#: The shortest admin token accepted: a shorter one could be guessed.
MIN_ADMIN_TOKEN = 32


class Environment(StrEnum):
    SANDBOX = "sandbox"
    PRODUCTION = "production"


class ConfigError(ValueError):
    """A setting has a value we cannot use; the message names it."""


@dataclass(frozen=True, slots=True)
class Settings:
    database_url: str = DEFAULT_DATABASE_URL
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
    #: Addresses whose X-Forwarded-For header is believed.
    trusted_proxies: tuple[str, ...] = field(default=())
    #: Connections one process holds open; past it the longest idle one is closed (else 503).
    #: Lowered at start to what the process's file-descriptor limit allows.
    max_connections: int = 4096

    def __post_init__(self) -> None:
        try:
            _admin_token(self.admin_token)  # however the settings are made, not only from the environment
        except ValueError as error:
            raise ConfigError(f"ORDERCANCEL_ADMIN_TOKEN: {error}") from None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read ORDERCANCEL_* variables; anything unset keeps its default."""
        env = os.environ if env is None else env
        settings = cls()
        raw = {
            "database_url": env.get("ORDERCANCEL_DATABASE_URL"),
            "environment": env.get("ORDERCANCEL_ENVIRONMENT"),
            "pool_size": env.get("ORDERCANCEL_POOL_SIZE"),
            "admin_token": env.get("ORDERCANCEL_ADMIN_TOKEN"),
            "body_timeout": env.get("ORDERCANCEL_BODY_TIMEOUT"),
            "max_concurrency": env.get("ORDERCANCEL_MAX_CONCURRENCY"),
            "trusted_proxies": env.get("ORDERCANCEL_TRUSTED_PROXIES"),
            "key_cache_seconds": env.get("ORDERCANCEL_KEY_CACHE_SECONDS"),
            "max_connections": env.get("ORDERCANCEL_MAX_CONNECTIONS"),
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
    if text.startswith("sqlite:///") or text.startswith(("postgresql:", "postgresql+", "postgres:")):
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


def _admin_token(text: str) -> str:
    token = text.strip()
    if token and len(token) < MIN_ADMIN_TOKEN:
        raise ValueError(f"must be at least {MIN_ADMIN_TOKEN} characters (or empty: no admin API), not {len(token)}")
    return token


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
    "max_connections": _positive_int,
}
_VARIABLES = {name: f"ORDERCANCEL_{name.upper()}" for name in _PARSERS}
