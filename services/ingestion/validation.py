"""Record validation: ``validate(record)`` lists every violation, each naming its field.

A violation rejects the record. Things that are odd but real (negative lead times, a site "N/A", a quantity
of 11,650) are not violations: they are ``ConsumptionFlag``s set by ``quality_flags`` on an accepted record.

Field paths are ``<record_type>.<field>`` (``consumption.quantity``); a caller that validates a batch adds the
position with ``at_index`` (``records[12].consumption.quantity``).

Reason codes (``ReasonCode``), stable strings sent to clients:

=================  =======================================================================================
REQUIRED           a required value is missing (empty, or "N/A" where the column does not allow it)
INVALID_FORMAT     the value cannot be read as the expected type (number, date, code, encoding, JSON)
OUT_OF_RANGE       readable but outside the allowed range (quantity <= 0, date before 2000, too long)
UNKNOWN_UNIT       the unit is not in ``units.UNITS`` (never guessed)
UNKNOWN_VALUE      not one of the allowed values of an enumeration (site type, movement kind, flag)
INCONSISTENT       fields contradict each other (received before placed, transfer to the same site)
INCOMPLETE         an aggregate lacks inputs (a day of hourly weather with missing hours)
INVALID_SCHEMA     the file's header or structure does not match the format (missing or unknown column)
=================  =======================================================================================
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from datetime import date, datetime
from decimal import Decimal
from enum import StrEnum

from services.ingestion.records import (
    Consumption,
    ConsumptionFlag,
    Criticality,
    ExternalObservation,
    Material,
    MovementKind,
    PurchaseOrder,
    Record,
    Site,
    SiteType,
    StockMovement,
    StockSnapshot,
    Supplier,
)
from services.ingestion.units import UNITS, is_service_unit

__all__ = [
    "BRAZILIAN_STATES",
    "MAX_DATE",
    "MAX_MAGNITUDE",
    "MIN_DATE",
    "OUTLIER_QUANTITY",
    "ReasonCode",
    "Violation",
    "at_index",
    "consumption_field_valid",
    "field_path",
    "line_flags",
    "quality_flags",
    "validate",
]


class ReasonCode(StrEnum):
    """Why a field was rejected (see the module docstring)."""

    REQUIRED = "REQUIRED"
    INVALID_FORMAT = "INVALID_FORMAT"
    OUT_OF_RANGE = "OUT_OF_RANGE"
    UNKNOWN_UNIT = "UNKNOWN_UNIT"
    UNKNOWN_VALUE = "UNKNOWN_VALUE"
    INCONSISTENT = "INCONSISTENT"
    INCOMPLETE = "INCOMPLETE"
    INVALID_SCHEMA = "INVALID_SCHEMA"


@dataclass(frozen=True, slots=True)
class Violation:
    """One rejected field."""

    field_path: str
    reason_code: ReasonCode
    description: str


BRAZILIAN_STATES: frozenset[str] = frozenset(
    "AC AL AP AM BA CE DF ES GO MA MT MS MG PA PB PR PE PI RJ RN RS RO RR SC SP SE TO".split()
)
"""The 27 federative units; a site's ``region`` is one of them or empty."""

MIN_DATE = date(2000, 1, 1)
MAX_DATE = date(2100, 12, 31)
"""Dates outside this window are typing errors (a year 0205 or 2205), not history."""

OUTLIER_QUANTITY = Decimal(10_000)
"""A requisition line above this quantity is flagged ``quantity_outlier`` (not rejected).

A static bound because a reader sees one line at a time; per-material outlier detection needs the history and
belongs to analytics. In the export it flags exactly one line: 11,650 UN of 40 mm HDPE subduct, plausible for
a fibre job (subduct is bought by the metre but recorded in UN), so rejecting it would lose real demand.
"""

MAX_MAGNITUDE = Decimal("1e11")
"""No quantity or value is this large (it is rejected from here up). The bound sits inside what the read
models can hold: analytics stores quantities as DECIMAL(18, 6), whose largest value is just under 1e12, and a
record it could not store would stop its whole batch from being applied there. A factor of ten below that
limit, rounding a decimal to a double on the wire can never carry a value over it."""

_MAX_TEXT = 200
_CODE = re.compile(r"[0-9A-Za-zÀ-ÿ][0-9A-Za-zÀ-ÿ .,/_#&()'+-]*")
_SERIES_ID = re.compile(r"[a-z0-9_]+(\.[a-z0-9_]+)+")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def field_path(*parts: str) -> str:
    """Join path parts with dots: field_path("consumption", "quantity") == "consumption.quantity"."""
    return ".".join(p for p in parts if p)


def at_index(violations: Iterable[Violation], index: int, collection: str = "records") -> list[Violation]:
    """Prefix each path with the record's position: ``records[12].consumption.quantity``."""
    return [replace(v, field_path=f"{collection}[{index}].{v.field_path}") for v in violations]


class _Checker:
    """Collects the violations of one record; the small methods keep ``validate`` declarative."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.violations: list[Violation] = []

    def add(self, name: str, reason: ReasonCode, description: str) -> None:
        self.violations.append(Violation(field_path(self.prefix, name), reason, description))

    def text(self, name: str, value: object, *, required: bool = True, code: bool = False) -> None:
        if not isinstance(value, str):
            self.add(name, ReasonCode.INVALID_FORMAT, f"expected text, got {type(value).__name__}")
            return
        if not value.strip():
            if required:
                self.add(name, ReasonCode.REQUIRED, "required")
            return
        if value != value.strip():
            self.add(name, ReasonCode.INVALID_FORMAT, "leading or trailing whitespace")
        elif _CONTROL.search(value):
            self.add(name, ReasonCode.INVALID_FORMAT, "control characters are not allowed")
        elif len(value) > _MAX_TEXT:
            self.add(name, ReasonCode.OUT_OF_RANGE, f"longer than {_MAX_TEXT} characters")
        elif code and not _CODE.fullmatch(value):
            self.add(name, ReasonCode.INVALID_FORMAT, f"{value!r} is not a valid code")

    def choice(self, name: str, value: object, allowed: type[StrEnum]) -> None:
        if not isinstance(value, str) or value not in {m.value for m in allowed}:
            options = ", ".join(m.value for m in allowed)
            self.add(name, ReasonCode.UNKNOWN_VALUE, f"{value!r} is not one of: {options}")

    def unit(self, name: str, value: object) -> None:
        # Records carry canonical codes: aliases are resolved by the readers, so "MT" here is an error.
        if not isinstance(value, str) or not value:
            self.add(name, ReasonCode.REQUIRED, "required")
        elif value not in UNITS:
            self.add(name, ReasonCode.UNKNOWN_UNIT, f"{value!r} is not a known canonical unit")

    def number(
        self,
        name: str,
        value: object,
        *,
        positive: bool = False,
        non_negative: bool = False,
        non_zero: bool = False,
    ) -> bool:
        if isinstance(value, bool) or not isinstance(value, Decimal | int | float):
            self.add(name, ReasonCode.INVALID_FORMAT, f"expected a number, got {type(value).__name__}")
            return False
        finite = value.is_finite() if isinstance(value, Decimal) else math.isfinite(value)
        if not finite:
            self.add(name, ReasonCode.OUT_OF_RANGE, "must be finite")
            return False
        number = value if isinstance(value, Decimal) else Decimal(value)
        if abs(number) >= MAX_MAGNITUDE:
            self.add(name, ReasonCode.OUT_OF_RANGE, f"magnitude of {MAX_MAGNITUDE:.0e} or more")
            return False
        if positive and number <= 0:
            self.add(name, ReasonCode.OUT_OF_RANGE, f"must be positive, got {value}")
            return False
        if non_negative and number < 0:
            self.add(name, ReasonCode.OUT_OF_RANGE, f"must be zero or positive, got {value}")
            return False
        if non_zero and number == 0:
            self.add(name, ReasonCode.OUT_OF_RANGE, "must not be zero")
            return False
        return True

    def day(self, name: str, value: object, *, required: bool = True) -> bool:
        if value is None:
            if required:
                self.add(name, ReasonCode.REQUIRED, "required")
            return False
        if isinstance(value, datetime) or not isinstance(value, date):
            self.add(name, ReasonCode.INVALID_FORMAT, f"expected a date, got {type(value).__name__}")
            return False
        if not MIN_DATE <= value <= MAX_DATE:
            self.add(name, ReasonCode.OUT_OF_RANGE, f"{value} is outside {MIN_DATE}..{MAX_DATE}")
            return False
        return True


def _material(r: Material, c: _Checker) -> None:
    c.text("code", r.code, code=True)
    c.text("name", r.name)
    c.text("family", r.family)
    c.unit("unit", r.unit)
    c.choice("criticality", r.criticality, Criticality)
    if r.abc_class not in ("", "A", "B", "C"):
        c.add("abc_class", ReasonCode.UNKNOWN_VALUE, f"{r.abc_class!r} is not one of: A, B, C or empty")
    if r.unit_cost_brl is not None:  # None is an unknown cost, not a zero one
        c.number("unit_cost_brl", r.unit_cost_brl, non_negative=True)
    if not isinstance(r.stocked, bool):
        c.add("stocked", ReasonCode.INVALID_FORMAT, "expected true or false")
    elif r.stocked and isinstance(r.unit, str) and is_service_unit(r.unit):
        c.add(
            "stocked", ReasonCode.INCONSISTENT, f"a material counted in service unit {r.unit} is not stocked"
        )


def _site(r: Site, c: _Checker) -> None:
    c.text("code", r.code, code=True)
    c.text("client", r.client, required=False)
    if not isinstance(r.region, str):
        c.add("region", ReasonCode.INVALID_FORMAT, f"expected text, got {type(r.region).__name__}")
    elif r.region and r.region not in BRAZILIAN_STATES:
        c.add("region", ReasonCode.UNKNOWN_VALUE, f"{r.region!r} is not a Brazilian state (UF) code")
    c.choice("site_type", r.site_type, SiteType)
    c.choice("criticality", r.criticality, Criticality)


def _supplier(r: Supplier, c: _Checker) -> None:
    c.text("code", r.code)
    c.text("name", r.name)


# The checks of a Consumption's own fields, in the order ``validate`` reports them. Each depends on its
# field's value only, which lets a reader check each distinct value of a column once
# (``consumption_field_valid``); the cross-field checks are in ``_consumption``.
_CONSUMPTION_FIELDS: dict[str, Callable[[_Checker, object], object]] = {
    "requisition_id": lambda c, v: c.text("requisition_id", v, code=True),
    "line_key": lambda c, v: c.text("line_key", v),
    "material_code": lambda c, v: c.text("material_code", v, code=True),
    "site_code": lambda c, v: c.text("site_code", v, code=True),
    "supplier_code": lambda c, v: c.text("supplier_code", v),
    "quantity": lambda c, v: c.number("quantity", v, positive=True),
    "unit": lambda c, v: c.unit("unit", v),
    "solicited_date": lambda c, v: c.day("solicited_date", v),
    "requested_date": lambda c, v: c.day("requested_date", v, required=False),
    "purchase_date": lambda c, v: c.day("purchase_date", v, required=False),
    "family": lambda c, v: c.text("family", v, required=False),
}


def _consumption(r: Consumption, c: _Checker) -> None:
    passed = {name: check(c, getattr(r, name)) for name, check in _CONSUMPTION_FIELDS.items()}
    # In the export DATA REQUISITADA is never after DATA SOLICITADO (it is the requisition's own date);
    # the other way round cannot happen. A purchase *before* solicitation can, and is only flagged.
    if passed["solicited_date"] and passed["requested_date"] and r.requested_date > r.solicited_date:  # type: ignore[operator]
        c.add(
            "requested_date",
            ReasonCode.INCONSISTENT,
            f"requisition date {r.requested_date} is after its solicitation date {r.solicited_date}",
        )
    if not isinstance(r.flags, tuple):
        c.add("flags", ReasonCode.INVALID_FORMAT, "expected a tuple of flags")
    else:
        for flag in r.flags:
            c.choice("flags", flag, ConsumptionFlag)


def consumption_field_valid(name: str, value: object) -> bool:
    """True when ``validate`` finds nothing wrong with ``value`` as the Consumption field ``name``.

    A Consumption whose every field passes, whose requested date is not after its solicited date and whose
    flags are ``ConsumptionFlag`` members is valid; a reader that caches this per distinct value checks a
    line in a few lookups, and calls ``validate`` only for a line that fails, to get its violations.
    """
    checker = _Checker("consumption")
    _CONSUMPTION_FIELDS[name](checker, value)
    return not checker.violations


def _stock_snapshot(r: StockSnapshot, c: _Checker) -> None:
    c.text("material_code", r.material_code, code=True)
    c.text("site_code", r.site_code, code=True)
    c.number("on_hand", r.on_hand, non_negative=True)
    c.day("as_of", r.as_of)


def _stock_movement(r: StockMovement, c: _Checker) -> None:
    c.text("reference", r.reference)
    c.choice("kind", r.kind, MovementKind)
    c.text("material_code", r.material_code, code=True)
    c.text("site_code", r.site_code, code=True)
    c.text("to_site_code", r.to_site_code, required=False, code=True)
    if r.kind == MovementKind.ADJUSTMENT:
        c.number("quantity", r.quantity, non_zero=True)
    else:
        c.number("quantity", r.quantity, positive=True)
    if not isinstance(r.at, datetime):
        c.add("at", ReasonCode.INVALID_FORMAT, f"expected a timestamp, got {type(r.at).__name__}")
    elif r.at.tzinfo is None or r.at.utcoffset() is None:
        c.add("at", ReasonCode.INVALID_FORMAT, "timestamp without a time zone")
    elif not MIN_DATE <= r.at.date() <= MAX_DATE:
        c.add("at", ReasonCode.OUT_OF_RANGE, f"{r.at} is outside {MIN_DATE}..{MAX_DATE}")
    if not isinstance(r.to_site_code, str) or not isinstance(r.site_code, str):
        return  # already reported by the text checks above
    if r.kind == MovementKind.TRANSFER:
        if not r.to_site_code:
            c.add("to_site_code", ReasonCode.REQUIRED, "required for transfers")
        elif r.to_site_code == r.site_code:
            c.add("to_site_code", ReasonCode.INCONSISTENT, "a transfer must go to another site")
    elif r.to_site_code:
        c.add("to_site_code", ReasonCode.INCONSISTENT, "only transfers have a destination site")


def _purchase_order(r: PurchaseOrder, c: _Checker) -> None:
    c.text("po_id", r.po_id, code=True)
    c.text("material_code", r.material_code, code=True)
    c.text("site_code", r.site_code, code=True)
    c.text("supplier_code", r.supplier_code)
    c.number("quantity", r.quantity, positive=True)
    placed = c.day("placed_date", r.placed_date)
    expected = c.day("expected_date", r.expected_date, required=False)
    received = c.day("received_date", r.received_date, required=False)
    # Unlike requisition lines (whose ERP dates are kept as they are, and flagged), a purchase order is our
    # own schema: a delivery promised or received before the order was placed is a data error.
    if placed and expected and r.expected_date < r.placed_date:  # type: ignore[operator]
        c.add("expected_date", ReasonCode.INCONSISTENT, "expected before the order was placed")
    if placed and received and r.received_date < r.placed_date:  # type: ignore[operator]
        c.add("received_date", ReasonCode.INCONSISTENT, "received before the order was placed")


def _external_observation(r: ExternalObservation, c: _Checker) -> None:
    if not isinstance(r.series_id, str) or not r.series_id:
        c.add("series_id", ReasonCode.REQUIRED, "required")
    elif not _SERIES_ID.fullmatch(r.series_id) or len(r.series_id) > _MAX_TEXT:
        c.add(
            "series_id",
            ReasonCode.INVALID_FORMAT,
            f"{r.series_id!r} is not a dotted lower-case id like 'weather.salvador.precipitation_mm'",
        )
    c.day("date", r.date)
    c.number("value", r.value)
    c.text("unit", r.unit)
    c.text("source", r.source)


_VALIDATORS: dict[type[Record], Callable[[object, _Checker], None]] = {
    Material: _material,  # type: ignore[dict-item]
    Site: _site,  # type: ignore[dict-item]
    Supplier: _supplier,  # type: ignore[dict-item]
    Consumption: _consumption,  # type: ignore[dict-item]
    StockSnapshot: _stock_snapshot,  # type: ignore[dict-item]
    StockMovement: _stock_movement,  # type: ignore[dict-item]
    PurchaseOrder: _purchase_order,  # type: ignore[dict-item]
    ExternalObservation: _external_observation,  # type: ignore[dict-item]
}


def validate(record: Record) -> list[Violation]:
    """Every violation of ``record`` (empty when it is valid). Paths start with the record type."""
    validator = _VALIDATORS.get(type(record))
    if validator is None:
        raise TypeError(f"not a record type: {type(record).__name__}")
    checker = _Checker(record.record_type)
    validator(record, checker)
    return checker.violations


def quality_flags(record: Consumption, *, stocked: bool | None = None) -> tuple[ConsumptionFlag, ...]:
    """The flags a requisition line deserves on its own (sorted, without duplicates).

    ``stocked`` is the material's ``stocked`` when the caller knows it; the unit alone already marks SR/VB/HR
    lines as services. Flags that need other lines (``unit_variant``, ``master_conflict``) are the reader's.
    """
    flags = set(record.flags)
    flags.update(
        line_flags(
            unit=record.unit,
            site_code=record.site_code,
            quantity=record.quantity,
            solicited_date=record.solicited_date,
            purchase_date=record.purchase_date,
            stocked=stocked,
        )
    )
    return tuple(sorted(flags))


def line_flags(
    *,
    unit: str,
    site_code: str,
    quantity: Decimal,
    solicited_date: date,
    purchase_date: date | None,
    stocked: bool | None,
) -> list[ConsumptionFlag]:
    """``quality_flags`` of a line from its fields, for a reader that has not built the record yet."""
    flags = []
    if stocked is False or is_service_unit(unit):
        flags.append(ConsumptionFlag.SERVICE)
    # A negative lead time: purchased before the solicitation (``Consumption.lead_time_days`` < 0).
    if purchase_date is not None and purchase_date < solicited_date:
        flags.append(ConsumptionFlag.NEGATIVE_LEAD_TIME)
    if site_code == "N/A":
        flags.append(ConsumptionFlag.UNKNOWN_SITE)
    if quantity > OUTLIER_QUANTITY:
        flags.append(ConsumptionFlag.QUANTITY_OUTLIER)
    return flags
