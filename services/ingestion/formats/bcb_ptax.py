"""BCB PTAX quotes: the OData ``CotacaoMoedaPeriodo`` response -> daily closing quotes.

The response lists several bulletins a day (Abertura, Intermediário x3, Fechamento). The PTAX rate of a day
is its closing bulletin, so each day yields two observations, ``ptax.<ccy>.sell`` (cotacaoVenda) and
``ptax.<ccy>.buy`` (cotacaoCompra), in BRL per unit of the currency. Intraday bulletins are ``Skipped``.
A day can carry two closings (2025-04-23: republished 7 ms apart, same values): the latest one is kept and
the other is ``Skipped``. A day without a closing (the last day of a file fetched at noon) yields nothing.

The response does not name its currency: it comes from the ``currency`` argument or the file name
(``bcb_ptax_usd.json``). Each element's line number is its 1-based position in ``value``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import date, datetime
from decimal import Decimal

from services.ingestion.formats.jsondoc import element_raw, load_json
from services.ingestion.formats.outcome import (
    Outcome,
    Parsed,
    ParseError,
    Skipped,
    SkipReason,
    Source,
    file_error,
    source_name,
)
from services.ingestion.records import ExternalObservation
from services.ingestion.validation import ReasonCode, Violation, validate

__all__ = ["CLOSING", "SOURCE", "currency_from_filename", "read_ptax"]

SOURCE = "BCB PTAX"
CLOSING = "Fechamento"
_BULLETINS = frozenset({"Abertura", "Intermediário", CLOSING})
_TIMESTAMP = re.compile(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}(\.\d{1,6})?", re.ASCII)
_CURRENCY = re.compile(r"ptax[_-]([a-z]{3})\b", re.IGNORECASE)
_QUOTE_MAX = Decimal(1000)  # BRL per unit; far above any real quote, below any typo of a decimal point


def currency_from_filename(filename: str) -> str | None:
    """ "bcb_ptax_usd.json" -> "usd"."""
    match = _CURRENCY.search(filename)
    return match.group(1).lower() if match else None


def _quote(element: dict[str, object], name: str, problems: list[Violation]) -> Decimal | None:
    value = element.get(name)
    if value is None:
        problems.append(Violation(f"value.{name}", ReasonCode.REQUIRED, "required"))
        return None
    if isinstance(value, bool) or not isinstance(value, Decimal | int):
        problems.append(
            Violation(f"value.{name}", ReasonCode.INVALID_FORMAT, f"expected a number, got {value!r}")
        )
        return None
    quote = Decimal(value)
    if not 0 < quote < _QUOTE_MAX:
        problems.append(
            Violation(f"value.{name}", ReasonCode.OUT_OF_RANGE, f"{quote} BRL is not a plausible quote")
        )
        return None
    return quote


def read_ptax(
    source: Source, *, currency: str | None = None, filename: str | None = None
) -> Iterator[Outcome]:
    """Yield the daily closing quotes of one PTAX response (see the module docstring)."""
    code = (currency or currency_from_filename(filename or source_name(source)) or "").lower()
    if not re.fullmatch(r"[a-z]{3}", code):
        yield file_error("currency", ReasonCode.REQUIRED, "currency not given and not in the file name")
        return
    document = load_json(source)
    if isinstance(document, ParseError):
        yield document
        return
    values = document.get("value") if isinstance(document, dict) else None
    if not isinstance(values, list):
        yield file_error("value", ReasonCode.INVALID_SCHEMA, 'expected an OData object with a "value" array')
        return
    # day -> (timestamp, line_no, sell, buy) of the latest closing seen; a few thousand small entries.
    closings: dict[date, tuple[datetime, int, Decimal, Decimal]] = {}
    for line_no, element in enumerate(values, start=1):
        if not isinstance(element, dict):
            yield file_error(
                "value", ReasonCode.INVALID_FORMAT, "expected an object", line_no, element_raw(element)
            )
            continue
        problems: list[Violation] = []
        bulletin = element.get("tipoBoletim")
        if not isinstance(bulletin, str) or bulletin not in _BULLETINS:
            problems.append(
                Violation(
                    "value.tipoBoletim", ReasonCode.UNKNOWN_VALUE, f"{bulletin!r} is not a PTAX bulletin"
                )
            )
        stamp_text = element.get("dataHoraCotacao")
        stamp = None
        if not isinstance(stamp_text, str) or not _TIMESTAMP.fullmatch(stamp_text):
            problems.append(
                Violation(
                    "value.dataHoraCotacao",
                    ReasonCode.INVALID_FORMAT,
                    f"{stamp_text!r} is not a timestamp like 2025-04-23 13:06:30.443",
                )
            )
        else:
            try:
                stamp = datetime.fromisoformat(stamp_text)
            except ValueError:
                problems.append(
                    Violation(
                        "value.dataHoraCotacao", ReasonCode.INVALID_FORMAT, f"{stamp_text!r} is not a date"
                    )
                )
        sell = _quote(element, "cotacaoVenda", problems)
        buy = _quote(element, "cotacaoCompra", problems)
        if problems or stamp is None or sell is None or buy is None:
            yield ParseError.of(line_no, problems, element_raw(element))
            continue
        if bulletin != CLOSING:
            yield Skipped(
                line_no,
                SkipReason.NOT_CLOSING_BULLETIN,
                f"{bulletin} bulletin; the day's rate is the closing",
            )
            continue
        day = stamp.date()
        earlier = closings.get(day)
        if earlier is not None:
            kept, dropped = ((stamp, line_no, sell, buy), earlier) if stamp >= earlier[0] else (earlier, None)
            if dropped is None:
                yield Skipped(line_no, SkipReason.SUPERSEDED_CLOSING, f"a later closing of {day} is kept")
                continue
            yield Skipped(
                dropped[1], SkipReason.SUPERSEDED_CLOSING, f"closing of {day} republished on line {line_no}"
            )
            closings[day] = kept
        else:
            closings[day] = (stamp, line_no, sell, buy)
    for day in sorted(closings):
        _, line_no, sell, buy = closings[day]
        for side, value in (("sell", sell), ("buy", buy)):
            record = ExternalObservation(f"ptax.{code}.{side}", day, value, f"BRL/{code.upper()}", SOURCE)
            problems = validate(record)
            yield ParseError.of(line_no, problems, "") if problems else Parsed(line_no, record)
