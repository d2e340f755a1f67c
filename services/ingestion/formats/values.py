"""Strict parsing of the text values found in files: numbers, dates, timestamps.

Each parser accepts exactly the spellings it documents and raises ``ValueProblem`` (with a reason code)
for anything else, so a reader can turn it into a violation naming the field. Nothing is guessed: "11,650"
in a file whose decimal separator is "." is an error, not eleven thousand.
"""

from __future__ import annotations

import re
from datetime import date, datetime
from decimal import Decimal, InvalidOperation

from services.ingestion.validation import ReasonCode

__all__ = [
    "ValueProblem",
    "parse_br_or_iso_date",
    "parse_decimal",
    "parse_iso_date",
    "parse_iso_datetime",
    "parse_yyyymm",
]

_DOT_NUMBER = re.compile(r"[+-]?(\d+(\.\d+)?|\.\d+)([eE][+-]?\d{1,3})?", re.ASCII)
# pt-BR: "1643,4", "11650", "11.650", "1.234.567,89": dots only as full thousands groups.
_COMMA_NUMBER = re.compile(r"[+-]?(\d{1,3}(\.\d{3})+|\d+)(,\d+)?", re.ASCII)
_ISO_DATE = re.compile(r"(\d{4})-(\d{2})-(\d{2})", re.ASCII)
_BR_DATE = re.compile(r"(\d{2})/(\d{2})/(\d{4})", re.ASCII)
# Excel's pt-BR CSV writes midnight date cells with a time when the cell format has one.
_BR_DATETIME_MIDNIGHT = re.compile(r"(\d{2})/(\d{2})/(\d{4}) 00:00(:00)?", re.ASCII)
_ISO_DATETIME = re.compile(
    r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?(Z|[+-]\d{2}:\d{2})?", re.ASCII
)
_YYYYMM = re.compile(r"(\d{4})(\d{2})", re.ASCII)


class ValueProblem(ValueError):
    """A value that cannot be read; ``reason`` says how it fails."""

    def __init__(self, reason: ReasonCode, description: str) -> None:
        super().__init__(description)
        self.reason = reason
        self.description = description


def _excerpt(text: str) -> str:
    return repr(text if len(text) <= 40 else text[:40] + "...")


def parse_decimal(text: str, decimal_separator: str = ".") -> Decimal:
    """A decimal number written with ``decimal_separator`` ("." or ",").

    With "." no thousands separator is allowed (so "11,650" fails); with "," the dot is accepted only as
    groups of three digits ("11.650" is 11650, "1.5" fails). Exponents only with ".". No NaN, no Infinity.
    """
    value = text.strip()
    if decimal_separator == ".":
        if not _DOT_NUMBER.fullmatch(value):
            raise ValueProblem(ReasonCode.INVALID_FORMAT, f"{_excerpt(text)} is not a number like 1234.5")
        normalised = value
    elif decimal_separator == ",":
        if not _COMMA_NUMBER.fullmatch(value):
            raise ValueProblem(ReasonCode.INVALID_FORMAT, f"{_excerpt(text)} is not a number like 1.234,5")
        normalised = value.replace(".", "").replace(",", ".")
    else:
        raise ValueError(f"unsupported decimal separator {decimal_separator!r}")
    try:
        return Decimal(normalised)
    except InvalidOperation as exc:  # unreachable with the patterns above; kept as a guard
        raise ValueProblem(ReasonCode.INVALID_FORMAT, f"{_excerpt(text)} is not a number") from exc


def _date(year: int, month: int, day: int, text: str) -> date:
    try:
        return date(year, month, day)
    except ValueError as exc:
        raise ValueProblem(ReasonCode.INVALID_FORMAT, f"{_excerpt(text)} is not a calendar date") from exc


def parse_iso_date(text: str) -> date:
    """YYYY-MM-DD only."""
    match = _ISO_DATE.fullmatch(text.strip())
    if not match:
        raise ValueProblem(ReasonCode.INVALID_FORMAT, f"{_excerpt(text)} is not a date like 2025-03-31")
    y, m, d = (int(g) for g in match.groups())
    return _date(y, m, d, text)


def parse_br_or_iso_date(text: str) -> date:
    """DD/MM/YYYY (Brazilian; MM/DD is never accepted), DD/MM/YYYY 00:00[:00], or YYYY-MM-DD."""
    value = text.strip()
    match = _BR_DATE.fullmatch(value) or _BR_DATETIME_MIDNIGHT.fullmatch(value)
    if match:
        d, m, y = (int(g) for g in match.groups()[:3])
        return _date(y, m, d, text)
    if _ISO_DATE.fullmatch(value):
        return parse_iso_date(value)
    raise ValueProblem(
        ReasonCode.INVALID_FORMAT, f"{_excerpt(text)} is not a date like 31/03/2025 or 2025-03-31"
    )


def parse_iso_datetime(text: str) -> datetime:
    """ISO 8601 timestamp (date, time, optional fraction, optional Z/offset)."""
    value = text.strip()
    if not _ISO_DATETIME.fullmatch(value):
        raise ValueProblem(
            ReasonCode.INVALID_FORMAT, f"{_excerpt(text)} is not a timestamp like 2025-03-31T14:00:00-03:00"
        )
    try:
        return datetime.fromisoformat(value)
    except ValueError as exc:
        raise ValueProblem(ReasonCode.INVALID_FORMAT, f"{_excerpt(text)} is not a valid timestamp") from exc


def parse_yyyymm(text: str) -> date:
    """YYYYMM (IBGE month code) -> first day of that month."""
    match = _YYYYMM.fullmatch(text.strip())
    if not match:
        raise ValueProblem(ReasonCode.INVALID_FORMAT, f"{_excerpt(text)} is not a month like 202501")
    return _date(int(match.group(1)), int(match.group(2)), 1, text)
