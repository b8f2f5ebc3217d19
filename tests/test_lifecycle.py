"""The order lifecycle as service functions and CLI commands: allowed changes, refused ones."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine

from ordercancel import cli
from ordercancel.config import Settings
from ordercancel.domain import Order, PaymentStatus, ProductionStatus, statuses_before
from ordercancel.storage import service
from tests.support.orders import OrderFactory

P = ProductionStatus
CHAIN = [P.DRAFT, P.ORDERED, P.PROCESSING, P.IN_PRODUCTION, P.READY_TO_SHIP, P.SHIPPED, P.DELIVERED]


def test_an_order_walks_the_whole_lifecycle_from_draft_to_delivered(engine: Engine, make_order: OrderFactory) -> None:
    order = make_order(status="Draft", payment_status="PaymentPending")
    for status in CHAIN[1:]:
        order = service.set_status(engine, order.order_number, status.value)
        assert order.status is status
    assert service.find_order(engine, order.order_id).status is P.DELIVERED


def test_every_pair_of_statuses_is_allowed_exactly_when_the_lifecycle_says_so(
    engine: Engine, make_order: OrderFactory
) -> None:
    for source in ProductionStatus:
        for target in ProductionStatus:
            order = make_order(status=source.value)
            if source in statuses_before(target):
                assert service.set_status(engine, order.order_id, target.value).status is target
            else:
                with pytest.raises(service.TransitionRefused):
                    service.set_status(engine, order.order_id, target.value)
                assert service.find_order(engine, order.order_id) == order


@pytest.mark.parametrize(
    ("source", "target", "reason"),
    [
        ("Shipped", "Ordered", "cannot move from Shipped to Ordered; it may move to Delivered"),
        ("Delivered", "Invalid", "cannot move from Delivered to Invalid; it may move to nothing: it is an end state"),
        ("Cancelled", "Processing", "cannot move from Cancelled to Processing"),
        ("InProduction", "Cancelled", "cannot move from InProduction to Cancelled"),
        ("Ordered", "Ordered", "is Ordered already"),
        ("Draft", "Shipped", "it may move to Invalid or Ordered"),
    ],
)
def test_an_illegal_status_change_is_refused_with_the_reason_and_changes_nothing(
    engine: Engine, make_order: OrderFactory, source: str, target: str, reason: str
) -> None:
    order = make_order(status=source)
    with pytest.raises(service.TransitionRefused, match=reason) as refused:
        service.set_status(engine, order.order_number, target)
    assert "\n" not in str(refused.value)
    assert service.find_order(engine, order.order_number) == order


def test_the_payment_moves_from_pending_once_and_never_back(engine: Engine, make_order: OrderFactory) -> None:
    order = make_order(payment_status="PaymentPending")
    assert service.set_payment(engine, order.order_number, "PaymentNOK").payment_status is PaymentStatus.NOK
    for target, reason in [("PaymentOK", "cannot move from PaymentNOK to PaymentOK"), ("PaymentNOK", "already")]:
        with pytest.raises(service.TransitionRefused, match=reason):
            service.set_payment(engine, order.order_number, target)
    with pytest.raises(service.TransitionRefused, match="cannot move from PaymentNOK to PaymentPending"):
        service.set_payment(engine, order.order_number, "PaymentPending")
    assert service.find_order(engine, order.order_number).payment_status is PaymentStatus.NOK


def test_a_claim_records_the_engineer_and_when_and_a_release_clears_both(
    engine: Engine, make_order: OrderFactory
) -> None:
    order = make_order(status="Processing")
    claimed = service.claim(engine, order.order_number, "  Ada Lovelace ")
    assert (claimed.engineer, claimed.claimed_at is not None) == ("Ada Lovelace", True)
    released = service.release(engine, order.order_number)
    assert (released.engineer, released.claimed_at) == (None, None)


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"status": "Cancelled"}, "order .* is Cancelled: only Ordered or Processing can be claimed"),
        ({"status": "InProduction"}, "is InProduction: only Ordered or Processing can be claimed"),
        ({"status": "Draft"}, "is Draft: only"),
        ({"status": "Ordered", "engineer": "Grace"}, "is claimed by Grace already"),
    ],
)
def test_a_claim_is_refused_unless_the_order_is_open_and_unclaimed(
    engine: Engine, make_order: OrderFactory, fields: dict[str, str], reason: str
) -> None:
    order = make_order(**fields)
    with pytest.raises(service.TransitionRefused, match=reason):
        service.claim(engine, order.order_id, "Ada")
    assert service.find_order(engine, order.order_id) == order


def test_a_claimed_order_cannot_be_cancelled_by_an_admin_until_released(
    engine: Engine, make_order: OrderFactory
) -> None:
    order = make_order(status="Ordered", engineer="Ada")
    with pytest.raises(service.TransitionRefused, match="is claimed by Ada: release it first"):
        service.set_status(engine, order.order_number, "Cancelled")
    service.release(engine, order.order_number)
    cancelled = service.set_status(engine, order.order_number, "Cancelled")
    assert cancelled.status is P.CANCELLED
    assert cancelled.cancelled_at is not None


def test_releasing_an_unclaimed_order_is_refused(engine: Engine, make_order: OrderFactory) -> None:
    order = make_order()
    with pytest.raises(service.TransitionRefused, match="is not claimed by anyone"):
        service.release(engine, order.order_number)


@pytest.mark.parametrize("name", ["", "   ", "x" * 101, "Ada\nLovelace"])
def test_a_claim_with_an_unusable_engineer_name_is_refused_and_changes_nothing(
    engine: Engine, make_order: OrderFactory, name: str
) -> None:
    order = make_order()
    with pytest.raises(service.InvalidValue, match="engineer's name"):
        service.claim(engine, order.order_number, name)
    assert service.find_order(engine, order.order_number) == order


def test_a_change_to_an_unknown_order_or_status_is_refused(engine: Engine, make_order: OrderFactory) -> None:
    order = make_order()
    with pytest.raises(service.OrderNotFound):
        service.set_status(engine, "IMC999999", "Processing")
    with pytest.raises(service.OrderNotFound):
        service.claim(engine, "7b0c9a62-9a55-4d6b-8c53-d0c8c1d2c3e4", "Ada")
    with pytest.raises(service.InvalidValue, match="unknown status 'Lost'"):
        service.set_status(engine, order.order_number, "Lost")
    with pytest.raises(service.InvalidValue, match="unknown paymentStatus 'PaymentMaybe'"):
        service.set_payment(engine, order.order_number, "PaymentMaybe")


# The CLI --------------------------------------------------------------------------------------


def run(settings: Settings, capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(["--database-url", settings.database_url, *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_the_cli_commands_change_an_order_and_exit_zero(
    settings: Settings, engine: Engine, make_order: OrderFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    order = make_order(status="Draft", payment_status="PaymentPending")
    assert run(settings, capsys, "orders", "set-status", order.order_number, "Ordered")[0] == 0
    assert run(settings, capsys, "orders", "set-payment", order.order_id, "PaymentOK")[0] == 0
    code, out, _ = run(settings, capsys, "orders", "claim", order.order_number, "--engineer", "Ada", "--json")
    assert code == 0
    assert '"engineer":"Ada"' in out
    assert run(settings, capsys, "orders", "release", order.order_number)[0] == 0
    assert service.find_order(engine, order.order_id) == Order(
        order.order_id, order.order_number, P.ORDERED, PaymentStatus.OK, placed_at=order.placed_at
    )


@pytest.mark.parametrize(
    "case",
    [
        (("set-status", "{number}", "Delivered"), "cannot move from Ordered to Delivered"),
        (("set-payment", "{number}", "PaymentNOK"), "cannot move from PaymentOK to PaymentNOK"),
        (("claim", "{number}", "--engineer", "Ada"), "is claimed by Grace already"),
        (("release", "IMC999999"), "no order 'IMC999999'"),
        (("set-status", "{number}", "Lost"), "unknown status 'Lost'"),
    ],
)
def test_a_refused_cli_command_exits_non_zero_with_a_one_line_reason(
    settings: Settings,
    engine: Engine,
    make_order: OrderFactory,
    capsys: pytest.CaptureFixture[str],
    case: tuple[tuple[str, ...], str],
) -> None:
    argv, reason = case
    order = make_order(engineer="Grace")
    code, out, err = run(settings, capsys, "orders", *(a.format(number=order.order_number) for a in argv))
    assert code != 0
    assert out == ""
    assert err.count("\n") == 1
    assert reason in err
    assert service.find_order(engine, order.order_id) == order
