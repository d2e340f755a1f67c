"""IBGE SIDRA JSON (``/values`` API): an array whose first element is the header row -> monthly observations.

The first element maps column codes to titles ({"V": "Valor", "D3C": "Mês (Código)", ...}); it is
``Skipped`` as line 0, so the first month is line 1 (a response requested without header starts at line 1
too). Each month yields one observation dated on the first day of the month (D3C = YYYYMM), unit from MN.
Only the national level (NC = 1, Brasil) and the variables of ``VARIABLES`` are read. SIDRA's symbols:
"-" is a true zero (IBGE's convention) and is read as 0; "..", "..." and "X" (not applicable, not available,
suppressed) are REQUIRED errors, since there is no value to keep.
"""

from __future__ import annotations

from collections.abc import Iterator
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
)
from services.ingestion.formats.values import ValueProblem, parse_decimal, parse_yyyymm
from services.ingestion.records import ExternalObservation
from services.ingestion.validation import ReasonCode, Violation, validate

__all__ = ["SOURCE", "VARIABLES", "read_sidra"]

SOURCE = "IBGE SIDRA"
VARIABLES: dict[str, str] = {
    "63": "ipca.monthly_pct",  # IPCA - variação mensal
    "69": "ipca.ytd_pct",  # IPCA - variação acumulada no ano
    "2265": "ipca.12m_pct",  # IPCA - variação acumulada em 12 meses
    "2266": "ipca.index",  # IPCA - número-índice (dez 1993 = 100)
}
"""SIDRA variable code (D2C) -> series id."""

_NOT_AVAILABLE = {"..": "not applicable", "...": "not available", "X": "suppressed"}


def _is_header(element: object) -> bool:
    return isinstance(element, dict) and element.get("V") == "Valor"


def read_sidra(source: Source) -> Iterator[Outcome]:
    """Yield one observation per month of a SIDRA values response."""
    document = load_json(source)
    if isinstance(document, ParseError):
        yield document
        return
    if not isinstance(document, list):
        yield file_error("file", ReasonCode.INVALID_SCHEMA, "expected an array of SIDRA rows")
        return
    start = 1
    if document and _is_header(document[0]):
        yield Skipped(0, SkipReason.HEADER, "SIDRA header row")
        start = 0
    for position, element in enumerate(document):
        if position == 0 and start == 0:
            continue
        line_no = position + start
        yield _row(line_no, element)


def _row(line_no: int, element: object) -> Outcome:
    raw = element_raw(element)
    if not isinstance(element, dict):
        return file_error("row", ReasonCode.INVALID_FORMAT, "expected an object", line_no, raw)
    problems: list[Violation] = []
    level = element.get("NC")
    if level != "1":
        problems.append(
            Violation("row.NC", ReasonCode.UNKNOWN_VALUE, f"territorial level {level!r}: only 1 (Brasil)")
        )
    variable = element.get("D2C")
    series_id = VARIABLES.get(variable) if isinstance(variable, str) else None
    if series_id is None:
        problems.append(Violation("row.D2C", ReasonCode.UNKNOWN_VALUE, f"variable {variable!r} is not read"))
    month = None
    month_text = element.get("D3C")
    try:
        month = parse_yyyymm(month_text) if isinstance(month_text, str) else None
    except ValueProblem as problem:
        problems.append(Violation("row.D3C", problem.reason, problem.description))
    else:
        if month is None:
            problems.append(Violation("row.D3C", ReasonCode.REQUIRED, "month code missing"))
    unit = element.get("MN")
    if not isinstance(unit, str) or not unit.strip():
        problems.append(Violation("row.MN", ReasonCode.REQUIRED, "unit missing"))
    value = None
    text = element.get("V")
    if not isinstance(text, str) or not text.strip():
        problems.append(Violation("row.V", ReasonCode.REQUIRED, "no value"))
    elif text.strip() == "-":
        value = Decimal(0)
    elif text.strip() in _NOT_AVAILABLE:
        problems.append(
            Violation("row.V", ReasonCode.REQUIRED, f"value {_NOT_AVAILABLE[text.strip()]} ({text!r})")
        )
    else:
        try:
            value = parse_decimal(text, ".")
        except ValueProblem as problem:
            problems.append(Violation("row.V", problem.reason, problem.description))
    if problems or series_id is None or month is None or value is None or not isinstance(unit, str):
        return ParseError.of(line_no, problems, raw)
    record = ExternalObservation(series_id, month, value, unit.strip(), SOURCE)
    problems = validate(record)
    return ParseError.of(line_no, problems, raw) if problems else Parsed(line_no, record)
