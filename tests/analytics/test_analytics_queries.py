"""Answers of analytics-query on real requisition lines, checked against computations made here from the
same rows (plain Python / numpy, not the service's SQL)."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict

import numpy as np
import pytest
from novacorrente.analytics.v1 import analytics_pb2 as a
from novacorrente.common.v1 import common_pb2 as c
from novacorrente.ingestion.v1 import records_pb2

from tests.analytics.analytics_data import (
    Row,
    consumption_record,
    date,
    forecast_event,
    line_key_of,
    snapshot,
)
from tests.analytics.conftest import World, eventually


def _monday(day: dt.date) -> dt.date:
    return day - dt.timedelta(days=day.weekday())


def _family_of(rows: tuple[Row, ...]) -> dict[str, str]:
    """The master family of each material: the family of its first line (what the master records say)."""
    family: dict[str, str] = {}
    for r in rows:
        family.setdefault(r.material, r.family)
    return family


def _range(start: dt.date, end: dt.date) -> c.DateRange:
    return c.DateRange(start=date(start), end=date(end))


def _d(value: c.Date) -> dt.date:
    return dt.date(value.year, value.month, value.day)


async def test_weekly_demand_series_has_the_zero_weeks_and_the_rows_totals(
    world: World, rows, real_records
) -> None:
    replica = await world.replica()
    await world.commit(real_records)
    start, end = dt.date(2025, 1, 6), dt.date(2025, 6, 29)
    family = _family_of(rows)
    expected: dict[dt.date, float] = defaultdict(float)
    lines: dict[dt.date, int] = defaultdict(int)
    for r in rows:
        if family[r.material] == "EPI" and start <= r.solicited <= end:
            expected[_monday(r.solicited)] += r.quantity
            lines[_monday(r.solicited)] += 1

    response = await replica.stub.GetDemandSeries(
        a.GetDemandSeriesRequest(filter=c.Filter(families=["EPI"], date_range=_range(start, end))),
        metadata=replica.md(),
    )
    weeks = [_d(p.period_start) for p in response.points]
    assert weeks == [start + dt.timedelta(weeks=i) for i in range(25)]  # every week, in order
    assert any(p.quantity == 0 and p.lines == 0 for p in response.points)  # EPI is intermittent
    for p in response.points:
        assert p.quantity == pytest.approx(expected.get(_d(p.period_start), 0.0))
        assert p.lines == lines.get(_d(p.period_start), 0)
    # Provenance: the highest sequence among the records the answer depends on (EPI lines and materials).
    relevant = [
        r.sequence
        for r in world.sequencer.log
        if (r.record.HasField("consumption") and family[r.record.consumption.material_code] == "EPI")
        or (r.record.HasField("material") and r.record.material.family == "EPI")
    ]
    assert response.provenance.data_watermark == f"seq:{max(relevant)}"
    assert not response.provenance.from_cache

    monthly = await replica.stub.GetDemandSeries(
        a.GetDemandSeriesRequest(
            filter=c.Filter(families=["EPI"], date_range=_range(start, end)), grain=c.TIME_GRAIN_MONTH
        ),
        metadata=replica.md(),
    )
    assert [(_d(p.period_start).month) for p in monthly.points] == [1, 2, 3, 4, 5, 6]
    assert sum(p.quantity for p in monthly.points) == pytest.approx(sum(expected.values()))


async def test_three_kpis_equal_an_independent_computation_on_the_same_rows(
    world: World, rows, real_records
) -> None:
    replica = await world.replica()
    await world.commit(real_records)
    start, end = dt.date(2025, 1, 1), dt.date(2025, 9, 30)
    family = _family_of(rows)
    chosen = [r for r in rows if family[r.material] == "MATERIAL ELETRICO" and start <= r.solicited <= end]
    lead = np.array(
        [(r.purchased - r.solicited).days for r in chosen if r.purchased and r.purchased >= r.solicited],
        dtype=float,
    )

    response = await replica.stub.GetKpis(
        a.GetKpisRequest(
            filter=c.Filter(families=["MATERIAL ELETRICO"], date_range=_range(start, end)),
            names=[
                "total_demand",
                "demand_lines",
                "lead_time_p90_days",
                "lead_time_mean_days",
                "lead_time_std_days",
            ],
        ),
        metadata=replica.md(),
    )
    got = {k.name: k for k in response.kpis}
    assert [k.name for k in response.kpis][:2] == ["total_demand", "demand_lines"]  # the order asked
    assert got["total_demand"].value == pytest.approx(sum(r.quantity for r in chosen))
    assert got["demand_lines"].value == len(chosen)
    assert got["lead_time_p90_days"].value == pytest.approx(float(np.percentile(lead, 90)))
    assert got["lead_time_mean_days"].value == pytest.approx(float(lead.mean()))
    assert got["lead_time_std_days"].value == pytest.approx(float(lead.std(ddof=1)))
    assert all(k.available for k in response.kpis)


async def test_stock_kpis_equal_a_day_by_day_simulation(world: World, rows, real_records) -> None:
    """Stock-out rate, stock-out days and fill rate against a day-by-day walk over synthetic counts."""
    replica = await world.replica()
    await world.commit(real_records)
    material, site = "010932", "ALMOX-BA"
    counts = {
        dt.date(2025, 1, 2): 40.0,
        dt.date(2025, 2, 10): 0.0,
        dt.date(2025, 3, 1): 12.0,
        dt.date(2025, 4, 15): 0.0,
        dt.date(2025, 5, 20): 25.0,
    }
    await world.commit([snapshot(material, site, v, d) for d, v in counts.items()])
    start, end = dt.date(2025, 1, 1), dt.date(2025, 6, 30)

    observed = out = 0
    day = start
    while day <= end:
        known = [d for d in counts if d <= day]
        if known:
            observed += 1
            out += counts[max(known)] <= 0
        day += dt.timedelta(days=1)
    demand: dict[dt.date, float] = defaultdict(float)
    for r in rows:
        if r.material == material and r.site == site and start <= r.solicited <= end:
            demand[r.solicited] += r.quantity
    asked = filled = 0.0
    for day, q in demand.items():
        before = [d for d in counts if d < day]
        if before:
            asked += q
            filled += min(q, max(counts[max(before)], 0.0))

    response = await replica.stub.GetKpis(
        a.GetKpisRequest(
            filter=c.Filter(material_codes=[material], site_codes=[site], date_range=_range(start, end)),
            names=["stockout_rate", "stockout_days", "fill_rate", "average_inventory_value"],
        ),
        metadata=replica.md(),
    )
    got = {k.name: k for k in response.kpis}
    assert got["stockout_days"].value == out
    assert got["stockout_rate"].value == pytest.approx(100.0 * out / observed)
    assert got["fill_rate"].value == pytest.approx(100.0 * filled / asked)
    assert not got["average_inventory_value"].available  # no prices anywhere: never invented
    assert "cost" in got["average_inventory_value"].note


async def test_stock_kpis_are_unavailable_without_stock_and_say_simulated_when_the_records_are(
    world: World, real_records
) -> None:
    replica = await world.replica()
    await world.commit(real_records)
    request = a.GetKpisRequest(names=["stockout_rate", "total_demand"])

    async def kpis(filter: c.Filter | None = None) -> dict[str, a.Kpi]:
        asked = a.GetKpisRequest(names=request.names, filter=filter)
        return {k.name: k for k in (await replica.stub.GetKpis(asked, metadata=replica.md())).kpis}

    before = await kpis()
    assert not before["stockout_rate"].available and before["stockout_rate"].note
    assert before["total_demand"].available
    await world.commit([snapshot("010932", "ALMOX-BA", 3, dt.date(2025, 1, 2))])
    counted = await kpis()
    assert counted["stockout_rate"].available
    assert "simulated" not in counted["stockout_rate"].note
    # The marker travels with the record: a simulated count anywhere in the slice shows in the note, and a
    # slice of counted stock only does not carry it.
    await world.commit([snapshot("010323", "ALMOX-BA", 5, dt.date(2025, 1, 2), simulated=True)])
    assert "simulated" in (await kpis())["stockout_rate"].note
    assert "simulated" not in (await kpis(c.Filter(material_codes=["010932"])))["stockout_rate"].note
    rows = (
        await replica.stub.ListInventoryStatus(a.ListInventoryStatusRequest(), metadata=replica.md())
    ).rows
    assert {(r.material_code, r.simulated) for r in rows} == {("010932", False), ("010323", True)}


async def test_series_history_is_batched_with_zeros_and_static_attributes(
    world: World, rows, real_records
) -> None:
    replica = await world.replica()
    await world.commit(real_records)
    keys = [("0001", "ALMOX-BA"), ("0148", "N/A"), ("NOPE", "NOWHERE"), ("010323", rows[0].site)]
    response = await replica.stub.GetSeriesHistory(
        a.GetSeriesHistoryRequest(series=[a.SeriesKey(material_code=m, site_code=s) for m, s in keys]),
        metadata=replica.md(),
    )
    assert [(h.key.material_code, h.key.site_code) for h in response.series] == keys  # request order
    assert response.series[2].unknown and not response.series[2].weekly_quantity
    last_day = max(r.solicited for r in rows)
    last_week = _monday(last_day + dt.timedelta(days=1)) - dt.timedelta(days=7)  # last complete week
    for history, (material, site) in zip(response.series[:2], keys[:2], strict=True):
        unit = next(r.unit for r in rows if r.material == material)  # the master's unit
        weekly: dict[dt.date, float] = defaultdict(float)
        for r in rows:
            if (
                r.material == material
                and r.site == site
                and r.unit == unit
                and _monday(r.solicited) <= last_week
            ):
                weekly[_monday(r.solicited)] += r.quantity
        first = min(weekly)
        assert _d(history.first_week) == first
        n = (last_week - first).days // 7 + 1
        assert list(history.weekly_quantity) == pytest.approx(
            [weekly.get(first + dt.timedelta(weeks=i), 0.0) for i in range(n)]
        )
        assert 0.0 in history.weekly_quantity
        assert history.unit == unit and history.family == _family_of(rows)[material]
        assert not history.unknown


async def test_lead_times_fall_back_to_the_narrowest_scope_with_five_observations(
    world: World, rows, real_records
) -> None:
    replica = await world.replica()
    await world.commit(real_records)

    def sample(pred) -> list[float]:  # type: ignore[no-untyped-def]
        return sorted(
            float((r.purchased - r.solicited).days)
            for r in rows
            if pred(r) and r.purchased and r.purchased >= r.solicited
        )

    busy = await replica.stub.GetLeadTimes(
        a.GetLeadTimesRequest(filter=c.Filter(material_codes=["0001"], site_codes=["ALMOX-BA"])),
        metadata=replica.md(),
    )
    assert busy.scope == "material_site"
    expected = sample(lambda r: r.material == "0001" and r.site == "ALMOX-BA")
    assert sorted(busy.days) == expected
    assert busy.p50_days == pytest.approx(float(np.percentile(expected, 50)))

    material, site = rows[0].material, rows[0].site
    assert len(sample(lambda r: r.material == material and r.site == site)) < 5
    wider = await replica.stub.GetLeadTimes(
        a.GetLeadTimesRequest(filter=c.Filter(material_codes=[material], site_codes=[site])),
        metadata=replica.md(),
    )
    assert wider.scope == "material"
    assert sorted(wider.days) == sample(lambda r: r.material == material)
    assert min(wider.days) >= 0  # negative lead times are left out

    everything = await replica.stub.GetLeadTimes(a.GetLeadTimesRequest(), metadata=replica.md())
    assert everything.scope == "all" and len(everything.days) == len(sample(lambda r: True))


async def test_master_data_listing_searches_and_pages(world: World, rows, real_records) -> None:
    replica = await world.replica()
    await world.commit(real_records)
    materials = sorted({r.material for r in rows})
    seen: list[str] = []
    token = ""
    while True:
        page = await replica.stub.ListMaterials(
            a.ListMasterDataRequest(page=c.PageRequest(page_size=300, page_token=token)),
            metadata=replica.md(),
        )
        assert page.page.total_size == len(materials)
        seen.extend(m.code for m in page.materials)
        token = page.page.next_page_token
        if not token:
            break
    assert seen == materials
    found = await replica.stub.ListMaterials(a.ListMasterDataRequest(query="prego"), metadata=replica.md())
    assert found.materials and all("prego" in m.name.lower() or "prego" in m.code for m in found.materials)
    row = next(m for m in found.materials)
    assert row.lines == sum(1 for r in rows if r.material == row.code)
    sites = await replica.stub.ListSites(a.ListMasterDataRequest(query="almox"), metadata=replica.md())
    assert [s.code for s in sites.sites] == sorted({r.site for r in rows if "almox" in r.site.lower()})
    suppliers = await replica.stub.ListSuppliers(
        a.ListMasterDataRequest(page=c.PageRequest(page_size=5)), metadata=replica.md()
    )
    assert suppliers.page.total_size == len({r.supplier for r in rows}) and len(suppliers.suppliers) == 5


async def test_demand_series_carries_the_latest_forecast_band(world: World, real_records) -> None:
    replica = await world.replica()
    await world.commit(real_records)
    material, site = "0001", "ALMOX-BA"
    old = forecast_event(
        material,
        site,
        [(dt.date(2025, 10, 27), 0, 1, 2)],
        generated_at=dt.datetime(2025, 10, 1, tzinfo=dt.UTC),
    )
    new = forecast_event(
        material,
        site,
        [(dt.date(2025, 10, 20), 1, 3, 6), (dt.date(2025, 10, 27), 2, 4, 8), (dt.date(2025, 11, 3), 2, 5, 9)],
        generated_at=dt.datetime(2025, 10, 20, tzinfo=dt.UTC),
    )
    await world.publish(new, old)  # the older one arrives last and must not win
    await inbox_reaches(replica, 3)
    response = await replica.stub.GetDemandSeries(
        a.GetDemandSeriesRequest(
            filter=c.Filter(material_codes=[material], site_codes=[site]), include_forecast=True
        ),
        metadata=replica.md(),
    )
    by_week = {_d(p.period_start): p for p in response.points}
    assert [q.value for q in by_week[dt.date(2025, 10, 27)].forecast] == [2, 4, 8]
    future = [p for p in response.points if p.is_forecast]
    assert [_d(p.period_start) for p in future] == [dt.date(2025, 10, 27), dt.date(2025, 11, 3)]
    assert not by_week[dt.date(2025, 10, 20)].is_forecast  # the last actual week, with its band
    assert [q.level for q in by_week[dt.date(2025, 10, 20)].forecast] == [0.1, 0.5, 0.9]
    assert response.provenance.model_name == "lgbm-quantile" and response.provenance.model_version == "7"


async def inbox_reaches(replica, n: int) -> None:  # type: ignore[no-untyped-def]
    """Wait until the replica has applied ``n`` distinct events."""

    def count(job):  # type: ignore[no-untyped-def]
        return job.cursor.execute("SELECT count(*) FROM inbox").fetchall()[0][0]

    async def enough() -> bool:
        return await replica.app.engine.read(count) >= n

    await eventually(enough)


async def test_forecast_accuracy_against_actuals(world: World, rows, real_records) -> None:
    replica = await world.replica()
    await world.commit(real_records)
    material, site = "0001", "ALMOX-BA"
    weeks = [dt.date(2025, 3, 3) + dt.timedelta(weeks=i) for i in range(8)]
    actual: dict[dt.date, float] = defaultdict(float)
    for r in rows:
        if r.material == material and r.site == site:
            actual[_monday(r.solicited)] += r.quantity
    forecasts = [(w, 1.0, 5.0 + i, 30.0) for i, w in enumerate(weeks)]
    await world.publish(
        forecast_event(material, site, forecasts, generated_at=dt.datetime(2025, 3, 1, tzinfo=dt.UTC))
    )
    await inbox_reaches(replica, 2)
    response = await replica.stub.GetKpis(
        a.GetKpisRequest(
            filter=c.Filter(material_codes=[material], site_codes=[site]),
            names=["forecast_wape", "forecast_bias", "forecast_interval_coverage"],
        ),
        metadata=replica.md(),
    )
    got = {k.name: k for k in response.kpis}
    acts = np.array([actual.get(w, 0.0) for w in weeks])
    points = np.array([f[2] for f in forecasts])
    assert got["forecast_wape"].value == pytest.approx(100 * np.abs(acts - points).sum() / acts.sum())
    assert got["forecast_bias"].value == pytest.approx(100 * (points - acts).sum() / acts.sum())
    inside = [1.0 <= x <= 30.0 for x in acts]
    assert got["forecast_interval_coverage"].value == pytest.approx(100 * sum(inside) / len(inside))
    assert "nominal 80%" in got["forecast_interval_coverage"].note


async def test_external_series_by_grain(world: World) -> None:
    replica = await world.replica()
    obs = []
    for day in range(1, 60):
        when = dt.date(2025, 1, 1) + dt.timedelta(days=day - 1)
        obs.append(
            records_pb2.Record(
                external_observation=records_pb2.ExternalObservation(
                    series_id="weather.salvador.precipitation_mm",
                    date=date(when),
                    value=1.0,
                    unit="mm",
                    source="Open-Meteo",
                )
            )
        )
        obs.append(
            records_pb2.Record(
                external_observation=records_pb2.ExternalObservation(
                    series_id="ptax.usd.sell",
                    date=date(when),
                    value=float(day),
                    unit="BRL",
                    source="BCB PTAX",
                )
            )
        )
    await world.commit(obs)
    listing = await replica.stub.GetExternalSeries(a.GetExternalSeriesRequest(), metadata=replica.md())
    assert [s.series_id for s in listing.series] == ["ptax.usd.sell", "weather.salvador.precipitation_mm"]
    assert not listing.series[0].values
    monthly = await replica.stub.GetExternalSeries(
        a.GetExternalSeriesRequest(
            series_ids=["weather.salvador.precipitation_mm", "ptax.usd.sell"], grain=c.TIME_GRAIN_MONTH
        ),
        metadata=replica.md(),
    )
    rain, ptax = monthly.series
    assert list(rain.values) == [31.0, 28.0]  # summed
    assert list(ptax.values) == pytest.approx([16.0, 45.5])  # averaged
    assert ptax.unit == "BRL" and ptax.source == "BCB PTAX"


async def test_redelivered_and_overlapping_events_change_nothing(world: World, real_records) -> None:
    replica = await world.replica()
    event = await world.commit(real_records[:2000])
    request = a.GetKpisRequest(names=["total_demand", "demand_lines"])
    first = await replica.stub.GetKpis(request, metadata=replica.md())
    await world.publish(event)  # the same event again (a redelivery)
    overlap = type(event)()
    overlap.CopyFrom(event)
    overlap.event_id = "another-id-same-records"  # e.g. a relay that published twice under new ids
    await world.publish(overlap)
    await inbox_reaches(replica, 2)
    assert replica.app.service.model.applied_seq == world.sequencer.watermark
    again = await replica.stub.GetKpis(request, metadata=replica.md())
    assert [k.value for k in again.kpis] == [k.value for k in first.kpis]

    def count(job):  # type: ignore[no-untyped-def]
        return job.cursor.execute("SELECT count(*) FROM consumption").fetchall()[0][0]

    assert await replica.app.engine.read(count) == sum(
        1 for r in real_records[:2000] if r.HasField("consumption")
    )


async def test_back_dated_correction_changes_its_kpi_and_leaves_other_answers_cached(
    world: World, rows, real_records
) -> None:
    replica = await world.replica()
    await world.commit(real_records)
    target = next(i for i, r in enumerate(rows) if r.material == "010323")
    row = rows[target]
    other_filter = c.Filter(
        material_codes=["0001"], date_range=_range(dt.date(2025, 1, 1), dt.date(2025, 6, 30))
    )
    affected = a.GetKpisRequest(filter=c.Filter(material_codes=["010323"]), names=["total_demand"])
    other_kpi = a.GetKpisRequest(filter=other_filter, names=["total_demand", "lead_time_p50_days"])
    other_series = a.GetDemandSeriesRequest(filter=other_filter)

    before = await replica.stub.GetKpis(affected, metadata=replica.md())
    other_kpi_first = await replica.stub.GetKpis(other_kpi, metadata=replica.md())
    other_series_first = await replica.stub.GetDemandSeries(other_series, metadata=replica.md())
    assert not before.provenance.from_cache
    assert (await replica.stub.GetKpis(affected, metadata=replica.md())).provenance.from_cache

    corrected = consumption_record(row, line_key_of(rows, target))
    corrected.consumption.quantity = row.quantity + 1000  # a correction of a line from months ago
    await world.commit([corrected], supersedes=True)

    after = await replica.stub.GetKpis(affected, metadata=replica.md())
    assert not after.provenance.from_cache
    assert after.kpis[0].value == pytest.approx(before.kpis[0].value + 1000)
    assert after.provenance.data_watermark == f"seq:{world.sequencer.watermark}"
    other_kpi_again = await replica.stub.GetKpis(other_kpi, metadata=replica.md())
    other_series_again = await replica.stub.GetDemandSeries(other_series, metadata=replica.md())
    assert other_kpi_again.provenance.from_cache and other_series_again.provenance.from_cache
    assert other_kpi_again.kpis == other_kpi_first.kpis
    assert other_series_again.points == other_series_first.points
    # A family-wide answer includes the corrected line: it is not served stale.
    family = _family_of(rows)["010323"]
    by_family = a.GetKpisRequest(filter=c.Filter(families=[family]), names=["total_demand"])
    assert not (await replica.stub.GetKpis(by_family, metadata=replica.md())).provenance.from_cache


async def test_a_gap_in_sequence_triggers_a_catch_up_from_the_export(world: World, real_records) -> None:
    await world.start_export()
    replica = await world.replica(ingestion_target=world.export_target)
    await world.commit(real_records[:1000])
    missed = world.sequencer.commit(real_records[1000:2000])  # committed, but its event never arrives
    assert missed.sequence_from == replica.app.service.model.applied_seq + 1
    await world.commit(real_records[2000:3000])
    assert replica.app.service.model.applied_seq == world.sequencer.watermark
    assert world.export is not None and world.export.calls[-1] == 1000  # caught up from where it was

    def count(job):  # type: ignore[no-untyped-def]
        return job.cursor.execute("SELECT count(*) FROM consumption").fetchall()[0][0]

    assert await replica.app.engine.read(count) == sum(
        1 for r in real_records[:3000] if r.HasField("consumption")
    )


async def test_inventory_status_is_sorted_by_risk_filtered_and_paged(world: World, real_records) -> None:
    replica = await world.replica()
    await world.commit(real_records)
    day = dt.date(2025, 10, 20)
    pairs = [("010932", "ALMOX-BA", 2.0), ("010323", "N/A", 50.0), ("010436", "ALMOX-BA", 9.0)]
    await world.commit([snapshot(m, s, v, day) for m, s, v in pairs])
    for m, s, _ in pairs:
        await world.publish(
            forecast_event(
                m,
                s,
                [(dt.date(2025, 11, 3), 0.0, 0.1, 0.5)],
                generated_at=dt.datetime(2025, 10, 21, tzinfo=dt.UTC),
                safety_stock=3.0,
                reorder_point=10.0,
                order_up_to=30.0,
                lead_time_mean_days=5.0,
            )
        )
    await inbox_reaches(replica, 5)
    everything = await replica.stub.ListInventoryStatus(a.ListInventoryStatusRequest(), metadata=replica.md())
    rows = [(r.material_code, r.status) for r in everything.rows]
    assert rows == [
        ("010932", a.STOCK_STATUS_CRITICAL),  # 2 <= safety stock 3
        ("010436", a.STOCK_STATUS_ATTENTION),  # 9 <= reorder point 10
        ("010323", a.STOCK_STATUS_NORMAL),
    ]
    risks = [r.risk for r in everything.rows]
    assert risks == sorted(risks, reverse=True)
    assert everything.rows[0].suggested_order_quantity == 28.0  # up to 30 from a position of 2
    assert everything.rows[2].suggested_order_quantity == 0.0
    at_least = await replica.stub.ListInventoryStatus(
        a.ListInventoryStatusRequest(min_status=a.STOCK_STATUS_ATTENTION, page=c.PageRequest(page_size=1)),
        metadata=replica.md(),
    )
    assert at_least.page.total_size == 2 and [r.material_code for r in at_least.rows] == ["010932"]
    second = await replica.stub.ListInventoryStatus(
        a.ListInventoryStatusRequest(
            min_status=a.STOCK_STATUS_ATTENTION,
            page=c.PageRequest(page_size=1, page_token=at_least.page.next_page_token),
        ),
        metadata=replica.md(),
    )
    assert [r.material_code for r in second.rows] == ["010436"] and not second.page.next_page_token
