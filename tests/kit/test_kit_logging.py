"""JSON log lines carry the request id and extra fields."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from services.kit.logging import configure_logging, request_id_var


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    buffer = io.StringIO()
    root = logging.getLogger()
    level = root.level
    handler = configure_logging("DEBUG", stream=buffer)
    try:
        yield buffer
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_json_line_with_request_id_and_extra(stream: io.StringIO) -> None:
    token = request_id_var.set("req-1")
    try:
        logging.getLogger("nova.test").info("loaded %d rows", 3, extra={"batch_id": "b-9", "rows": 3})
    finally:
        request_id_var.reset(token)
    logging.getLogger("nova.test").warning("outside")
    first, second = lines(stream)
    assert first["msg"] == "loaded 3 rows" and first["level"] == "INFO" and first["logger"] == "nova.test"
    assert (first["request_id"], first["batch_id"], first["rows"]) == ("req-1", "b-9", 3)
    assert str(first["ts"]).endswith("+00:00")
    assert second["request_id"] is None


def test_exception_adds_traceback(stream: io.StringIO) -> None:
    try:
        raise ValueError("bad row")
    except ValueError:
        logging.getLogger("nova.test").exception("failed")
    [entry] = lines(stream)
    assert "ValueError: bad row" in str(entry["exc"]) and entry["level"] == "ERROR"


def test_configure_is_idempotent(stream: io.StringIO) -> None:
    configure_logging("INFO", stream=stream)
    logging.getLogger("nova.test").info("once")
    logging.getLogger("nova.test").debug("filtered")
    assert [e["msg"] for e in lines(stream)] == ["once"]
