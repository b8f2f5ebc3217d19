"""`ordercancel orders import`: JSON Lines and CSV, every row checked, all or nothing."""

from __future__ import annotations

import uuid
from pathlib import Path

import httpx
import pytest
from sqlalchemy import Engine, func, select

from ordercancel.cli import main
from ordercancel.config import Environment, Settings
from ordercancel.storage import database, importer, service
from ordercancel.storage.schema import orders
from tests.support.wire import BY_NUMBER


def count_orders(engine: Engine) -> int:
    with engine.connect() as connection:
        return int(connection.scalar(select(func.count()).select_from(orders)) or 0)


def write(path: Path, *lines: str) -> Path:
    path.write_text("".join(line + "\n" for line in lines))
    return path


def run_import(settings: Settings, api_code: str, path: Path) -> int:
    return main(["orders", "import", str(path), "--api-code", api_code, "--database-url", settings.database_url])


def test_a_json_lines_file_is_imported_and_its_orders_answer_over_http(
    tmp_path: Path, settings: Settings, engine: Engine, api_code: str, http: httpx.Client
) -> None:
    given_id = "E1754C8D-2ED1-43BA-A9B3-3E22314600C1"
    path = write(
        tmp_path / "orders.jsonl",
        '{"orderNumber": "IMP-1", "status": "Ordered", "paymentStatus": "PaymentOK"}',
        "",
        f'{{"orderNumber": "IMP-2", "orderId": "{given_id}", "status": "Processing", "paymentStatus": "PaymentOK",'
        ' "engineer": "Ada"}',
        '{"orderNumber": "IMP-3", "orderId": null, "status": "Shipped", "paymentStatus": "PaymentOK"}',
    )

    assert run_import(settings, api_code, path) == 0

    assert service.find_order(engine, "IMP-1").order_number == "IMP-1"
    claimed = service.find_order(engine, "IMP-2")
    assert (claimed.order_id, claimed.engineer, claimed.claimed_at is not None) == (given_id.lower(), "Ada", True)
    headers = {"apiCode": api_code, "Accept": "application/json"}
    answers = [
        http.post(BY_NUMBER, json={"orderNumber": n}, headers=headers).json() for n in ("IMP-1", "IMP-2", "IMP-3")
    ]
    assert answers[0]["isCanceled"] is True
    assert answers[1]["requestError"]["code"] == 509
    assert answers[2]["requestError"]["code"] == 508


def test_a_csv_file_with_the_same_columns_is_imported(
    tmp_path: Path, settings: Settings, engine: Engine, api_code: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(
        tmp_path / "orders.csv",
        "orderNumber,status,paymentStatus,engineer,orderId",
        "CSV-1,Ordered,PaymentPending,,",
        '"CSV-2",Draft,PaymentPending,,0f8fad5b-d9cb-469f-a165-70867728950e',
    )

    assert run_import(settings, api_code, path) == 0

    assert "imported 2 orders" in capsys.readouterr().out
    assert service.find_order(engine, "CSV-1").engineer is None
    assert service.find_order(engine, "0f8fad5b-d9cb-469f-a165-70867728950e").order_number == "CSV-2"


def test_bad_rows_are_reported_by_line_number_and_nothing_is_written(
    tmp_path: Path, settings: Settings, engine: Engine, api_code: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(
        tmp_path / "orders.jsonl",
        '{"orderNumber": "OK-1", "status": "Ordered", "paymentStatus": "PaymentOK"}',
        '{"orderNumber": "BAD 2", "status": "Ordered", "paymentStatus": "PaymentOK"}',
        '{"orderNumber": "OK-3", "status": "Lost", "paymentStatus": "PaymentOK"}',
        '{"orderNumber": "OK-4", "status": "Shipped", "paymentStatus": "PaymentOK", "engineer": "Ada"}',
        "{not json",
        '{"orderNumber": "OK-6", "status": "Ordered", "paymentStatus": "PaymentOK", "Engineer": "Ada"}',
        '{"orderNumber": "OK-7", "status": "Ordered"}',
        '{"orderNumber": "OK-8", "orderId": "nope", "status": "Ordered", "paymentStatus": "PaymentOK"}',
        '{"orderNumber": 9, "status": "Ordered", "paymentStatus": "PaymentOK"}',
    )

    assert run_import(settings, api_code, path) == 1

    err = capsys.readouterr().err
    assert "nothing imported" in err
    for line, reason in [
        (2, "is not 1-32 letters"),
        (3, "unknown status 'Lost'"),
        (4, "an engineer can only hold"),
        (5, "not JSON"),
        (6, "unknown field(s) Engineer"),
        (7, "paymentStatus is missing"),
        (8, "is not a GUID"),
        (9, "must be a string"),
    ]:
        assert f"orders.jsonl:line {line}: " in err and reason in err, (line, reason)
    assert "line 1:" not in err
    assert count_orders(engine) == 0


def test_a_number_already_stored_fails_the_whole_file_even_after_earlier_chunks_were_written(
    tmp_path: Path, settings: Settings, engine: Engine, api_code: str
) -> None:
    taken = service.create_order(engine, settings.environment, api_code, number="TAKEN")
    rows = [f'{{"orderNumber": "N-{i}", "status": "Ordered", "paymentStatus": "PaymentOK"}}' for i in range(5)]
    rows.append('{"orderNumber": "TAKEN", "status": "Ordered", "paymentStatus": "PaymentOK"}')
    path = write(tmp_path / "orders.jsonl", *rows)

    with pytest.raises(importer.ImportFailed) as failure:
        importer.import_orders(engine, settings.environment, api_code, path, chunk_size=2)

    assert "line 6: orderNumber 'TAKEN' exists already" in str(failure.value)
    assert count_orders(engine) == 1
    assert service.find_order(engine, "TAKEN") == taken


def test_a_number_repeated_in_the_file_names_both_lines(
    tmp_path: Path, settings: Settings, engine: Engine, api_code: str
) -> None:
    path = write(
        tmp_path / "orders.jsonl",
        '{"orderNumber": "TWICE", "status": "Ordered", "paymentStatus": "PaymentOK"}',
        '{"orderNumber": "ONCE", "status": "Ordered", "paymentStatus": "PaymentOK"}',
        '{"orderNumber": "OTHER", "status": "Ordered", "paymentStatus": "PaymentOK"}',
        '{"orderNumber": "TWICE", "status": "Cancelled", "paymentStatus": "PaymentOK"}',
    )

    with pytest.raises(importer.ImportFailed, match="line 4: orderNumber 'TWICE' already on line 1"):
        importer.import_orders(engine, settings.environment, api_code, path, chunk_size=2)

    assert count_orders(engine) == 0


def test_an_unknown_api_code_imports_nothing(tmp_path: Path, settings: Settings, engine: Engine) -> None:
    path = write(tmp_path / "orders.jsonl", '{"orderNumber": "X-1", "status": "Ordered", "paymentStatus": "PaymentOK"}')

    assert run_import(settings, str(uuid.uuid4()), path) == 1

    assert count_orders(engine) == 0


def test_a_csv_header_with_an_unknown_column_is_refused(
    tmp_path: Path, settings: Settings, engine: Engine, api_code: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path / "orders.csv", "orderNumber,state,paymentStatus", "C-1,Ordered,PaymentOK")

    assert run_import(settings, api_code, path) == 1

    assert "line 1: the header must name" in capsys.readouterr().err
    assert count_orders(engine) == 0


def test_the_import_writes_in_chunks_all_or_nothing_against_stored_orders_too(
    tmp_path: Path, settings: Settings
) -> None:
    # executemany on SQLite, COPY on PostgreSQL: the settings fixture runs this on both.
    engine = database.create_sync_engine(settings)
    try:
        code = service.create_key(engine, Environment.SANDBOX, "pg")
        good = [
            f'{{"orderNumber": "IMP-PG-{i}", "status": "Ordered", "paymentStatus": "PaymentOK"}}' for i in range(25)
        ]
        claimed = '{"orderNumber": "IMP-PG-X", "status": "Processing", "paymentStatus": "PaymentOK", "engineer": "Ada"}'
        path = write(tmp_path / "orders.jsonl", *good, claimed)

        report = importer.import_orders(engine, Environment.SANDBOX, code, path, chunk_size=10)

        assert report.imported == 26 and count_orders(engine) == 26
        assert service.find_order(engine, "IMP-PG-X").claimed_at is not None
        again = write(
            tmp_path / "again.jsonl",
            '{"orderNumber": "IMP-PG-NEW", "status": "Ordered", "paymentStatus": "PaymentOK"}',
            '{"orderNumber": "IMP-PG-3", "status": "Ordered", "paymentStatus": "PaymentOK"}',
        )
        with pytest.raises(importer.ImportFailed, match="line 2: orderNumber 'IMP-PG-3' exists already"):
            importer.import_orders(engine, Environment.SANDBOX, code, again, chunk_size=1)
        assert count_orders(engine) == 26
    finally:
        engine.dispose()
