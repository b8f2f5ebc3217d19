"""The access log line, built in one step and written once per event-loop turn, is the formatter's line."""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
from collections.abc import Iterator

import orjson
import pytest

from ordercancel.http.core import BodyDeadlines, Message, Request, Response
from ordercancel.http.observability import AccessLog, JsonFormatter, Metrics

PATH = "/api/v1/cancel"


async def _nothing() -> Message:
    return {"type": "http.disconnect"}


def _request(request_id: str, key_id: int | None = 7) -> Request:
    return Request(
        method="POST",
        path=PATH,
        query="",
        headers={},
        client="127.0.0.1",
        request_id=request_id,
        path_params={},
        _receive=_nothing,
        _max_body=1024,
        _deadlines=BodyDeadlines(1.0),
        key_id=key_id,
    )


@contextlib.contextmanager
def _json_logger(level: int = logging.INFO) -> Iterator[tuple[logging.Logger, io.StringIO]]:
    """A logger set up as `logging_config` sets up the access log: one JSON stream handler and no other.

    Entered in the test's body: pytest adds its capture handlers to loggers during the call.
    """
    logger = logging.getLogger("ordercancel.test-access")
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    saved = logger.handlers[:], logger.propagate, logger.level
    logger.handlers[:] = [handler]
    logger.setLevel(level)
    logger.propagate = False
    try:
        yield logger, stream
    finally:
        logger.handlers[:], logger.propagate, logger.level = saved


def _formatter_line(logger: logging.Logger, request: Request, response: Response, elapsed: float) -> dict[str, object]:
    """The line the formatter writes for the same request, through an ordinary log record."""
    record = logger.makeRecord(logger.name, logging.INFO, __file__, 0, "request", (), None)
    record.fields = {
        "request_id": request.request_id,
        "method": request.method,
        "endpoint": PATH,
        "status": response.status,
        "outcome": response.outcome,
        "latency_ms": round(elapsed * 1000, 3),
        "key_id": request.key_id,
        "client": request.client,
    }
    line: dict[str, object] = orjson.loads(JsonFormatter().format(record))
    return line


def test_the_one_step_line_has_the_formatters_keys_in_order_and_values() -> None:
    with _json_logger() as (logger, stream):
        access = AccessLog(Metrics([PATH]), logger)
        request, response = _request("req-1"), Response(200, outcome=0)

        access.observe(request, response, 0.0123456)  # outside a loop: written at once

        [written] = stream.getvalue().splitlines()
        line, expected = orjson.loads(written), _formatter_line(logger, request, response, 0.0123456)
        assert list(line) == list(expected)
        assert {k: v for k, v in line.items() if k != "time"} == {k: v for k, v in expected.items() if k != "time"}
        assert str(line["time"])[:17] == str(expected["time"])[:17]  # the same stamp, to the minute
        assert str(line["time"]).endswith("Z")


def test_the_lines_of_one_loop_turn_are_written_together_at_its_end() -> None:
    with _json_logger() as (logger, stream):
        access = AccessLog(Metrics([PATH]), logger)

        async def one_turn() -> tuple[str, str]:
            for n in range(3):
                access.observe(_request(f"turn-{n}"), Response(200, outcome=0), 0.001)
            during = stream.getvalue()
            await asyncio.sleep(0)  # the turn ends
            return during, stream.getvalue()

        during, after = asyncio.run(one_turn())

        assert during == ""
        assert [orjson.loads(line)["request_id"] for line in after.splitlines()] == ["turn-0", "turn-1", "turn-2"]


def test_a_full_buffer_is_written_without_waiting_for_the_turn_to_end() -> None:
    with _json_logger() as (logger, stream):
        access = AccessLog(Metrics([PATH]), logger)

        async def many() -> int:
            for n in range(AccessLog.MAX_BUFFERED + 1):
                access.observe(_request(f"r{n}"), Response(200, outcome=0), 0.001)
            return len(stream.getvalue().splitlines())

        written_within_the_turn = asyncio.run(many())

        assert written_within_the_turn == AccessLog.MAX_BUFFERED
        assert len(stream.getvalue().splitlines()) == AccessLog.MAX_BUFFERED + 1


def test_lines_still_buffered_are_written_by_an_explicit_flush() -> None:
    with _json_logger() as (logger, stream):
        access = AccessLog(Metrics([PATH]), logger)

        async def then_flush() -> str:
            access.observe(_request("last"), Response(200, outcome=0), 0.001)
            access.flush()  # as the exit hook does when the loop stopped before the turn's end
            return stream.getvalue()

        assert orjson.loads(asyncio.run(then_flush()))["request_id"] == "last"


def test_any_other_logging_set_up_gets_an_ordinary_record(caplog: pytest.LogCaptureFixture) -> None:
    access = AccessLog(Metrics([PATH]))  # the real access logger, propagating to pytest's capture
    caplog.set_level(logging.INFO, logger="ordercancel.access")

    access.observe(_request("captured", key_id=None), Response(401, outcome=401), 0.002)

    [record] = [r for r in caplog.records if r.name == "ordercancel.access"]
    assert record.getMessage() == "request"
    assert record.fields["request_id"] == "captured"  # type: ignore[attr-defined]
    assert (record.fields["status"], record.fields["key_id"]) == (401, None)  # type: ignore[attr-defined]


def test_nothing_is_built_or_written_above_info() -> None:
    with _json_logger(logging.WARNING) as (logger, stream):
        access = AccessLog(Metrics([PATH]), logger)

        access.observe(_request("quiet"), Response(200, outcome=0), 0.001)
        access.flush()

        assert stream.getvalue() == ""
