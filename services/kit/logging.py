"""JSON log lines on one stream, stamped with the request id of the call being served.

One line per record: ``{"ts", "level", "logger", "msg", "request_id", ...extra}``; ``extra={...}`` keywords of
a logging call become top-level fields, and an exception adds ``exc`` with the formatted traceback.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import re
import secrets
import sys
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import IO, Any

__all__ = ["JsonFormatter", "configure_logging", "new_request_id", "request_id_from", "request_id_var"]

request_id_var: ContextVar[str | None] = ContextVar("request_id", default=None)
"""Request id of the RPC (or message) being handled in this task; set by the request-id interceptor."""


class _RequestIds:
    """32 hex digits: 16 random ones drawn once per process, then a per-process counter, scrambled.

    Unique without a system call per id (``uuid4`` reads the OS random source on every call, and a server
    makes one id per call it serves): processes differ by their random half, ids of one process by the
    counter. The counter goes through a bijection of 64-bit integers (times a random odd number, xor a random
    mask), so ids stay distinct while a caller reading them cannot count the calls a replica serves. A
    forked child draws new random numbers, or it would repeat its parent's ids.
    """

    def __init__(self) -> None:
        self.reseed()
        os.register_at_fork(after_in_child=self.reseed)

    def reseed(self) -> None:
        self._prefix = secrets.token_hex(8)
        self._odd = secrets.randbits(64) | 1
        self._mask = secrets.randbits(64)
        self._counter = itertools.count(1)

    def __call__(self) -> str:
        return f"{self._prefix}{((next(self._counter) * self._odd) ^ self._mask) & _U64:016x}"


_U64 = (1 << 64) - 1


new_request_id = _RequestIds()
"""A fresh request id, for a call or message that arrived without one."""

_VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")


def request_id_from(incoming: str | None) -> str:
    """The caller's request id when it is a short token safe to log and echo, else a fresh one."""
    return incoming if incoming and _VALID_REQUEST_ID.match(incoming) else new_request_id()


# Attributes every LogRecord has; anything else on a record came from ``extra=`` and is emitted as a field.
_RECORD_ATTRS = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}


class _RequestIdFilter(logging.Filter):
    """Copies the request id onto the record when it is created, in the task that logged it."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = request_id_var.get()
        return True


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON object per line."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, tz=UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
            "request_id": getattr(record, "request_id", None) or request_id_var.get(),
        }
        for key, value in record.__dict__.items():
            if key not in _RECORD_ATTRS and key not in entry:
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exc"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        # default=str: an extra field that is not JSON-native (UUID, Path, datetime) is still logged.
        return json.dumps(entry, ensure_ascii=False, default=str)


def configure_logging(level: str | int = "INFO", *, stream: IO[str] | None = None) -> logging.Handler:
    """Send every log record to ``stream`` (stderr by default) as JSON lines at ``level``.

    Idempotent: a handler installed by an earlier call is replaced, other handlers (e.g. pytest's capture)
    are left alone. Returns the installed handler.
    """
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_nova_json", False):
            root.removeHandler(handler)
            handler.close()
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(_RequestIdFilter())
    handler._nova_json = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level.upper() if isinstance(level, str) else level)
    return handler
