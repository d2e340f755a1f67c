"""Records between the wire (novacorrente.ingestion.v1.Record) and the domain dataclasses.

Conversion checks what the wire types cannot: exactly one kind set, finite numbers, known enum
values. Field paths follow the proto ("consumption.quantity"); the caller prefixes the position.
"""

from __future__ import annotations

import datetime as dt
import math
import struct
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from novacorrente.common.v1 import common_pb2
from novacorrente.ingestion.v1 import records_pb2 as pb

from services.ingestion import records as dom
from services.ingestion.validation import ReasonCode, Violation
from services.ingestion.wire import length_delimited

__all__ = ["ConversionError", "consumption_payload", "record_from_proto", "record_payload", "record_to_proto"]


class ConversionError(Exception):
    def __init__(self, violations: list[Violation]) -> None:
        super().__init__("; ".join(f"{v.field_path}: {v.description}" for v in violations))
        self.violations = violations


_CRITICALITY = {
    common_pb2.CRITICALITY_UNSPECIFIED: dom.Criticality.UNKNOWN,
    common_pb2.CRITICALITY_LOW: dom.Criticality.LOW,
    common_pb2.CRITICALITY_MEDIUM: dom.Criticality.MEDIUM,
    common_pb2.CRITICALITY_HIGH: dom.Criticality.HIGH,
}
_SITE_TYPE = {
    common_pb2.SITE_TYPE_UNSPECIFIED: dom.SiteType.UNKNOWN,
    common_pb2.SITE_TYPE_TOWER: dom.SiteType.TOWER,
    common_pb2.SITE_TYPE_WAREHOUSE: dom.SiteType.WAREHOUSE,
    common_pb2.SITE_TYPE_OFFICE: dom.SiteType.OFFICE,
}
_MOVEMENT = {
    pb.MOVEMENT_KIND_RECEIPT: dom.MovementKind.RECEIPT,
    pb.MOVEMENT_KIND_ISSUE: dom.MovementKind.ISSUE,
    pb.MOVEMENT_KIND_TRANSFER: dom.MovementKind.TRANSFER,
    pb.MOVEMENT_KIND_ADJUSTMENT: dom.MovementKind.ADJUSTMENT,
}
_CRITICALITY_BACK = {v: k for k, v in _CRITICALITY.items()}
_SITE_TYPE_BACK = {v: k for k, v in _SITE_TYPE.items()}
_MOVEMENT_BACK = {v: k for k, v in _MOVEMENT.items()}
_FLAGS = {f.value: f for f in dom.ConsumptionFlag}


class _Reader:
    """Reads one proto message, collecting violations instead of stopping at the first."""

    def __init__(self, message: Any, path: str) -> None:
        self.m = message
        self.path = path
        self.violations: list[Violation] = []

    def bad(self, name: str, code: ReasonCode, text: str) -> None:
        self.violations.append(Violation(f"{self.path}.{name}", code, text))

    def text(self, name: str) -> str:
        return str(getattr(self.m, name)).strip()

    def number(self, name: str) -> Decimal:
        value = getattr(self.m, name)
        if not math.isfinite(value):
            self.bad(name, ReasonCode.OUT_OF_RANGE, "must be a finite number")
            return Decimal(0)
        return dom.decimal_from_float(value)

    def date(self, name: str, *, required: bool) -> dt.date | None:
        if not self.m.HasField(name):
            if required:
                self.bad(name, ReasonCode.REQUIRED, "required")
            return None
        d = getattr(self.m, name)
        try:
            return dt.date(d.year, d.month, d.day)
        except ValueError as exc:
            self.bad(name, ReasonCode.INVALID_FORMAT, f"not a calendar date ({exc})")
            return None

    def enum(self, name: str, table: Mapping[Any, Any], *, allow_unspecified: bool = True) -> Any:
        value = getattr(self.m, name)
        if value not in table:
            self.bad(name, ReasonCode.UNKNOWN_VALUE, f"unknown value {value}")
            return next(iter(table.values()))
        return table[value]


def _convert(kind: str, m: Any, r: _Reader) -> dom.Record:
    if kind == "material":
        return dom.Material(
            code=r.text("code"),
            name=r.text("name"),
            family=r.text("family"),
            unit=r.text("unit"),
            criticality=r.enum("criticality", _CRITICALITY),
            abc_class=r.text("abc_class"),
            stocked=m.stocked,
            # An unset cost stays unknown (None); a set 0.0 is a real zero cost.
            unit_cost_brl=r.number("unit_cost_brl") if m.HasField("unit_cost_brl") else None,
        )
    if kind == "site":
        return dom.Site(
            code=r.text("code"),
            client=r.text("client"),
            region=r.text("region"),
            site_type=r.enum("site_type", _SITE_TYPE),
            criticality=r.enum("criticality", _CRITICALITY),
        )
    if kind == "supplier":
        return dom.Supplier(code=r.text("code"), name=r.text("name"))
    if kind == "consumption":
        flags = []
        for i, f in enumerate(m.flags):
            if f in _FLAGS:
                flags.append(_FLAGS[f])
            else:
                r.bad(f"flags[{i}]", ReasonCode.UNKNOWN_VALUE, f"unknown flag {f!r}")
        return dom.Consumption(
            requisition_id=r.text("requisition_id"),
            line_key=r.text("line_key"),
            material_code=r.text("material_code"),
            site_code=r.text("site_code"),
            supplier_code=r.text("supplier_code"),
            quantity=r.number("quantity"),
            unit=r.text("unit"),
            solicited_date=r.date("solicited_date", required=True) or dt.date(1970, 1, 1),
            requested_date=r.date("requested_date", required=False),
            purchase_date=r.date("purchase_date", required=False),
            family=r.text("family"),
            flags=tuple(flags),
        )
    if kind == "stock_snapshot":
        return dom.StockSnapshot(
            material_code=r.text("material_code"),
            site_code=r.text("site_code"),
            on_hand=r.number("on_hand"),
            as_of=r.date("as_of", required=True) or dt.date(1970, 1, 1),
            simulated=m.simulated,
        )
    if kind == "stock_movement":
        if not m.HasField("at"):
            r.bad("at", ReasonCode.REQUIRED, "required")
        return dom.StockMovement(
            reference=r.text("reference"),
            kind=r.enum("kind", _MOVEMENT),
            material_code=r.text("material_code"),
            site_code=r.text("site_code"),
            quantity=r.number("quantity"),
            at=m.at.ToDatetime(tzinfo=dt.UTC),
            to_site_code=r.text("to_site_code"),
            simulated=m.simulated,
        )
    if kind == "purchase_order":
        return dom.PurchaseOrder(
            po_id=r.text("po_id"),
            material_code=r.text("material_code"),
            site_code=r.text("site_code"),
            supplier_code=r.text("supplier_code"),
            quantity=r.number("quantity"),
            placed_date=r.date("placed_date", required=True) or dt.date(1970, 1, 1),
            expected_date=r.date("expected_date", required=False),
            received_date=r.date("received_date", required=False),
            simulated=m.simulated,
        )
    if kind == "external_observation":
        return dom.ExternalObservation(
            series_id=r.text("series_id"),
            date=r.date("date", required=True) or dt.date(1970, 1, 1),
            value=r.number("value"),
            unit=r.text("unit"),
            source=r.text("source"),
        )
    raise AssertionError(kind)


def record_from_proto(record: pb.Record) -> dom.Record:
    """The domain record, or ConversionError naming every field the wire form gets wrong."""
    kind = record.WhichOneof("kind")
    if kind is None:
        raise ConversionError([Violation("kind", ReasonCode.REQUIRED, "exactly one record kind must be set")])
    reader = _Reader(getattr(record, kind), kind)
    result = _convert(kind, getattr(record, kind), reader)
    if reader.violations:
        raise ConversionError(reader.violations)
    return result


def _date(d: dt.date | None) -> common_pb2.Date | None:
    return None if d is None else common_pb2.Date(year=d.year, month=d.month, day=d.day)


def _num(d: Decimal) -> float:
    return float(d)


# -- the serialized wire form of a requisition line, written directly -----------------------------------
#
# Every line of an uploaded export is serialized once; building the message objects first costs twice
# as much as writing its bytes. The bytes are exactly those of
# record_to_proto(r).SerializeToString(deterministic=True): fields in number order, proto3 defaults
# (empty strings) left out, repeated flags one by one.

_MEMO_LIMIT = 50_000


def _text_field(tag: int, memo: dict[str, bytes], value: str) -> bytes:
    encoded = memo.get(value)
    if encoded is None:
        data = value.encode()
        encoded = length_delimited(tag, data) if data else b""
        if len(memo) >= _MEMO_LIMIT:
            memo.clear()
        memo[value] = encoded
    return encoded


def _date_field(tag: int, memo: dict[dt.date, bytes], value: dt.date | None) -> bytes:
    if value is None:
        return b""
    encoded = memo.get(value)
    if encoded is None:
        encoded = length_delimited(tag, _date(value).SerializeToString())  # type: ignore[union-attr]
        if len(memo) >= _MEMO_LIMIT:
            memo.clear()
        memo[value] = encoded
    return encoded


def _text_once(tag: int, value: str) -> bytes:
    """A text field whose values rarely repeat (requisition numbers, line keys): not memoised."""
    data = value.encode()
    return length_delimited(tag, data) if data else b""


# One memo per field (the same text encodes differently under another field number).
_MATERIALS: dict[str, bytes] = {}
_SITES: dict[str, bytes] = {}
_SUPPLIERS: dict[str, bytes] = {}
_UNITS: dict[str, bytes] = {}
_FAMILIES: dict[str, bytes] = {}
_REQUESTED: dict[dt.date, bytes] = {}
_SOLICITED: dict[dt.date, bytes] = {}
_PURCHASED: dict[dt.date, bytes] = {}
_QUANTITIES: dict[Decimal, bytes] = {}


def _quantity(value: Decimal) -> bytes | None:
    encoded = _QUANTITIES.get(value)
    if encoded is None:
        number = float(value)
        if not (math.isfinite(number) and number > 0):
            return None  # zero (left out), negative zero, NaN: the message library's rules apply
        encoded = b"\x31" + struct.pack("<d", number)
        if len(_QUANTITIES) >= _MEMO_LIMIT:
            _QUANTITIES.clear()
        _QUANTITIES[value] = encoded
    return encoded


def consumption_head(
    material_code: str, site_code: str, supplier_code: str, quantity: Decimal, unit: str
) -> bytes | None:
    """Fields 3-7 of a Consumption's wire form, which a file repeats line after line (a reader keeps
    them per distinct set of cells); None when the quantity is not a positive finite Decimal."""
    encoded = _quantity(quantity) if type(quantity) is Decimal else None
    if encoded is None:
        return None
    return b"".join(
        (
            _MATERIALS.get(material_code) or _text_field(0x1A, _MATERIALS, material_code),
            _SITES.get(site_code) or _text_field(0x22, _SITES, site_code),
            _SUPPLIERS.get(supplier_code) or _text_field(0x2A, _SUPPLIERS, supplier_code),
            encoded,
            _UNITS.get(unit) or _text_field(0x3A, _UNITS, unit),
        )
    )


def consumption_family(family: str) -> bytes:
    """Field 11 (family) of a Consumption's wire form."""
    return _FAMILIES.get(family) or _text_field(0x5A, _FAMILIES, family)


def consumption_wire(
    requisition_id: str,
    line_key: str,
    head: bytes,
    requested_date: dt.date | None,
    solicited_date: dt.date,
    purchase_date: dt.date | None,
    family: bytes,
    flags: tuple[dom.ConsumptionFlag, ...],
) -> bytes:
    """The serialized Record of a Consumption from its fields, ``head`` and ``family`` as encoded by
    ``consumption_head`` and ``consumption_family``."""
    return length_delimited(
        0x22,
        b"".join(
            [
                _text_once(0x0A, requisition_id),
                _text_once(0x12, line_key),
                head,
                _date_field(0x42, _REQUESTED, requested_date),
                _SOLICITED.get(solicited_date) or _date_field(0x4A, _SOLICITED, solicited_date),
                _date_field(0x52, _PURCHASED, purchase_date),
                family,
                *[length_delimited(0x62, f.value.encode()) for f in flags],
            ]
        ),
    )


def consumption_payload(r: dom.Consumption) -> bytes:
    """record_to_proto(r).SerializeToString(deterministic=True) for a valid Consumption, faster."""
    try:
        head = consumption_head(r.material_code, r.site_code, r.supplier_code, r.quantity, r.unit)
        if head is not None:
            # Codes, units, families and dates repeat from line to line: their bytes come from memos.
            return consumption_wire(
                r.requisition_id,
                r.line_key,
                head,
                r.requested_date,
                r.solicited_date,
                r.purchase_date,
                consumption_family(r.family),
                r.flags,
            )
    except (AttributeError, TypeError):  # a field of another type than the record declares
        pass
    return record_to_proto(r).SerializeToString(deterministic=True)


def record_payload(r: dom.Record) -> bytes:
    """The deterministic serialized wire form of a (validated) domain record."""
    if type(r) is dom.Consumption:
        return consumption_payload(r)
    return record_to_proto(r).SerializeToString(deterministic=True)


def record_to_proto(r: dom.Record) -> pb.Record:
    """The wire form of a (validated) domain record."""
    if isinstance(r, dom.Material):
        material = pb.Material(
            code=r.code,
            name=r.name,
            family=r.family,
            unit=r.unit,
            criticality=_CRITICALITY_BACK[r.criticality],
            abc_class=r.abc_class,
            stocked=r.stocked,
        )
        if r.unit_cost_brl is not None:  # left unset when unknown: the bytes of a cost-less material stay
            material.unit_cost_brl = _num(r.unit_cost_brl)
        return pb.Record(material=material)
    if isinstance(r, dom.Site):
        return pb.Record(
            site=pb.Site(
                code=r.code,
                client=r.client,
                region=r.region,
                site_type=_SITE_TYPE_BACK[r.site_type],
                criticality=_CRITICALITY_BACK[r.criticality],
            )
        )
    if isinstance(r, dom.Supplier):
        return pb.Record(supplier=pb.Supplier(code=r.code, name=r.name))
    if isinstance(r, dom.Consumption):
        return pb.Record(
            consumption=pb.Consumption(
                requisition_id=r.requisition_id,
                line_key=r.line_key,
                material_code=r.material_code,
                site_code=r.site_code,
                supplier_code=r.supplier_code,
                quantity=_num(r.quantity),
                unit=r.unit,
                solicited_date=_date(r.solicited_date),
                requested_date=_date(r.requested_date),
                purchase_date=_date(r.purchase_date),
                family=r.family,
                flags=[f.value for f in r.flags],
            )
        )
    if isinstance(r, dom.StockSnapshot):
        return pb.Record(
            stock_snapshot=pb.StockSnapshot(
                material_code=r.material_code,
                site_code=r.site_code,
                on_hand=_num(r.on_hand),
                as_of=_date(r.as_of),
                simulated=r.simulated,
            )
        )
    if isinstance(r, dom.StockMovement):
        movement = pb.StockMovement(
            reference=r.reference,
            kind=_MOVEMENT_BACK[r.kind],
            material_code=r.material_code,
            site_code=r.site_code,
            to_site_code=r.to_site_code,
            quantity=_num(r.quantity),
            simulated=r.simulated,
        )
        movement.at.FromDatetime(r.at)
        return pb.Record(stock_movement=movement)
    if isinstance(r, dom.PurchaseOrder):
        return pb.Record(
            purchase_order=pb.PurchaseOrder(
                po_id=r.po_id,
                material_code=r.material_code,
                site_code=r.site_code,
                supplier_code=r.supplier_code,
                quantity=_num(r.quantity),
                placed_date=_date(r.placed_date),
                expected_date=_date(r.expected_date),
                received_date=_date(r.received_date),
                simulated=r.simulated,
            )
        )
    if isinstance(r, dom.ExternalObservation):
        return pb.Record(
            external_observation=pb.ExternalObservation(
                series_id=r.series_id, date=_date(r.date), value=_num(r.value), unit=r.unit, source=r.source
            )
        )
    raise TypeError(f"not a record: {type(r).__name__}")
