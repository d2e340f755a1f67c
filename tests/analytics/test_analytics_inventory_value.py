"""average_inventory_value from the materials' unit costs, checked against a day-by-day walk made here (plain
Python, not the service's SQL); unavailable without costs; cache keys and rebuilds follow cost changes."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import duckdb
import pytest
from novacorrente.analytics.v1 import analytics_pb2 as a
from novacorrente.common.v1 import common_pb2 as c
from novacorrente.ingestion.v1 import records_pb2

from services.ingestion.validation import MAX_MAGNITUDE
from tests.analytics.analytics_data import date, snapshot
from tests.analytics.conftest import Replica, World

START, END = dt.date(2025, 1, 1), dt.date(2025, 1, 31)
COSTS: dict[str, float | None] = {"M1": 12.34, "M2": 2.5, "M3": None}  # M3: the master gives no cost
UNITS = {"M1": "UN", "M2": "KG", "M3": "UN"}
COUNTS: dict[tuple[str, str], dict[dt.date, float]] = {
    ("M1", "S1"): {dt.date(2025, 1, 1): 10.0, dt.date(2025, 1, 11): 4.0, dt.date(2025, 1, 21): 0.0},
    ("M2", "S1"): {dt.date(2024, 12, 20): 100.0, dt.date(2025, 1, 16): 40.5},  # counted before the period
    ("M2", "S2"): {dt.date(2025, 1, 10): 8.0},  # observed from the 10th only
    ("M3", "S2"): {dt.date(2025, 1, 1): 50.0},
    ("M1", "S2"): {dt.date(2025, 2, 5): 99.0},  # after the period: not observed in it
}


def material(code: str, cost: float | None) -> records_pb2.Record:
    m = records_pb2.Material(code=code, name=f"MATERIAL {code}", family="EPI", unit=UNITS[code], stocked=True)
    if cost is not None:
        m.unit_cost_brl = cost
    return records_pb2.Record(material=m)


def _records() -> list[records_pb2.Record]:
    out = [material(code, cost) for code, cost in COSTS.items()]
    out += [records_pb2.Record(site=records_pb2.Site(code=s, region="BA")) for s in ("S1", "S2")]
    out += [snapshot(m, s, v, d) for (m, s), counts in COUNTS.items() for d, v in counts.items()]
    return out


def _average_on_hand(counts: dict[dt.date, float]) -> float | None:
    """The pair's mean on hand over the period's days some count (the latest one up to the day) covers."""
    seen = []
    day = START
    while day <= END:
        known = [d for d in counts if d <= day]
        if known:
            seen.append(counts[max(known)])
        day += dt.timedelta(days=1)
    return sum(seen) / len(seen) if seen else None


def _expected(costs: dict[str, float | None], sites: set[str]) -> tuple[float, int, int, float]:
    """(value, observed pairs, pairs with a cost, share of the average on hand with a cost in %)."""
    value = total = costed_total = 0.0
    pairs = costed = 0
    for (m, s), counts in COUNTS.items():
        avg = _average_on_hand(counts)
        if s not in sites or avg is None:
            continue
        pairs += 1
        total += avg
        if costs[m] is not None:
            costed += 1
            costed_total += avg
            value += avg * costs[m]  # type: ignore[operator]
    return value, pairs, costed, 100.0 * costed_total / total


async def _kpis(replica: Replica, **filters: object) -> dict[str, a.KpiValue]:
    flt = c.Filter(date_range=c.DateRange(start=date(START), end=date(END)), **filters)  # type: ignore[arg-type]
    request = a.GetKpisRequest(filter=flt, names=["average_inventory_value", "average_inventory_units"])
    response = await replica.stub.GetKpis(request, metadata=replica.md())
    got = {k.name: k for k in response.kpis}
    got["_from_cache"] = response.provenance.from_cache  # type: ignore[assignment]
    return got


async def test_average_inventory_value_equals_a_day_by_day_walk(world: World) -> None:
    replica = await world.replica()
    await world.commit(_records())

    for sites in ({"S1", "S2"}, {"S2"}):
        value, pairs, costed, share = _expected(COSTS, sites)
        got = await _kpis(replica, site_codes=sorted(sites))
        kpi = got["average_inventory_value"]
        assert kpi.available and kpi.unit == "BRL"
        assert kpi.value == pytest.approx(value, rel=1e-12)
        assert f"unit cost known for {costed} of {pairs} material × site pairs" in kpi.note
        assert f"({share:.1f}% of the average quantity on hand)" in kpi.note
    # All four observed pairs, three with a cost: the uncosted one is left out, not counted at zero.
    assert _expected(COSTS, {"S1", "S2"})[1:3] == (4, 3)
    # The same walk gives the units KPI, so both read the counts alike.
    units = (await _kpis(replica))["average_inventory_units"]
    assert units.value == pytest.approx(
        sum(avg for counts in COUNTS.values() if (avg := _average_on_hand(counts)) is not None)
    )


async def test_average_inventory_value_is_unavailable_without_costs(world: World) -> None:
    replica = await world.replica()
    await world.commit(_records())
    kpi = (await _kpis(replica, material_codes=["M3"]))["average_inventory_value"]
    assert not kpi.available and kpi.value == 0
    assert "no unit cost" in kpi.note and "(1 material × site pair," in kpi.note
    # Costs exist, but not for anything counted in this slice: no stock, so no value either.
    nothing = (await _kpis(replica, material_codes=["M1"], site_codes=["S2"]))["average_inventory_value"]
    assert not nothing.available and "no stock counts" in nothing.note


async def test_a_cost_correction_moves_only_the_keys_of_that_material(world: World) -> None:
    replica = await world.replica()
    await world.commit(_records())
    first = await _kpis(replica, material_codes=["M1"])
    other = await _kpis(replica, material_codes=["M2"])
    assert (await _kpis(replica, material_codes=["M1"]))["_from_cache"]

    await world.commit([material("M1", 20.0)], supersedes=True)
    after = await _kpis(replica, material_codes=["M1"])
    assert not after["_from_cache"]
    avg = _average_on_hand(COUNTS[("M1", "S1")])
    assert avg is not None
    assert first["average_inventory_value"].value == pytest.approx(avg * 12.34)
    assert after["average_inventory_value"].value == pytest.approx(avg * 20.0)
    untouched = await _kpis(replica, material_codes=["M2"])
    assert untouched["_from_cache"]
    assert untouched["average_inventory_value"].value == other["average_inventory_value"].value

    await world.commit([material("M1", None)], supersedes=True)  # the cost is unknown again
    dropped = (await _kpis(replica, material_codes=["M1"]))["average_inventory_value"]
    assert not dropped.available and "no unit cost" in dropped.note


async def test_a_read_model_from_before_the_costs_table_is_upgraded_in_place(world: World, tmp_path) -> None:
    """No rebuild (that would drop the forecasts): the table is added and the replica catches up."""
    await world.start_export()
    path = tmp_path / "analytics.duckdb"
    first = await world.replica(duckdb_path=str(path), ingestion_target=world.export_target)
    await world.commit(
        [material(code, None) if r.HasField("material") else r for code, r in _coded(_records())]
    )
    await world.stop(first)
    with duckdb.connect(str(path)) as con:  # a file written before the costs table existed
        con.execute("DROP TABLE material_costs")
    applied = world.sequencer.watermark
    again = await world.replica(duckdb_path=str(path), ingestion_target=world.export_target)
    assert world.export is not None and world.export.calls[-1] == applied  # caught up, not rebuilt
    assert not (await _kpis(again))["average_inventory_value"].available
    await world.commit([material("M1", 12.34)], supersedes=True)
    kpi = (await _kpis(again, material_codes=["M1"], site_codes=["S1"]))["average_inventory_value"]
    avg = _average_on_hand(COUNTS[("M1", "S1")])
    assert kpi.available and avg is not None and kpi.value == pytest.approx(avg * 12.34)


def _coded(records: list[records_pb2.Record]) -> list[tuple[str, records_pb2.Record]]:
    return [(r.material.code if r.HasField("material") else "", r) for r in records]


async def test_the_largest_quantity_ingestion_accepts_fits_the_read_model(world: World) -> None:
    """Ingestion's bound (``validation.MAX_MAGNITUDE``) keeps values inside the read model's DECIMAL(18, 6):
    the largest accepted quantity, rounded to a double on the wire, is applied, not refused with its batch."""
    replica = await world.replica()
    largest = float(MAX_MAGNITUDE - Decimal("0.000001"))
    await world.commit([snapshot("M1", "S1", largest, START)])
    request = a.ListInventoryStatusRequest()
    rows = (await replica.stub.ListInventoryStatus(request, metadata=replica.md())).rows
    assert [(r.material_code, r.on_hand) for r in rows] == [("M1", pytest.approx(largest))]
