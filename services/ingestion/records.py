"""The records ingestion accepts, as plain frozen dataclasses (the transport converters map them to protobuf).

Every record has a ``natural_key()`` (what identifies it across uploads) and a ``content_hash()`` (what it
says). Comparing the two with what is stored gives the verdict of an upload (``novelty``): same key and same
hash is a duplicate, same key and another hash is a correction that supersedes the stored version.

Quantities and values are ``Decimal``, not ``float``: files carry decimal text ("1643,4", "0.58", "5.2645"),
and a Decimal keeps it exactly, so the content hash of a re-uploaded file cannot drift with binary rounding,
and KG->G style conversions are exact. The wire format uses double; convert a received float with
``decimal_from_float`` (shortest repr), never ``Decimal(x)``, and the round trip keeps the hash.

Field names follow ``protos/novacorrente/ingestion/v1/records.proto``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, fields
from datetime import UTC, date, datetime
from decimal import Decimal
from enum import Enum, StrEnum
from json.encoder import encode_basestring  # type: ignore[attr-defined]
from typing import Any, ClassVar

__all__ = [
    "RECORD_TYPES",
    "Consumption",
    "ConsumptionFlag",
    "Criticality",
    "ExternalObservation",
    "Material",
    "MovementKind",
    "Novelty",
    "PurchaseOrder",
    "Record",
    "Site",
    "SiteType",
    "StockMovement",
    "StockSnapshot",
    "Supplier",
    "canonical_decimal",
    "consumption_json",
    "decimal_from_float",
    "json_value",
    "novelty",
]


class Criticality(StrEnum):
    """How critical a material or site is (drives the target service level). UNKNOWN is treated as medium."""

    UNKNOWN = "unknown"
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"


class SiteType(StrEnum):
    """What kind of place a site is."""

    UNKNOWN = "unknown"
    TOWER = "tower"
    WAREHOUSE = "warehouse"
    OFFICE = "office"


class MovementKind(StrEnum):
    """What a stock movement did."""

    RECEIPT = "receipt"
    ISSUE = "issue"
    TRANSFER = "transfer"
    ADJUSTMENT = "adjustment"


class ConsumptionFlag(StrEnum):
    """Quality flags on an accepted requisition line: the line is kept, the consumer decides what to do.

    Flags are annotations derived on the way in, not source content: they are left out of the content hash.
    """

    SERVICE = "service"
    """The line buys a service (unit SR/VB/HR or a service family): demand, but never stock."""
    NEGATIVE_LEAD_TIME = "negative_lead_time"
    """Purchase date before the solicitation date (after-the-fact regularisation in the ERP)."""
    UNKNOWN_SITE = "unknown_site"
    """The ERP recorded no site ("N/A"): usable for national totals, not for per-site series."""
    QUANTITY_OUTLIER = "quantity_outlier"
    """Quantity above ``validation.OUTLIER_QUANTITY``; kept, but worth a look before it drives a forecast."""
    UNIT_VARIANT = "unit_variant"
    """The material was first seen in another unit (010601 in CX, then UN): quantities do not add up."""
    MASTER_CONFLICT = "master_conflict"
    """The line names the material with another name or family than its first line did."""


class Novelty(StrEnum):
    """What a record is compared with what is stored under its natural key."""

    NEW = "new"
    DUPLICATE = "duplicate"
    SUPERSEDES = "supersedes"


def decimal_from_float(value: float) -> Decimal:
    """The Decimal a human wrote when the float was printed (shortest repr): 1643.4 -> Decimal('1643.4')."""
    return Decimal(repr(float(value)))


def canonical_decimal(value: Decimal) -> str:
    """One spelling per number: no exponent, no trailing zeros, no negative zero ("1.50" -> "1.5")."""
    if value.is_zero():
        return "0"
    text = format(value.normalize(), "f")
    return text


_PLAIN = frozenset({str, int, bool, type(None)})


def _canonical(value: object) -> object:
    """JSON-able, deterministic form of a field value for keys and hashes."""
    # Exact plain types first: this runs for every field of every ingested record.
    if type(value) in _PLAIN:
        return value
    if value is None or (isinstance(value, bool | int | str) and not isinstance(value, Enum)):
        return value
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, Decimal):
        return canonical_decimal(value)
    if isinstance(value, datetime):
        # One instant, one spelling: aware datetimes are hashed in UTC.
        return value.astimezone(UTC).isoformat() if value.tzinfo else value.isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, tuple | list | frozenset | set):
        items = [_canonical(v) for v in value]
        return sorted(items, key=str) if isinstance(value, frozenset | set) else items
    raise TypeError(f"cannot canonicalise {type(value).__name__}")


class Record:
    """Behaviour shared by every record dataclass."""

    __slots__ = ()
    record_type: ClassVar[str]
    key_fields: ClassVar[tuple[str, ...]]
    # Derived annotations that must not turn an identical re-upload into a "correction".
    hash_exclude: ClassVar[frozenset[str]] = frozenset()
    # Fields added after versions of the record were stored: left out of the hash while they hold their
    # default (None, False), so a record that does not carry them keeps the hash its stored version has (a
    # re-upload stays a duplicate).
    hash_omit_default: ClassVar[frozenset[str]] = frozenset()
    # Fields holding a unit of measure of ``units.UNITS`` (readers resolve aliases such as MT -> M in them).
    unit_fields: ClassVar[frozenset[str]] = frozenset()

    def natural_key(self) -> tuple[str, ...]:
        """The identity of the record across uploads, as strings (dates ISO, decimals canonical)."""
        return tuple(str(_canonical(getattr(self, name))) for name in self.key_fields)

    @classmethod
    def _hashed_fields(cls) -> tuple[str, ...]:
        # Computed once per class (dataclasses.fields is slow on a hot path).
        names = cls.__dict__.get("_hashed_names")
        if names is None:
            names = tuple(f.name for f in fields(cls) if f.name not in cls.hash_exclude)  # type: ignore[arg-type]
            type.__setattr__(cls, "_hashed_names", names)
        return names

    def content_hash(self) -> str:
        """SHA-256 (hex) of the record type and every field except ``hash_exclude`` (and the fields of
        ``hash_omit_default`` that hold their default), canonically encoded: the compact, key-sorted JSON
        text of ``[record_type, {field: canonical value}]``."""
        layout = type(self).__dict__.get("_hash_layout")
        if layout is None:
            layout = _hash_layout(type(self))
        head, names, keys, defaults = layout
        omit = self.hash_omit_default
        # The JSON text json.dumps(sort_keys=True, ensure_ascii=False, separators=(",", ":")) writes, built
        # from the fields directly: this runs for every ingested record.
        if omit:
            body = ",".join(
                [
                    k + json_value(v)
                    for n, k in zip(names, keys, strict=True)
                    # ``defaults`` holds the omitted fields only: any other value differs from _NO_DEFAULT.
                    if (v := getattr(self, n)) != defaults.get(n, _NO_DEFAULT)
                ]
            )
        else:
            body = ",".join([k + json_value(getattr(self, n)) for n, k in zip(names, keys, strict=True)])
        return hashlib.sha256((head + body + "}]").encode()).hexdigest()


_NO_DEFAULT = object()


def _hash_layout(
    cls: type[Record],
) -> tuple[str, tuple[str, ...], tuple[str, ...], dict[str, object]]:
    """The fixed parts of a class's hashed JSON text: its opening, its sorted field names and their keys,
    and the defaults of the fields of ``hash_omit_default``."""
    names = tuple(sorted(cls._hashed_fields()))
    defaults = {f.name: f.default for f in fields(cls) if f.name in cls.hash_omit_default}  # type: ignore[arg-type]
    layout = (
        "[" + encode_basestring(cls.record_type) + ",{",
        names,
        tuple(encode_basestring(n) + ":" for n in names),
        defaults,
    )
    type.__setattr__(cls, "_hash_layout", layout)
    return layout


def _json_decimal(value: Decimal) -> str:
    return encode_basestring(canonical_decimal(value))


def _json_date(value: date) -> str:
    return encode_basestring(value.isoformat())


# The JSON text of the canonical form of the common field types, by exact type (subclasses such as the
# StrEnums take the general path).
_JSON_BY_TYPE: dict[type, Callable[[Any], str]] = {
    str: encode_basestring,
    type(None): lambda _: "null",
    Decimal: _json_decimal,
    date: _json_date,
}
# Dates and quantities repeat from record to record: their text is kept (bounded). Only Decimal and date
# keys go in, which never equal one another.
_JSON_MEMO: dict[object, str] = {}
_JSON_MEMO_LIMIT = 50_000


def json_value(value: object) -> str:
    """The JSON text json.dumps writes for ``_canonical(value)`` (compact, keys sorted, UTF-8 kept)."""
    kind = type(value)
    if kind is Decimal or kind is date:
        text = _JSON_MEMO.get(value)
        if text is None:
            if len(_JSON_MEMO) >= _JSON_MEMO_LIMIT:
                _JSON_MEMO.clear()
            text = _JSON_MEMO[value] = _JSON_BY_TYPE[kind](value)
        return text
    encode = _JSON_BY_TYPE.get(kind)
    if encode is not None:
        return encode(value)
    return json.dumps(_canonical(value), sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def novelty(stored_hash: str | None, record: Record) -> Novelty:
    """Compare ``record`` with the content hash stored under its natural key (``None`` when nothing is)."""
    if stored_hash is None:
        return Novelty.NEW
    return Novelty.DUPLICATE if stored_hash == record.content_hash() else Novelty.SUPERSEDES


@dataclass(frozen=True, slots=True)
class Material(Record):
    """A material or service as the ERP lists it. Natural key: code."""

    record_type: ClassVar[str] = "material"
    key_fields: ClassVar[tuple[str, ...]] = ("code",)
    unit_fields: ClassVar[frozenset[str]] = frozenset({"unit"})
    # Materials without a cost were stored before the field existed: their hashes must not move.
    hash_omit_default: ClassVar[frozenset[str]] = frozenset({"unit_cost_brl"})

    code: str
    name: str
    family: str
    unit: str
    criticality: Criticality = Criticality.UNKNOWN
    abc_class: str = ""  # "A" | "B" | "C" | "" (not classified)
    stocked: bool = True  # False for services: bought, never stocked
    unit_cost_brl: Decimal | None = None  # BRL per ``unit`` (ERP standard/average cost); None: unknown


@dataclass(frozen=True, slots=True)
class Site(Record):
    """A tower site, warehouse or office. Natural key: code ("N/A" is the explicit unknown site)."""

    record_type: ClassVar[str] = "site"
    key_fields: ClassVar[tuple[str, ...]] = ("code",)

    code: str
    client: str = ""
    region: str = ""  # Brazilian state (UF) when known
    site_type: SiteType = SiteType.UNKNOWN
    criticality: Criticality = Criticality.UNKNOWN


@dataclass(frozen=True, slots=True)
class Supplier(Record):
    """A supplier. The export has no supplier code, so ``code`` is the normalised name. Natural key: code."""

    record_type: ClassVar[str] = "supplier"
    key_fields: ClassVar[tuple[str, ...]] = ("code",)

    code: str
    name: str


@dataclass(frozen=True, slots=True)
class Consumption(Record):
    """One requisition line, the demand signal. Natural key: (requisition_id, line_key).

    ``line_key`` is "<material_code>#<n>", n counting the lines of that material in that requisition in file
    order: the export has no line number, and identical lines are real separate purchases (13 identical
    freight lines in one requisition), so the ordinal is what keeps them apart.
    """

    record_type: ClassVar[str] = "consumption"
    key_fields: ClassVar[tuple[str, ...]] = ("requisition_id", "line_key")
    hash_exclude: ClassVar[frozenset[str]] = frozenset({"flags"})
    unit_fields: ClassVar[frozenset[str]] = frozenset({"unit"})

    requisition_id: str
    line_key: str
    material_code: str
    site_code: str
    supplier_code: str
    quantity: Decimal
    unit: str
    solicited_date: date  # DATA SOLICITADO: when the demand was raised; the date demand series use
    requested_date: date | None = None  # DATA REQUISITADA: the requisition's own date, often absent
    purchase_date: date | None = None  # DATA DE COMPRA: None while not purchased
    family: str = ""
    flags: tuple[ConsumptionFlag, ...] = ()

    def natural_key(self) -> tuple[str, ...]:
        # Record.natural_key for the usual plain-text key fields (the same strings), without the
        # general conversion.
        if type(self.requisition_id) is str and type(self.line_key) is str:
            return (self.requisition_id, self.line_key)
        return Record.natural_key(self)

    def content_hash(self) -> str:
        # Record.content_hash spelled out for the most frequent record (same text, same hash); the
        # field list is checked against the generic one below the class.
        e, j = encode_basestring, json_value
        try:
            text = consumption_json(
                e(self.family),
                e(self.line_key),
                e(self.material_code),
                j(self.purchase_date),
                j(self.quantity),
                j(self.requested_date),
                e(self.requisition_id),
                e(self.site_code),
                j(self.solicited_date),
                e(self.supplier_code),
                e(self.unit),
            )
        except TypeError:  # a text field holding something else than text: the general spelling
            return Record.content_hash(self)
        return hashlib.sha256(text.encode()).hexdigest()

    def lead_time_days(self) -> int | None:
        """Days from solicitation to purchase (negative for after-the-fact purchases); None if not bought."""
        if self.purchase_date is None:
            return None
        return (self.purchase_date - self.solicited_date).days


def consumption_json(
    family: str,
    line_key: str,
    material_code: str,
    purchase_date: str,
    quantity: str,
    requested_date: str,
    requisition_id: str,
    site_code: str,
    solicited_date: str,
    supplier_code: str,
    unit: str,
) -> str:
    """The text Consumption.content_hash hashes, from each field's JSON text (``json_value``)."""
    return (
        f'["consumption",{{"family":{family},"line_key":{line_key},"material_code":{material_code},'
        f'"purchase_date":{purchase_date},"quantity":{quantity},"requested_date":{requested_date},'
        f'"requisition_id":{requisition_id},"site_code":{site_code},"solicited_date":{solicited_date},'
        f'"supplier_code":{supplier_code},"unit":{unit}}}]'
    )


# A field added to Consumption must be added to its content_hash too.
if _hash_layout(Consumption)[1] != (
    "family",
    "line_key",
    "material_code",
    "purchase_date",
    "quantity",
    "requested_date",
    "requisition_id",
    "site_code",
    "solicited_date",
    "supplier_code",
    "unit",
):
    raise TypeError("Consumption.content_hash does not hash the fields Record.content_hash would")


@dataclass(frozen=True, slots=True)
class StockSnapshot(Record):
    """A stock count. Natural key: (material_code, site_code, as_of)."""

    record_type: ClassVar[str] = "stock_snapshot"
    key_fields: ClassVar[tuple[str, ...]] = ("material_code", "site_code", "as_of")

    hash_omit_default: ClassVar[frozenset[str]] = frozenset({"simulated"})

    material_code: str
    site_code: str
    on_hand: Decimal
    as_of: date
    simulated: bool = False  # made up by a simulation (the demo's ledger), not counted


@dataclass(frozen=True, slots=True)
class StockMovement(Record):
    """A stock movement. Natural key: reference.

    ``quantity`` is positive for receipts, issues and transfers (the kind gives the direction) and signed for
    adjustments; ``to_site_code`` is set for transfers only.
    """

    record_type: ClassVar[str] = "stock_movement"
    key_fields: ClassVar[tuple[str, ...]] = ("reference",)
    hash_omit_default: ClassVar[frozenset[str]] = frozenset({"simulated"})

    reference: str
    kind: MovementKind
    material_code: str
    site_code: str
    quantity: Decimal
    at: datetime  # timezone-aware
    to_site_code: str = ""
    simulated: bool = False  # made up by a simulation, not booked


@dataclass(frozen=True, slots=True)
class PurchaseOrder(Record):
    """A purchase order line. Natural key: (po_id, material_code)."""

    record_type: ClassVar[str] = "purchase_order"
    key_fields: ClassVar[tuple[str, ...]] = ("po_id", "material_code")
    hash_omit_default: ClassVar[frozenset[str]] = frozenset({"simulated"})

    po_id: str
    material_code: str
    site_code: str
    supplier_code: str
    quantity: Decimal
    placed_date: date
    expected_date: date | None = None
    received_date: date | None = None
    simulated: bool = False  # made up by a simulation, not placed


@dataclass(frozen=True, slots=True)
class ExternalObservation(Record):
    """One daily (or monthly: first day of the month) value of an external series. Key: (series_id, date)."""

    record_type: ClassVar[str] = "external_observation"
    key_fields: ClassVar[tuple[str, ...]] = ("series_id", "date")

    series_id: str  # e.g. "ptax.usd.sell", "weather.salvador.precipitation_mm"
    date: date
    value: Decimal
    unit: str
    source: str


RECORD_TYPES: dict[str, type[Record]] = {
    cls.record_type: cls
    for cls in (
        Material,
        Site,
        Supplier,
        Consumption,
        StockSnapshot,
        StockMovement,
        PurchaseOrder,
        ExternalObservation,
    )
}
"""Record classes by ``record_type`` name (the prefix of field paths and the generic readers' argument)."""
