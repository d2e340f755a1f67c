"""BCB SGS series JSON: ``[{"data": "dd/mm/yyyy", "valor": "11.75"}, ...]`` -> daily observations.

Both the API's bare array and the ``{"data": [...]}`` wrapper are read. Values are strings with a decimal
point (as the SGS JSON API writes them); numbers are accepted too, a decimal comma is INVALID_FORMAT.
The document names neither its series nor its unit: they come from ``series_id``/``unit`` or from the file
name through ``KNOWN_SERIES`` (``bcb_sgs_selic.json``, ``bcb_sgs_432.json``). An unknown series read with an
explicit ``series_id`` but no unit gets the unit "unspecified" (the feed does not say, so neither do we).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import date
from decimal import Decimal

from services.ingestion.formats.jsondoc import element_raw, load_json
from services.ingestion.formats.outcome import Outcome, Parsed, ParseError, Source, file_error, source_name
from services.ingestion.formats.values import ValueProblem, parse_decimal
from services.ingestion.records import ExternalObservation
from services.ingestion.validation import ReasonCode, Violation, validate

__all__ = ["KNOWN_SERIES", "SOURCE", "read_sgs", "series_from_filename"]

SOURCE = "BCB SGS"
KNOWN_SERIES: dict[str, tuple[str, str]] = {
    # SGS 432: SELIC target rate set by Copom, % a year, one value per calendar day.
    "selic": ("selic.target_pct_year", "% a.a."),
    "432": ("selic.target_pct_year", "% a.a."),
}
"""File-name key -> (series id, unit)."""

_NAME = re.compile(r"sgs[_-]([a-z0-9]+)", re.IGNORECASE)
_BR_DATE = re.compile(r"(\d{2})/(\d{2})/(\d{4})", re.ASCII)


def series_from_filename(filename: str) -> tuple[str, str] | None:
    """ "bcb_sgs_selic.json" -> ("selic.target_pct_year", "% a.a.")."""
    match = _NAME.search(filename)
    return KNOWN_SERIES.get(match.group(1).lower()) if match else None


def read_sgs(
    source: Source, *, series_id: str | None = None, unit: str | None = None, filename: str | None = None
) -> Iterator[Outcome]:
    """Yield one observation per element (line number = 1-based position in the array)."""
    known = series_from_filename(filename or source_name(source))
    if series_id is None and known is None:
        yield file_error(
            "series_id", ReasonCode.REQUIRED, "series id not given and not known from the file name"
        )
        return
    if series_id is None and known is not None:
        series_id, unit = known[0], unit or known[1]
    elif unit is None:
        unit = known[1] if known is not None and known[0] == series_id else "unspecified"
    yield from _read(source, str(series_id), str(unit))


def _read(source: Source, series_id: str, unit: str) -> Iterator[Outcome]:
    document = load_json(source)
    if isinstance(document, ParseError):
        yield document
        return
    items = document.get("data") if isinstance(document, dict) else document
    if not isinstance(items, list):
        yield file_error("data", ReasonCode.INVALID_SCHEMA, 'expected an array of {"data", "valor"} objects')
        return
    for line_no, element in enumerate(items, start=1):
        raw = element_raw(element)
        if not isinstance(element, dict):
            yield file_error("data", ReasonCode.INVALID_FORMAT, "expected an object", line_no, raw)
            continue
        problems: list[Violation] = []
        day = None
        text = element.get("data")
        match = _BR_DATE.fullmatch(text) if isinstance(text, str) else None
        if match is None:
            problems.append(
                Violation("data.data", ReasonCode.INVALID_FORMAT, f"{text!r} is not a date dd/mm/yyyy")
            )
        else:
            d, m, y = (int(g) for g in match.groups())
            try:
                day = date(y, m, d)
            except ValueError:
                problems.append(
                    Violation("data.data", ReasonCode.INVALID_FORMAT, f"{text!r} is not a calendar date")
                )
        value = None
        raw_value = element.get("valor")
        if raw_value is None or (isinstance(raw_value, str) and not raw_value.strip()):
            problems.append(Violation("data.valor", ReasonCode.REQUIRED, "no value"))
        elif isinstance(raw_value, str):
            try:
                value = parse_decimal(raw_value, ".")
            except ValueProblem as problem:
                problems.append(Violation("data.valor", problem.reason, problem.description))
        elif isinstance(raw_value, Decimal | int) and not isinstance(raw_value, bool):
            value = Decimal(raw_value)
        else:
            problems.append(
                Violation("data.valor", ReasonCode.INVALID_FORMAT, f"expected a number, got {raw_value!r}")
            )
        if problems or day is None or value is None:
            yield ParseError.of(line_no, problems, raw)
            continue
        record = ExternalObservation(series_id, day, value, unit, SOURCE)
        problems = validate(record)
        yield ParseError.of(line_no, problems, raw) if problems else Parsed(line_no, record)
