"""Orders in any state, for the test's API code or another one."""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import Engine

from ordercancel.config import Environment
from ordercancel.domain import Order
from ordercancel.storage import service

#: `make_order(number=..., status=..., api_code=...)`: what the `make_order` fixture returns.
OrderFactory = Callable[..., Order]


def order_factory(engine: Engine, environment: Environment, api_code: str) -> OrderFactory:
    """Create orders for api_code unless a call names another one."""

    def make(**fields: str | None) -> Order:
        code = fields.pop("api_code", None) or api_code
        return service.create_order(engine, environment, code, **fields)  # type: ignore[arg-type]

    return make
