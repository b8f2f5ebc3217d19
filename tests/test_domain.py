"""The refusal rules and the lifecycle, checked over every state an order can be in."""

from __future__ import annotations

import itertools

import pytest

from ordercancel.config import ConfigError, Environment, Settings
from ordercancel.domain import (
    AlreadyCancelled,
    MissingOrderId,
    MissingOrderNumber,
    NotPlacedCorrectly,
    Order,
    PaymentStatus,
    ProcessingStarted,
    ProductionStarted,
    ProductionStatus,
    WrongOrderId,
    cancellation_refusal,
    generated_order_number,
    lookup,
    payments_before,
    statuses_before,
)

STATES = list(itertools.product(ProductionStatus, PaymentStatus, [None, "Ada"]))


def expected_code(status: ProductionStatus, payment: PaymentStatus, engineer: str | None) -> int | None:
    """The contract's outcome table, written out row by row, first match wins."""
    if status == "Cancelled":
        return 507
    if status == "Draft" or payment == "PaymentNOK":
        return 506
    if status not in ("Ordered", "Processing"):
        return 508
    if engineer:
        return 509
    return None


@pytest.mark.parametrize(("status", "payment", "engineer"), STATES)
def test_the_refusal_follows_the_documented_precedence(
    status: ProductionStatus, payment: PaymentStatus, engineer: str | None
) -> None:
    order = Order("id", "IMC000001", status, payment, engineer)
    refusal = cancellation_refusal(order)
    assert (refusal.code if refusal else None) == expected_code(status, payment, engineer)


def test_the_refusal_classes_carry_the_published_messages() -> None:
    assert AlreadyCancelled().message == "Order has already been cancelled before."
    assert NotPlacedCorrectly.code == 506
    assert ProductionStarted.code == 508
    assert ProcessingStarted.code == 509


@pytest.mark.parametrize(
    ("value", "by_id", "error"),
    [
        (None, False, MissingOrderNumber),
        (" \t", False, MissingOrderNumber),
        (None, True, MissingOrderId),
        ("x", True, WrongOrderId),
    ],
)
def test_a_request_that_names_no_order_gets_its_code(value: str | None, by_id: bool, error: type[Exception]) -> None:
    with pytest.raises(error):
        lookup(value, by_id=by_id)


def test_a_lookup_trims_and_canonicalises_ids_but_not_numbers() -> None:
    assert lookup(" imc1 ", by_id=False).value == "imc1"
    assert lookup(" E1754C8D-2ED1-43BA-A9B3-3E22314600C1 ", by_id=True).value == "e1754c8d-2ed1-43ba-a9b3-3e22314600c1"


def test_generated_numbers_have_six_digits_and_grow_past_a_million() -> None:
    assert generated_order_number(42) == "IMC000042"
    assert generated_order_number(1_000_000) == "IMC1000000"


def test_the_lifecycle_moves_forward_only_and_ends_in_its_end_states() -> None:
    assert statuses_before(ProductionStatus.ORDERED) == {ProductionStatus.DRAFT}
    assert statuses_before(ProductionStatus.SHIPPED) == {
        ProductionStatus.READY_TO_SHIP,
        ProductionStatus.READY_TO_PICK_UP,
    }
    assert statuses_before(ProductionStatus.CANCELLED) == {ProductionStatus.ORDERED, ProductionStatus.PROCESSING}
    assert ProductionStatus.DELIVERED not in statuses_before(ProductionStatus.INVALID)
    assert ProductionStatus.IN_PRODUCTION in statuses_before(ProductionStatus.INVALID)
    assert statuses_before(ProductionStatus.DRAFT) == set()
    assert payments_before(PaymentStatus.OK) == {PaymentStatus.PENDING}
    assert payments_before(PaymentStatus.PENDING) == set()


def test_settings_come_from_the_environment_and_refuse_what_they_cannot_use() -> None:
    settings = Settings.from_env(
        {
            "ORDERCANCEL_ENVIRONMENT": "Production",
            "ORDERCANCEL_POOL_SIZE": "3",
            "ORDERCANCEL_TRUSTED_PROXIES": "10.0.0.1, ::1",
        }
    )
    assert settings.environment is Environment.PRODUCTION
    assert settings.pool_size == 3
    assert settings.trusted_proxies == ("10.0.0.1", "::1")
    assert Settings.from_env({}).environment is Environment.SANDBOX
    with pytest.raises(ConfigError, match="ORDERCANCEL_POOL_SIZE"):
        Settings.from_env({"ORDERCANCEL_POOL_SIZE": "0"})
    with pytest.raises(ConfigError, match="ORDERCANCEL_DATABASE_URL"):
        Settings.from_env({"ORDERCANCEL_DATABASE_URL": "mysql://x"})
