"""Loading one JSON document for the public-feed readers.

The feeds are single JSON documents of at most a few MB (PTAX: 3 MB, Open-Meteo: 2.5 MB per city), and the
standard library has no incremental parser, so a document is loaded whole (bounded by ``MAX_JSON_BYTES``);
the readers then walk it element by element. Numbers are read as ``Decimal`` (exact quotes and rates);
NaN/Infinity tokens are refused.
"""

from __future__ import annotations

import json
from decimal import Decimal

from services.ingestion.formats.outcome import MAX_RAW, ParseError, Source, file_error, open_binary
from services.ingestion.validation import ReasonCode

__all__ = ["MAX_JSON_BYTES", "element_raw", "load_json"]

MAX_JSON_BYTES = 64 * 1024 * 1024
"""A feed document larger than this is refused rather than loaded (the real ones are 20x smaller)."""


def _refuse_constant(name: str) -> object:
    raise ValueError(f"{name} is not a number")


def load_json(source: Source) -> object | ParseError:
    """The parsed document, or a ``ParseError`` on line 0 naming why the file cannot be read."""
    with open_binary(source) as handle:
        data = handle.read(MAX_JSON_BYTES + 1)
    if len(data) > MAX_JSON_BYTES:
        return file_error(
            "file", ReasonCode.OUT_OF_RANGE, f"JSON document larger than {MAX_JSON_BYTES} bytes"
        )
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        return file_error("file", ReasonCode.INVALID_FORMAT, f"not UTF-8 at byte {exc.start}")
    try:
        return json.loads(text, parse_float=Decimal, parse_constant=_refuse_constant)
    except json.JSONDecodeError as exc:
        return file_error(
            "file",
            ReasonCode.INVALID_FORMAT,
            f"invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}",
        )
    except (ValueError, RecursionError) as exc:
        return file_error("file", ReasonCode.INVALID_FORMAT, f"invalid JSON: {exc}")


def element_raw(element: object) -> str:
    """A short JSON rendering of one element, kept with its error."""
    try:
        return json.dumps(element, default=str, ensure_ascii=False)[:MAX_RAW]
    except (ValueError, RecursionError):
        return repr(element)[:MAX_RAW]
