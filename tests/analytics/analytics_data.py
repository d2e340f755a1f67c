"""Test data for analytics: real rows of data/dadosSuprimentos.xlsx turned into committed records, plus
builders for synthetic stock, forecast and event messages."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import openpyxl
from google.protobuf import timestamp_pb2
from novacorrente.common.v1 import common_pb2
from novacorrente.events.v1 import events_pb2
from novacorrente.forecast.v1 import forecast_pb2
from novacorrente.ingestion.v1 import records_pb2

ROOT = Path(__file__).resolve().parents[2]
XLSX = ROOT / "data" / "dadosSuprimentos.xlsx"
SHEET = "CUSTO DE MATERIAL E SERVIÇOS"


@dataclass(frozen=True)
class Row:
    """One requisition line of the export, as the test reads it (independently of the service)."""

    site: str
    material: str
    name: str
    family: str
    supplier: str
    quantity: float
    unit: str
    requested: dt.date | None
    requisition: str
    solicited: dt.date
    purchased: dt.date | None


def _day(value: object) -> dt.date | None:
    return value.date() if isinstance(value, dt.datetime) else None


@lru_cache(maxsize=1)
def real_rows() -> tuple[Row, ...]:
    """Every line with a requisition number and a solicitation date (the others have no place in time)."""
    book = openpyxl.load_workbook(XLSX, read_only=True, data_only=True)
    try:
        rows = []
        for values in book[SHEET].iter_rows(min_row=2, values_only=True):
            site, material, name, family, supplier, qty, unit, req, sol_id, sol, bought = values[:11]
            solicited = _day(sol)
            if solicited is None or sol_id in (None, "N/A") or material is None:
                continue
            rows.append(
                Row(
                    site=str(site).strip(),
                    material=str(material).strip(),
                    name=str(name).strip(),
                    family=str(family).strip(),
                    supplier=" ".join(str(supplier).split()).upper(),
                    quantity=float(qty),
                    unit=str(unit).strip(),
                    requested=_day(req),
                    requisition=str(sol_id),
                    solicited=solicited,
                    purchased=_day(bought),
                )
            )
        return tuple(rows)
    finally:
        book.close()


def date(value: dt.date) -> common_pb2.Date:
    return common_pb2.Date(year=value.year, month=value.month, day=value.day)


def consumption_record(row: Row, line_key: str) -> records_pb2.Record:
    c = records_pb2.Consumption(
        requisition_id=row.requisition,
        line_key=line_key,
        material_code=row.material,
        site_code=row.site,
        supplier_code=row.supplier,
        quantity=row.quantity,
        unit=row.unit,
        solicited_date=date(row.solicited),
        family=row.family,
    )
    if row.requested:
        c.requested_date.CopyFrom(date(row.requested))
    if row.purchased:
        c.purchase_date.CopyFrom(date(row.purchased))
        if row.purchased < row.solicited:
            c.flags.append("negative_lead_time")
    return records_pb2.Record(consumption=c)


def region_of(site: str) -> str:
    return site[:2] if len(site) > 2 and site[:2].isalpha() and site[:2].isupper() else ""


def records_from_rows(rows: Sequence[Row]) -> list[records_pb2.Record]:
    """Master records the first time a code appears, then the line, in file order."""
    out: list[records_pb2.Record] = []
    materials: set[str] = set()
    sites: set[str] = set()
    suppliers: set[str] = set()
    ordinal: dict[tuple[str, str], int] = {}
    for row in rows:
        if row.material not in materials:
            materials.add(row.material)
            out.append(
                records_pb2.Record(
                    material=records_pb2.Material(
                        code=row.material,
                        name=row.name,
                        family=row.family,
                        unit=row.unit,
                        stocked=not row.family.startswith("SERVI"),
                    )
                )
            )
        if row.site not in sites:
            sites.add(row.site)
            out.append(records_pb2.Record(site=records_pb2.Site(code=row.site, region=region_of(row.site))))
        if row.supplier not in suppliers:
            suppliers.add(row.supplier)
            out.append(
                records_pb2.Record(supplier=records_pb2.Supplier(code=row.supplier, name=row.supplier))
            )
        n = ordinal.get((row.requisition, row.material), 0) + 1
        ordinal[(row.requisition, row.material)] = n
        out.append(consumption_record(row, f"{row.material}#{n}"))
    return out


def line_key_of(rows: Sequence[Row], index: int) -> str:
    """The line key ``records_from_rows`` gives to ``rows[index]``."""
    target = rows[index]
    n = sum(
        1 for r in rows[: index + 1] if (r.requisition, r.material) == (target.requisition, target.material)
    )
    return f"{target.material}#{n}"


class Sequencer:
    """Numbers records the way ingestion does (global, gap-free) and keeps the log for export."""

    def __init__(self) -> None:
        self.log: list[records_pb2.CommittedRecord] = []

    @property
    def watermark(self) -> int:
        return self.log[-1].sequence if self.log else 0

    def commit(
        self, records: Iterable[records_pb2.Record], *, supersedes: bool = False
    ) -> events_pb2.BatchCommitted:
        batch_id = uuid.uuid4().hex
        now = timestamp_pb2.Timestamp()
        now.GetCurrentTime()
        committed = []
        for record in records:
            committed.append(
                records_pb2.CommittedRecord(
                    sequence=self.watermark + 1,
                    batch_id=batch_id,
                    record=record,
                    supersedes=supersedes,
                    committed_at=now,
                )
            )
            self.log.append(committed[-1])
        return events_pb2.BatchCommitted(
            event_id=uuid.uuid4().hex,
            batch_id=batch_id,
            sequence_from=committed[0].sequence,
            sequence_to=committed[-1].sequence,
            records=committed,
            committed_at=now,
        )


def material(code: str, family: str) -> records_pb2.Record:
    """A stocked material of the master, in units."""
    return records_pb2.Record(
        material=records_pb2.Material(code=code, name=code, family=family, unit="UN", stocked=True)
    )


def site(code: str) -> records_pb2.Record:
    return records_pb2.Record(site=records_pb2.Site(code=code))


def line(
    requisition: str,
    material: str,
    site: str,
    quantity: float,
    solicited: dt.date,
    *,
    purchased: dt.date | None = None,
    family: str = "",
    supplier: str = "SUP",
) -> records_pb2.Record:
    """A requisition line (line key "1"), purchased ``purchased - solicited`` days after it was raised."""
    c = records_pb2.Consumption(
        requisition_id=requisition,
        line_key="1",
        material_code=material,
        site_code=site,
        supplier_code=supplier,
        quantity=quantity,
        unit="UN",
        solicited_date=date(solicited),
        family=family,
    )
    if purchased:
        c.purchase_date.CopyFrom(date(purchased))
    return records_pb2.Record(consumption=c)


def snapshot(
    material: str, site: str, on_hand: float, as_of: dt.date, *, simulated: bool = False
) -> records_pb2.Record:
    return records_pb2.Record(
        stock_snapshot=records_pb2.StockSnapshot(
            material_code=material, site_code=site, on_hand=on_hand, as_of=date(as_of), simulated=simulated
        )
    )


def pair_with_one_lead_time(counted: dt.date) -> list[records_pb2.Record]:
    """M1 (family FAM) at S1, sites S1 and S2: 10 on hand counted on ``counted`` and one line, 20 asked on
    2024-03-10 and bought two days later: 45.5 days of cover (20 in the 91 days to the data end) over a
    2-day lead time, from the pair's only observation."""
    return [
        material("M1", "FAM"),
        site("S1"),
        site("S2"),
        snapshot("M1", "S1", 10.0, counted),
        line("R0", "M1", "S1", 20.0, dt.date(2024, 3, 10), purchased=dt.date(2024, 3, 12)),
    ]


def slow_lines_at_s2() -> list[records_pb2.Record]:
    """Five older lines of M1 at S2, bought 100 days after they were raised: M1 at S1 has one observation,
    so its lead time falls back to the material's, now (2 + 5 x 100) / 6 = 83.7 days."""
    days = [dt.date(2024, 1, 1) + dt.timedelta(days=d) for d in range(1, 6)]
    return [
        line(f"R{i}", "M1", "S2", 1.0, day, purchased=day + dt.timedelta(days=100))
        for i, day in enumerate(days)
    ]


def purchase_order(
    po_id: str,
    material: str,
    site: str,
    quantity: float,
    placed: dt.date,
    expected: dt.date,
    received: dt.date | None = None,
    supplier: str = "SUP",
) -> records_pb2.Record:
    po = records_pb2.PurchaseOrder(
        po_id=po_id,
        material_code=material,
        site_code=site,
        supplier_code=supplier,
        quantity=quantity,
        placed_date=date(placed),
        expected_date=date(expected),
    )
    if received:
        po.received_date.CopyFrom(date(received))
    return records_pb2.Record(purchase_order=po)


def forecast_event(
    material: str,
    site: str,
    weeks: Sequence[tuple[dt.date, float, float, float]],
    *,
    generated_at: dt.datetime,
    safety_stock: float | None = None,
    reorder_point: float | None = None,
    order_up_to: float = 0.0,
    lead_time_mean_days: float = 0.0,
    model: tuple[str, str] = ("lgbm-quantile", "7"),
) -> events_pb2.ForecastsUpdated:
    """A ForecastsUpdated with one material x site forecast (week, p10, p50, p90), optionally its policy."""
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(generated_at)
    provenance = common_pb2.Provenance(model_name=model[0], model_version=model[1], generated_at=stamp)
    ref = forecast_pb2.SeriesRef(
        level=forecast_pb2.AGGREGATION_LEVEL_MATERIAL_SITE, material_code=material, site_code=site
    )
    forecast = forecast_pb2.SeriesForecast(
        series=ref, method="lightgbm-quantile", unit="UN", provenance=provenance
    )
    for week, p10, p50, p90 in weeks:
        forecast.weeks.add(
            week_start=date(week),
            mean=p50,
            quantiles=[
                common_pb2.QuantileValue(level=0.1, value=p10),
                common_pb2.QuantileValue(level=0.5, value=p50),
                common_pb2.QuantileValue(level=0.9, value=p90),
            ],
        )
    event = events_pb2.ForecastsUpdated(event_id=uuid.uuid4().hex, forecasts=[forecast])
    if reorder_point is not None:
        event.policies.add(
            series=ref,
            safety_stock=safety_stock or 0.0,
            reorder_point=reorder_point,
            order_up_to=order_up_to,
            unit="UN",
            provenance=provenance,
            decomposition=forecast_pb2.ReorderDecomposition(lead_time_mean_days=lead_time_mean_days),
        )
    return event
