"""The hot path writes SQLite timestamps itself: they must be the text SQLAlchemy writes and reads."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy.dialects import sqlite

from ordercancel.storage.database import as_utc, sqlite_timestamp

MOMENTS = [
    datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=UTC),
    datetime(2026, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC),
    datetime(2026, 6, 1, 1, 30, 0, 0, tzinfo=timezone(timedelta(hours=2))),  # another zone: stored as UTC
]


@pytest.mark.parametrize("moment", MOMENTS)
def test_a_timestamp_is_stored_as_the_text_sqlalchemy_stores_for_its_utc_instant(moment: datetime) -> None:
    store = sqlite.DATETIME().bind_processor(sqlite.dialect())
    assert store is not None
    assert sqlite_timestamp(moment) == store(moment.astimezone(UTC).replace(tzinfo=None))


@pytest.mark.parametrize("moment", MOMENTS)
def test_a_stored_timestamp_reads_back_as_the_same_instant(moment: datetime) -> None:
    assert as_utc(sqlite_timestamp(moment)) == moment
