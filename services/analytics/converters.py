"""Protobuf <-> plain Python: committed records to read-model rows, requests to slices, rows to responses."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

from google.protobuf import timestamp_pb2
from novacorrente.analytics.v1 import analytics_pb2
from novacorrente.common.v1 import common_pb2
from novacorrente.ingestion.v1 import records_pb2

from services.analytics.alerts import AlertRecord
from services.analytics.kpis import KpiValue
from services.analytics.queries import HistoryRow, InventoryRow
from services.analytics.slices import Slice
from services.kit.errors import FieldViolation, InvalidArgument

__all__ = [
    "alert_proto",
    "date_of",
    "date_proto",
    "filter_proto",
    "history_proto",
    "inventory_proto",
    "kpi_proto",
    "material_cost_of",
    "micros_of",
    "row_of",
    "slice_of",
    "timestamp_proto",
]

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def date_of(value: common_pb2.Date) -> dt.date | None:
    """A proto Date as a date; an unset (all-zero) or impossible date is None."""
    if not value.year:
        return None
    try:
        return dt.date(value.year, value.month, value.day)
    except ValueError:
        return None


def date_proto(value: dt.date) -> common_pb2.Date:
    return common_pb2.Date(year=value.year, month=value.month, day=value.day)


def micros_of(value: timestamp_pb2.Timestamp) -> int:
    return value.seconds * 1_000_000 + value.nanos // 1000


def timestamp_proto(micros: int) -> timestamp_pb2.Timestamp:
    return timestamp_pb2.Timestamp(seconds=micros // 1_000_000, nanos=(micros % 1_000_000) * 1000)


def _days(a: dt.date | None, b: dt.date | None) -> int | None:
    return None if a is None or b is None else (b - a).days


def row_of(committed: records_pb2.CommittedRecord) -> tuple[str, tuple[object, ...]] | None:
    """(table, row tuple in the table's column order) of a committed record, or None for an empty record.

    ``seq`` is always the last column. The demand date is the solicitation date (when the demand was raised;
    the export leaves the requisition date empty on 86% of the lines), as in ingestion and training.
    """
    record = committed.record
    kind = record.WhichOneof("kind")
    seq = committed.sequence
    if kind == "consumption":
        c = record.consumption
        solicited, requested, purchased = (
            date_of(c.solicited_date),
            date_of(c.requested_date),
            date_of(c.purchase_date),
        )
        demand = solicited or requested or purchased
        return "consumption", (
            c.requisition_id,
            c.line_key,
            c.material_code,
            c.site_code,
            c.supplier_code,
            c.quantity,
            c.unit,
            demand,
            requested,
            solicited,
            purchased,
            _days(solicited, purchased),
            c.family,
            list(c.flags),
            seq,
        )
    if kind == "stock_snapshot":
        s = record.stock_snapshot
        return "stock_snapshots", (
            s.material_code,
            s.site_code,
            date_of(s.as_of),
            s.on_hand,
            s.simulated,
            seq,
        )
    if kind == "stock_movement":
        m = record.stock_movement
        at = _EPOCH + dt.timedelta(microseconds=micros_of(m.at))
        return "stock_movements", (
            m.reference,
            int(m.kind),
            m.material_code,
            m.site_code,
            m.to_site_code,
            m.quantity,
            at.replace(tzinfo=None),
            at.date(),
            m.simulated,
            seq,
        )
    if kind == "purchase_order":
        p = record.purchase_order
        return "purchase_orders", (
            p.po_id,
            p.material_code,
            p.site_code,
            p.supplier_code,
            p.quantity,
            date_of(p.placed_date),
            date_of(p.expected_date),
            date_of(p.received_date),
            p.simulated,
            seq,
        )
    if kind == "material":
        mat = record.material
        return "materials", (
            mat.code,
            mat.name,
            mat.family,
            mat.unit,
            int(mat.criticality),
            mat.abc_class,
            mat.stocked,
            seq,
        )
    if kind == "site":
        site = record.site
        return "sites", (site.code, site.client, site.region, int(site.site_type), int(site.criticality), seq)
    if kind == "supplier":
        return "suppliers", (record.supplier.code, record.supplier.name, seq)
    if kind == "external_observation":
        e = record.external_observation
        return "external_observations", (e.series_id, date_of(e.date), e.value, e.unit, e.source, seq)
    return None


def material_cost_of(committed: records_pb2.CommittedRecord) -> tuple[str, float | None, int] | None:
    """(code, unit cost in BRL or None when unknown, sequence) of a committed material, else None."""
    record = committed.record
    if record.WhichOneof("kind") != "material":
        return None
    m = record.material
    return m.code, (m.unit_cost_brl if m.HasField("unit_cost_brl") else None), committed.sequence


def _check_date(field: str, value: common_pb2.Date, violations: list[FieldViolation]) -> dt.date | None:
    if not (value.year or value.month or value.day):
        return None
    parsed = date_of(value)
    if parsed is None:
        violations.append(FieldViolation(field, "not a valid calendar date"))
    return parsed


def slice_of(
    value: common_pb2.Filter,
    *,
    field: str = "filter",
    max_range_days: int,
    series: Iterable[str] = (),
) -> Slice:
    """Validate and normalise a Filter (INVALID_ARGUMENT naming the field on a bad date range)."""
    violations: list[FieldViolation] = []
    start = _check_date(f"{field}.date_range.start", value.date_range.start, violations)
    end = _check_date(f"{field}.date_range.end", value.date_range.end, violations)
    if start and end and start > end:
        violations.append(FieldViolation(f"{field}.date_range", "start is after end"))
    if start and end and (end - start).days + 1 > max_range_days:
        violations.append(
            FieldViolation(f"{field}.date_range", f"longer than the maximum of {max_range_days} days")
        )
    if violations:
        raise InvalidArgument(violations)
    return Slice.of(
        materials=value.material_codes,
        families=value.families,
        sites=value.site_codes,
        clients=value.clients,
        regions=value.regions,
        suppliers=value.suppliers,
        start=start,
        end=end,
        series=series,
    )


# -- responses -----------------------------------------------------------------------------------------


def filter_proto(s: Slice) -> common_pb2.Filter:
    """The normalised Filter of a slice (what cache keys hash)."""
    value = common_pb2.Filter(
        material_codes=s.materials,
        families=s.families,
        site_codes=s.sites,
        clients=s.clients,
        regions=s.regions,
        suppliers=s.suppliers,
    )
    if s.start:
        value.date_range.start.CopyFrom(date_proto(s.start))
    if s.end:
        value.date_range.end.CopyFrom(date_proto(s.end))
    return value


def alert_proto(record: AlertRecord) -> analytics_pb2.Alert:
    raised = timestamp_proto(_micros(record.raised_at))
    alert = analytics_pb2.Alert(
        alert_id=record.alert_id,
        kind=record.kind,  # type: ignore[arg-type]
        material_code=record.material,
        site_code=record.site,
        state=record.state,  # type: ignore[arg-type]
        message=record.message,
        stock_position=record.stock_position,
        reorder_point=record.reorder_point,
        days_of_cover=record.days_of_cover,
        lead_time_days=record.lead_time_days,
        raised_at=raised,
        provenance=common_pb2.Provenance(data_watermark=record.data_watermark, generated_at=raised),
    )
    for event in record.history:
        alert.history.add(
            state=event.state,  # type: ignore[arg-type]
            actor=event.actor,
            at=timestamp_proto(_micros(event.at)),
            comment=event.comment,
        )
    return alert


def _micros(value: dt.datetime) -> int:
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    delta = value - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def kpi_proto(value: KpiValue) -> analytics_pb2.Kpi:
    return analytics_pb2.Kpi(
        name=value.name, value=value.value, unit=value.unit, available=value.available, note=value.note
    )


def inventory_proto(row: InventoryRow) -> analytics_pb2.InventoryStatus:
    return analytics_pb2.InventoryStatus(
        material_code=row.material,
        site_code=row.site,
        on_hand=row.on_hand,
        on_order=row.on_order,
        backorders=row.backorders,
        stock_position=row.stock_position,
        safety_stock=row.safety_stock,
        reorder_point=row.reorder_point,
        days_of_cover=row.days_of_cover,
        status=row.status,  # type: ignore[arg-type]
        suggested_order_quantity=row.suggested_order_quantity,
        risk=row.risk,
        family=row.family,
        unit=row.unit,
        simulated=row.simulated,
    )


def history_proto(row: HistoryRow) -> analytics_pb2.SeriesHistory:
    out = analytics_pb2.SeriesHistory(
        key=analytics_pb2.SeriesKey(material_code=row.material, site_code=row.site),
        weekly_quantity=row.weekly,
        family=row.family,
        site_type=row.site_type,  # type: ignore[arg-type]
        material_criticality=row.material_criticality,  # type: ignore[arg-type]
        site_criticality=row.site_criticality,  # type: ignore[arg-type]
        unit=row.unit,
        unknown=row.unknown,
    )
    if row.first_week is not None:
        out.first_week.CopyFrom(date_proto(row.first_week))
    return out
