"""Bulk order import: the platform's orders, from JSON Lines or CSV, in one transaction.

The whole file is the batch: every row is validated, and either all of them are written or,
at the first bad row, none. Rows go to the database in chunks through the driver itself
(`executemany` on SQLite, `COPY` on PostgreSQL) inside that one transaction; an ORM or a
query builder would cost more per row than the row.
"""

from __future__ import annotations

import csv
import io
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Any

import orjson
import psycopg
from sqlalchemy import Connection, Engine, select

from ordercancel.config import Environment
from ordercancel.domain import new_order
from ordercancel.storage.database import sqlite_timestamp, utcnow
from ordercancel.storage.schema import orders
from ordercancel.storage.service import AdminError, active_key_id  # the lookup `orders create` uses

Clock = Callable[[], datetime]
UuidGen = Callable[[], uuid.UUID]

COLUMNS = ("orderNumber", "orderId", "status", "paymentStatus", "engineer", "placedAt")
REQUIRED = ("orderNumber", "status", "paymentStatus")
#: Rows handed to the driver at once: large enough to amortise the call, small enough to stay in cache.
CHUNK = 10_000
#: SQLite page cache while importing, KiB (taken only as the indexes grow).
IMPORT_CACHE_KIB = 128 * 1024
#: Bad rows reported before the rest of the file is no longer read.
MAX_ERRORS = 20

_INSERT_COLUMNS = (
    "order_id",
    "order_number",
    "api_key_id",
    "status",
    "payment_status",
    "engineer",
    "claimed_at",
    "created_at",
    "placed_at",
)


#: What the driver raises when a row repeats a unique key.
DUPLICATE_ERRORS = (sqlite3.IntegrityError, psycopg.errors.UniqueViolation)


class ImportFailed(AdminError):
    """The file was not imported; the message lists the bad rows by line number."""


@dataclass(frozen=True, slots=True)
class RowError:
    line: int
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}"


@dataclass(frozen=True, slots=True)
class Row:
    """One validated order of the file, with the line it came from."""

    line: int
    order_number: str
    order_id: str
    status: str
    payment_status: str
    engineer: str | None
    #: When the order was placed (UTC), or None: when it is imported.
    placed_at: datetime | None = None


@dataclass(slots=True)
class ImportReport:
    imported: int = 0
    seconds: float = 0.0
    errors: list[RowError] = field(default_factory=list)


def _text(record: dict[str, Any], name: str) -> str | None:
    value = record.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError(f"{name} must be a string, not {type(value).__name__}")
    return value.strip() or None


def validate(line: int, record: dict[str, Any], uuidgen: UuidGen) -> Row:
    """Check one record with the validation `orders create` uses; raise ValueError saying why not."""
    unknown = record.keys() - COLUMNS
    if unknown:
        raise ValueError(f"unknown field(s) {', '.join(sorted(unknown))}; the fields are {', '.join(COLUMNS)}")
    number, given_id, status, payment, engineer, placed_at = (_text(record, name) for name in COLUMNS)
    for name, value in zip(COLUMNS, (number, given_id, status, payment, engineer, placed_at), strict=True):
        if value is None and name in REQUIRED:
            raise ValueError(f"{name} is missing")
    # The domain's InvalidOrderField is a ValueError: it is reported with the line like the rest.
    fields = new_order(
        order_number=number,
        order_id=given_id,
        status=status,
        payment_status=payment,
        engineer=engineer,
        placed_at=placed_at,
    )
    assert fields.order_number is not None  # required above
    order_id = fields.order_id or str(uuidgen())
    return Row(
        line,
        fields.order_number,
        order_id,
        fields.status.value,
        fields.payment_status.value,
        fields.engineer,
        fields.placed_at,
    )


def read_records(stream: IO[str], kind: str) -> Iterator[tuple[int, dict[str, Any] | ValueError]]:
    """Yield (line number, record or the reason it cannot be read) for every row of the file."""
    if kind == "csv":
        yield from _csv_records(stream)
    else:
        yield from _jsonl_records(stream)


def _jsonl_records(stream: IO[str]) -> Iterator[tuple[int, dict[str, Any] | ValueError]]:
    for line, text in enumerate(stream, start=1):
        if not text.strip():
            continue
        try:
            record = orjson.loads(text)
        except orjson.JSONDecodeError as error:
            yield line, ValueError(f"not JSON: {error}")
            continue
        yield line, record if isinstance(record, dict) else ValueError("not a JSON object")


def _csv_records(stream: IO[str]) -> Iterator[tuple[int, dict[str, Any] | ValueError]]:
    reader = csv.reader(stream)
    try:
        header = next(reader, None)
    except csv.Error as error:
        yield 1, _unreadable(error)
        return
    if header is None:
        return
    names = [name.strip() for name in header]
    unknown = sorted(set(names) - set(COLUMNS))
    if unknown or len(set(names)) != len(names):
        yield 1, ValueError(f"the header must name some of {', '.join(COLUMNS)} once each, not {', '.join(names)}")
        return
    start = reader.line_num
    while True:
        try:
            cells = next(reader, None)
        except csv.Error as error:
            # The reader cannot say where the broken row ends: nothing after it can be trusted.
            yield start + 1, _unreadable(error)
            return
        if cells is None:
            return
        line, start = start + 1, reader.line_num
        if not cells or not any(cell.strip() for cell in cells):
            continue
        if len(cells) != len(names):
            yield line, ValueError(f"{len(cells)} cells, the header names {len(names)}")
            continue
        yield line, {name: cell or None for name, cell in zip(names, cells, strict=True)}


def _unreadable(error: csv.Error) -> ValueError:
    """Say why the CSV reader stopped, in the words of one who wrote the file."""
    reason = str(error)
    if "field larger than field limit" in reason:
        reason = f"a field is longer than {csv.field_size_limit() // 1024} KiB"
    return ValueError(f"not CSV: {reason}")


def file_kind(path: Path, first_byte: bytes) -> str:
    """Tell CSV from JSON Lines by the file's suffix, else by its first byte (`{` is JSON)."""
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return "csv"
    if suffix in (".jsonl", ".ndjson", ".json"):
        return "jsonl"
    return "jsonl" if first_byte.lstrip()[:1] == b"{" else "csv"


def validated_rows(
    records: Iterable[tuple[int, dict[str, Any] | ValueError]], errors: list[RowError], uuidgen: UuidGen
) -> Iterator[Row]:
    """Yield the valid rows until the first bad one; from then on only collect the bad ones."""
    for line, record in records:
        try:
            if isinstance(record, ValueError):
                raise record
            row = validate(line, record, uuidgen)
        except ValueError as error:
            errors.append(RowError(line, str(error)))
            if len(errors) >= MAX_ERRORS:
                return
            continue
        if not errors:
            yield row


class _Writer:
    """Insert rows through the driver connection beneath a SQLAlchemy connection."""

    def __init__(self, connection: Connection, key_id: int, now: datetime) -> None:
        driver = connection.connection.driver_connection
        if driver is None:
            raise RuntimeError("the connection has no driver connection beneath it")
        self._driver: Any = driver
        self._postgres = connection.dialect.name == "postgresql"
        self._key_id = key_id
        self._now: object = now if self._postgres else sqlite_timestamp(now)
        if not self._postgres:
            # Random GUIDs land all over the order_id index: past SQLite's 2 MiB default page
            # cache every insert reads pages back from the file. (Only a cap: taken as used.)
            self._driver.execute(f"PRAGMA cache_size = -{IMPORT_CACHE_KIB}")

    def _values(self, row: Row) -> tuple[object, ...]:
        claimed = self._now if row.engineer is not None else None
        placed = self._now if row.placed_at is None else self._timestamp(row.placed_at)
        return (
            row.order_id,
            row.order_number,
            self._key_id,
            row.status,
            row.payment_status,
            row.engineer,
            claimed,
            self._now,
            placed,
        )

    def _timestamp(self, value: datetime) -> object:
        # SQLite keeps a timestamp as text (naive UTC), and the window compares that text.
        return value if self._postgres else sqlite_timestamp(value)

    def write(self, rows: list[Row]) -> None:
        columns = ", ".join(_INSERT_COLUMNS)
        if self._postgres:
            with self._driver.cursor() as cursor, cursor.copy(f"COPY orders ({columns}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(self._values(row))
        else:
            marks = ", ".join("?" for _ in _INSERT_COLUMNS)
            self._driver.executemany(
                f"INSERT INTO orders ({columns}) VALUES ({marks})", [self._values(row) for row in rows]
            )


def _keys(row: Row | dict[str, Any]) -> Iterator[tuple[str, str]]:
    """The unique keys a row claims, labelled: its number, and its ID when the file gives one."""
    if isinstance(row, Row):
        yield "orderNumber", row.order_number
        yield "orderId", row.order_id
        return
    for label in ("orderNumber", "orderId"):
        value = row.get(label)
        if isinstance(value, str) and value.strip():
            yield label, value.strip().lower() if label == "orderId" else value.strip()


def _repeats(connection: Connection, path: Path, skip: set[int]) -> list[RowError]:
    """Name every row that repeats a number or ID of an earlier row, or of a stored order.

    Runs after the rollback, so only orders stored before the import count as stored. The file
    is read again (the rows in `skip`, already reported, are left out); this costs a dict of
    the file's keys, only on the way to a failure, so that one pass reports every problem.
    """
    first_line: dict[tuple[str, str], int] = {}
    found: dict[int, RowError] = {}
    with _records(path) as (records, _):
        for line, record in records:
            if isinstance(record, ValueError) or line in skip:
                continue
            for key in _keys(record):
                seen = first_line.setdefault(key, line)
                if seen != line:
                    found.setdefault(line, RowError(line, f"{key[0]} {key[1]!r} already on line {seen}"))
    for label, column in (("orderNumber", orders.c.order_number), ("orderId", orders.c.order_id)):
        keys = [value for kind, value in first_line if kind == label]
        for start in range(0, len(keys), 500):
            for (value,) in connection.execute(select(column).where(column.in_(keys[start : start + 500]))):
                line = first_line[label, value]
                found.setdefault(line, RowError(line, f"{label} {value!r} exists already"))
    return list(found.values())


#: Told (bytes read, bytes in the file, rows read) after every chunk, and once at the end.
Progress = Callable[[int, int, int], None]


def import_orders(
    engine: Engine,
    environment: Environment,
    api_code: str,
    path: Path,
    *,
    progress: Progress | None = None,
    chunk_size: int = CHUNK,
    clock: Clock = utcnow,
    uuidgen: UuidGen = uuid.uuid4,
) -> ImportReport:
    """Import every order of the file for an API code, or none; raise ImportFailed naming bad rows."""
    report = ImportReport()
    started = time.perf_counter()
    size = path.stat().st_size
    rows_read = 0
    with engine.connect() as connection:
        # The key lookup opens the transaction the whole file is written in.
        writer = _Writer(connection, active_key_id(connection, environment, api_code), clock())
        with _records(path) as (records, position):
            chunk: list[Row] = []
            clashed = False  # a chunk repeated a unique key: from then on the rows are only checked
            try:
                for row in validated_rows(records, report.errors, uuidgen):
                    rows_read += 1
                    if clashed:
                        continue
                    chunk.append(row)
                    if len(chunk) >= chunk_size:
                        clashed = not _write(writer, chunk, report)
                        chunk.clear()
                        if progress is not None:
                            progress(position(), size, rows_read)
                if chunk and not report.errors and not clashed:
                    clashed = not _write(writer, chunk, report)
            except UnicodeDecodeError as error:
                report.errors.append(RowError(0, f"the file is not UTF-8: {error.reason}"))
            if clashed or report.errors:
                _fail(connection, path, report)
            connection.commit()
    if progress is not None:
        progress(size, size, rows_read)
    report.seconds = time.perf_counter() - started
    return report


def _fail(connection: Connection, path: Path, report: ImportReport) -> None:
    """Roll the file back and raise ImportFailed with every problem found, the repeats included."""
    connection.rollback()
    if len(report.errors) < MAX_ERRORS and not any(error.line == 0 for error in report.errors):
        # Every problem in one pass: the repeats too, not only once the bad rows are fixed.
        report.errors.extend(_repeats(connection, path, {error.line for error in report.errors}))
        report.errors.sort(key=lambda error: error.line)
        del report.errors[MAX_ERRORS:]
    connection.rollback()
    report.imported = 0
    if not report.errors:
        raise RuntimeError("the database refused a repeated key that a second look did not find")
    raise ImportFailed(_failure_message(path, report.errors))


def _write(writer: _Writer, chunk: list[Row], report: ImportReport) -> bool:
    """Write a chunk; return False when the database refused it for repeating a unique key."""
    try:
        writer.write(chunk)
    except DUPLICATE_ERRORS:
        return False
    report.imported += len(chunk)
    return True


@contextmanager
def _records(path: Path) -> Iterator[tuple[Iterator[tuple[int, dict[str, Any] | ValueError]], Callable[[], int]]]:
    """Open the file and read its records, with a function that tells how far the reading got."""
    with path.open("rb") as raw:
        kind = file_kind(path, raw.peek(64)[:64])
        stream = io.TextIOWrapper(raw, encoding="utf-8-sig", newline="" if kind == "csv" else None)
        yield read_records(stream, kind), raw.tell


def _failure_message(path: Path, errors: list[RowError]) -> str:
    shown = "\n".join(f"  {path}:{error}" if error.line else f"  {path}: {error.message}" for error in errors)
    more = f"\n  (stopped after {MAX_ERRORS} bad rows)" if len(errors) >= MAX_ERRORS else ""
    return f"nothing imported from {path}: {len(errors)} bad row(s)\n{shown}{more}"
