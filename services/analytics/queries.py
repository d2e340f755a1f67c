"""Read-model queries (everything but the KPIs, see ``kpis``): plain SQL over DuckDB, plain Python results.

Every function takes a ``Job`` (engine thread, own cursor) and runs inside the caller's transaction, so an
answer and the watermarks it is cached under come from one snapshot.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from services.analytics.engine import Job, one
from services.analytics.slices import Slice
from services.analytics.sql_filters import Where, demand_where, stock_where

__all__ = [
    "COVER_CAP_DAYS",
    "HISTORY_RATE_DAYS",
    "MIN_LEAD_TIME_OBSERVATIONS",
    "ExternalInfo",
    "ForecastWeek",
    "HistoryRow",
    "InventoryRow",
    "LeadTimeSample",
    "SeriesPoint",
    "add_periods",
    "data_end",
    "demand_series",
    "external_catalogue",
    "external_values",
    "inventory_for_pairs",
    "inventory_status",
    "last_complete_week",
    "latest_forecast",
    "lead_times",
    "list_materials",
    "list_sites",
    "list_suppliers",
    "materials_bought_from",
    "period_start",
    "series_history",
]

COVER_CAP_DAYS = 3650.0
"""Days of cover reported when no demand is expected (or the cover exceeds it): ten years."""
HISTORY_RATE_DAYS = 91
"""Trailing window of actual demand used for the demand rate when a series has no forecast."""
MIN_LEAD_TIME_OBSERVATIONS = 5
"""A lead-time scope needs at least this many observations, else the next wider one is used."""

GRAINS = {"day", "week", "month"}


def period_start(day: dt.date, grain: str) -> dt.date:
    if grain == "day":
        return day
    if grain == "week":
        return day - dt.timedelta(days=day.weekday())
    return day.replace(day=1)


def add_periods(day: dt.date, grain: str, n: int = 1) -> dt.date:
    if grain == "day":
        return day + dt.timedelta(days=n)
    if grain == "week":
        return day + dt.timedelta(weeks=n)
    months = day.year * 12 + day.month - 1 + n
    return dt.date(months // 12, months % 12 + 1, 1)


def data_end(job: Job) -> dt.date | None:
    """Last demand date in the read model."""
    row = one(job.cursor.execute("SELECT max(demand_date) FROM consumption"))
    return row[0] if row else None


def last_complete_week(end: dt.date | None) -> dt.date | None:
    """Monday of the last week that ends on or before ``end``."""
    if end is None:
        return None
    return period_start(end + dt.timedelta(days=1), "week") - dt.timedelta(days=7)


# -- demand series -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SeriesPoint:
    period: dt.date
    quantity: float
    lines: int


def demand_series(job: Job, s: Slice, grain: str) -> tuple[list[SeriesPoint], list[str], dt.date | None]:
    """(points with zeros filled, distinct units, last actual period) of demand in the slice."""
    where = demand_where(s)
    rows = job.cursor.execute(
        f"SELECT date_trunc('{grain}', c.demand_date)::DATE AS p, sum(c.quantity)::DOUBLE, count(*), "
        f"list(DISTINCT c.unit) FROM consumption c WHERE {where.sql} GROUP BY 1 ORDER BY 1",
        where.params,
    ).fetchall()
    units = sorted({u for *_, us in rows for u in us})
    by_period = {p: (float(q), int(n)) for p, q, n, _ in rows}
    first = period_start(s.start, grain) if s.start else (rows[0][0] if rows else None)
    end = s.end or data_end(job)
    if first is None or end is None:
        return [], units, None
    last = period_start(end, grain)
    points: list[SeriesPoint] = []
    period = first
    while period <= last:
        q, n = by_period.get(period, (0.0, 0))
        points.append(SeriesPoint(period, q, n))
        period = add_periods(period, grain)
    return points, units, (rows[-1][0] if rows else None)


@dataclass(frozen=True, slots=True)
class ForecastWeek:
    week_start: dt.date
    mean: float
    levels: tuple[float, ...]
    values: tuple[float, ...]


def latest_forecast(job: Job, series_key: str) -> tuple[list[ForecastWeek], str, str]:
    """Weeks of the newest forecast of a series, with its model name and version."""
    rows = job.cursor.execute(
        "SELECT week_start, mean, q_levels, q_values, model_name, model_version FROM forecasts "
        "WHERE series_key = ? AND generated_at_us = (SELECT max(generated_at_us) FROM forecasts "
        "WHERE series_key = ?) ORDER BY week_start",
        [series_key, series_key],
    ).fetchall()
    weeks = [ForecastWeek(w, float(m), tuple(lv), tuple(vs)) for w, m, lv, vs, _, _ in rows if w is not None]
    name, version = (rows[0][4], rows[0][5]) if rows else ("", "")
    return weeks, name, version


# -- series history ------------------------------------------------------------------------------------


@dataclass(slots=True)
class HistoryRow:
    material: str
    site: str
    unknown: bool = True
    first_week: dt.date | None = None
    weekly: list[float] = field(default_factory=list)
    family: str = ""
    unit: str = ""
    site_type: int = 0
    material_criticality: int = 0
    site_criticality: int = 0


def series_history(job: Job, keys: Sequence[tuple[str, str]], until: dt.date | None) -> list[HistoryRow]:
    """Weekly demand of many material x site series in one pass over the demand table.

    Quantities are summed in the material's unit only (the master's unit, else the series' most used one):
    lines in another unit cannot be added without a pack size.
    """
    cur = job.cursor
    last_week = period_start(until, "week") if until else last_complete_week(data_end(job))
    result = [HistoryRow(m, s) for m, s in keys]
    if not keys:
        return result
    wanted = pa.table(
        {
            "idx": pa.array(range(len(keys)), type=pa.int64()),
            "material_code": [k[0] for k in keys],
            "site_code": [k[1] for k in keys],
        }
    )
    cur.register("wanted_series", wanted)
    attrs = cur.execute(
        "SELECT w.idx, m.family, m.unit, m.criticality, st.site_type, st.criticality FROM wanted_series w "
        "LEFT JOIN materials m ON m.code = w.material_code LEFT JOIN sites st ON st.code = w.site_code"
    ).fetchall()
    for idx, family, unit, mcrit, stype, scrit in attrs:
        row = result[idx]
        row.family, row.unit = family or "", unit or ""
        row.material_criticality, row.site_type, row.site_criticality = mcrit or 0, stype or 0, scrit or 0
    job.check()
    if last_week is None:
        cur.unregister("wanted_series")
        return result
    data = cur.execute(
        "SELECT w.idx, c.unit, date_trunc('week', c.demand_date)::DATE AS wk, sum(c.quantity)::DOUBLE AS q, "
        "count(*) AS n, min(c.family) AS fam FROM wanted_series w JOIN consumption c "
        "ON c.material_code = w.material_code AND c.site_code = w.site_code "
        "WHERE c.demand_date < ? GROUP BY ALL ORDER BY 1, 3",
        [last_week + dt.timedelta(days=7)],
    ).fetchall()
    cur.unregister("wanted_series")
    by_series: dict[int, dict[str, list[tuple[dt.date, float, int]]]] = defaultdict(lambda: defaultdict(list))
    families: dict[int, str] = {}
    for idx, unit, week, q, n, fam in data:
        by_series[idx][unit].append((week, float(q), int(n)))
        families.setdefault(idx, fam or "")
    for idx, per_unit in by_series.items():
        row = result[idx]
        row.unknown = False
        if not row.family:
            row.family = families.get(idx, "")
        if not row.unit or row.unit not in per_unit:
            row.unit = max(per_unit, key=lambda u: (sum(n for _, _, n in per_unit[u]), u))
        weeks = per_unit[row.unit]
        first = weeks[0][0]
        count = (last_week - first).days // 7 + 1
        values = np.zeros(max(count, 0), dtype=np.float64)
        for week, q, _ in weeks:
            values[(week - first).days // 7] += q
        row.first_week, row.weekly = first, values.tolist()
    return result


# -- lead times ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LeadTimeSample:
    days: list[float]
    scope: str


def _lead_sample(job: Job, where: Where) -> list[float]:
    rows = job.cursor.execute(
        f"SELECT c.lead_time_days FROM consumption c WHERE {where.sql} AND c.lead_time_days >= 0 "
        "ORDER BY c.demand_date, c.requisition_id, c.line_key",
        where.params,
    ).fetchall()
    return [float(r[0]) for r in rows]


def lead_times(job: Job, s: Slice) -> LeadTimeSample:
    """Lead times (purchase date minus solicitation date, negative ones excluded) of the narrowest scope with
    at least MIN_LEAD_TIME_OBSERVATIONS: material_site, material, family, all. Supplier and date range
    constraints apply at every scope."""
    keep = Slice.of(suppliers=s.suppliers, start=s.start, end=s.end)
    scopes: list[tuple[str, Slice]] = []
    geo = s.sites or s.clients or s.regions
    if s.materials and geo:
        scopes.append(
            (
                "material_site",
                Slice.of(
                    materials=s.materials,
                    sites=s.sites,
                    clients=s.clients,
                    regions=s.regions,
                    suppliers=s.suppliers,
                    start=s.start,
                    end=s.end,
                ),
            )
        )
    if s.materials:
        scopes.append(
            ("material", Slice.of(materials=s.materials, suppliers=s.suppliers, start=s.start, end=s.end))
        )
    families = list(s.families)
    if s.materials and not families:
        marks = ", ".join("?" for _ in s.materials)
        families = [
            r[0]
            for r in job.cursor.execute(
                f"SELECT DISTINCT coalesce(nullif(m.family, ''), c.family) FROM consumption c "
                "LEFT JOIN materials m "
                f"ON m.code = c.material_code WHERE c.material_code IN ({marks})",
                list(s.materials),
            ).fetchall()
            if r[0]
        ]
    if families:
        scopes.append(
            ("family", Slice.of(families=families, suppliers=s.suppliers, start=s.start, end=s.end))
        )
    scopes.append(("all", keep))
    days: list[float] = []
    for name, scope in scopes:
        job.check()
        days = _lead_sample(job, demand_where(scope))
        if len(days) >= MIN_LEAD_TIME_OBSERVATIONS:
            return LeadTimeSample(days, name)
    return LeadTimeSample(days, "all")


# -- master data ---------------------------------------------------------------------------------------


def _search(query: str, *columns: str) -> tuple[str, list[object]]:
    if not query:
        return "TRUE", []
    like = f"%{query.lower()}%"
    return "(" + " OR ".join(f"lower({c}) LIKE ?" for c in columns) + ")", [like] * len(columns)


_MATERIALS = (
    "WITH per_unit AS (SELECT material_code, unit, count(*) AS n, sum(quantity) AS q, min(family) AS fam "
    "FROM consumption GROUP BY ALL), "
    "usage AS (SELECT material_code AS code, sum(q) AS q, sum(n) AS n, min(fam) AS fam, "
    "arg_max(unit, n ORDER BY unit) AS unit FROM per_unit GROUP BY 1), "
    "known AS (SELECT coalesce(m.code, u.code) AS code, coalesce(m.name, '') AS name, "
    "coalesce(nullif(m.family, ''), u.fam, '') AS family, coalesce(nullif(m.unit, ''), u.unit, '') AS unit, "
    "coalesce(m.criticality, 0) AS criticality, coalesce(m.abc_class, '') AS abc_class, "
    "coalesce(m.stocked, TRUE) AS stocked, coalesce(u.q, 0)::DOUBLE AS q, coalesce(u.n, 0) AS n "
    "FROM materials m FULL JOIN usage u ON u.code = m.code) "
)
_SITES = (
    "WITH usage AS (SELECT site_code AS code, count(*) AS n FROM consumption GROUP BY 1), "
    "known AS (SELECT coalesce(s.code, u.code) AS code, coalesce(s.client, '') AS client, "
    "coalesce(s.region, '') AS region, coalesce(s.site_type, 0) AS site_type, "
    "coalesce(s.criticality, 0) AS criticality, coalesce(u.n, 0) AS n FROM sites s FULL JOIN usage u "
    "ON u.code = s.code) "
)
_SUPPLIERS = (
    "WITH usage AS (SELECT supplier_code AS code, count(*) AS n, "
    "quantile_cont(lead_time_days, 0.5) FILTER (WHERE lead_time_days >= 0) AS p50 "
    "FROM consumption GROUP BY 1), "
    "known AS (SELECT coalesce(s.code, u.code) AS code, coalesce(s.name, u.code) AS name, "
    "coalesce(u.n, 0) AS n, coalesce(u.p50, 0) AS p50 FROM suppliers s FULL JOIN usage u ON u.code = s.code) "
)


def _listing(
    job: Job, known: str, columns: Sequence[str], query: str, offset: int, limit: int
) -> tuple[list[tuple[object, ...]], int]:
    """One page of a master-data listing ordered by code, and the number of matches."""
    cond, params = _search(query, *columns)
    rows = job.cursor.execute(
        f"{known} SELECT * FROM known WHERE {cond} ORDER BY code LIMIT ? OFFSET ?", [*params, limit, offset]
    ).fetchall()
    total = one(job.cursor.execute(f"{known} SELECT count(*) FROM known WHERE {cond}", params))
    return [tuple(r) for r in rows], int(total[0]) if total else 0


def list_materials(job: Job, query: str, offset: int, limit: int) -> tuple[list[tuple[object, ...]], int]:
    """(code, name, family, unit, criticality, abc_class, stocked, total quantity, lines)."""
    return _listing(job, _MATERIALS, ("code", "name"), query, offset, limit)


def list_sites(job: Job, query: str, offset: int, limit: int) -> tuple[list[tuple[object, ...]], int]:
    """(code, client, region, site_type, criticality, lines)."""
    return _listing(job, _SITES, ("code", "client", "region"), query, offset, limit)


def list_suppliers(job: Job, query: str, offset: int, limit: int) -> tuple[list[tuple[object, ...]], int]:
    """(code, name, lines, median lead time)."""
    return _listing(job, _SUPPLIERS, ("code", "name"), query, offset, limit)


def materials_bought_from(job: Job, suppliers: Sequence[str]) -> tuple[str, ...]:
    """Materials with a demand line of one of ``suppliers``: what a supplier filter keeps of stock records
    (``sql_filters.stock_where``) and of alerts."""
    rows = job.cursor.execute(
        "SELECT DISTINCT material_code FROM consumption WHERE supplier_code IN (SELECT unnest(?::VARCHAR[])) "
        "ORDER BY 1",
        [list(suppliers)],
    ).fetchall()
    return tuple(str(r[0]) for r in rows)


# -- external series -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ExternalInfo:
    series_id: str
    unit: str
    source: str


def external_catalogue(job: Job) -> list[ExternalInfo]:
    rows = job.cursor.execute(
        "SELECT series_id, min(unit), min(source) FROM external_observations GROUP BY 1 ORDER BY 1"
    ).fetchall()
    return [ExternalInfo(*r) for r in rows]


def external_values(
    job: Job, series_id: str, start: dt.date | None, end: dt.date | None, grain: str
) -> tuple[ExternalInfo | None, list[tuple[dt.date, float]]]:
    """Values per period: averaged, except precipitation which is summed."""
    info = one(
        job.cursor.execute(
            "SELECT series_id, min(unit), min(source) FROM external_observations WHERE series_id = ? "
            "GROUP BY 1",
            [series_id],
        )
    )
    if info is None:
        return None, []
    agg = "sum" if "precip" in series_id.lower() else "avg"
    where = Where()
    where.add("series_id = ?", series_id)
    if start:
        where.add("date >= ?", start)
    if end:
        where.add("date <= ?", end)
    rows = job.cursor.execute(
        f"SELECT date_trunc('{grain}', date)::DATE AS p, {agg}(value)::DOUBLE FROM external_observations "
        f"WHERE {where.sql} GROUP BY 1 ORDER BY 1",
        where.params,
    ).fetchall()
    return ExternalInfo(*info), [(p, float(v)) for p, v in rows]


# -- inventory status ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class InventoryRow:
    material: str
    site: str
    on_hand: float
    on_order: float
    backorders: float
    stock_position: float
    safety_stock: float
    reorder_point: float
    days_of_cover: float
    status: int
    suggested_order_quantity: float
    risk: float
    family: str
    unit: str
    lead_time_days: float
    has_policy: bool
    simulated: bool
    policy_version: int
    forecast_version: int
    """generated_at (µs) of the pair's newest forecast, 0 without one: with ``policy_version``, what tells
    two evaluations of the same records apart."""


_STATUS_NORMAL, _STATUS_ATTENTION, _STATUS_CRITICAL = 1, 2, 3


def inventory_sql(s: Slice, as_of: dt.date | None, pairs: bool) -> tuple[str, list[object]]:
    """The inventory computation (documented in docs/kpis.md, "Inventory status"), one row per material x site
    with a stock count, or only the pairs of a registered ``wanted_pairs`` table when ``pairs``."""
    sw = stock_where(s, "s")
    params: list[object] = []
    snap_cond = sw.sql
    params.extend(sw.params)
    if as_of is not None:
        snap_cond += " AND s.as_of <= ?"
        params.append(as_of)
    if pairs:
        snap_cond += (
            " AND EXISTS (SELECT 1 FROM wanted_pairs w "
            "WHERE w.material_code = s.material_code AND w.site_code = s.site_code)"
        )
    day_cap = "AND x.day <= ?" if as_of is not None else ""
    po_cap = (
        "AND (p.received_date IS NULL OR p.received_date > ?) AND p.placed_date <= ?"
        if as_of
        else "AND p.received_date IS NULL"
    )
    sql = f"""
WITH snap AS (
    SELECT s.material_code, s.site_code, max(s.as_of) AS as_of, arg_max(s.on_hand, s.as_of) AS on_hand,
           bool_or(s.simulated) AS simulated
    FROM stock_snapshots s WHERE {snap_cond} GROUP BY ALL
),
moves AS (
    SELECT material_code, site_code, day,
           CASE kind WHEN 1 THEN quantity WHEN 2 THEN -quantity WHEN 3 THEN -quantity
                     ELSE quantity END AS delta
    FROM stock_movements
    UNION ALL
    SELECT material_code, to_site_code, day, quantity FROM stock_movements
    WHERE kind = 3 AND to_site_code <> ''
),
mv AS (
    SELECT x.material_code, x.site_code, sum(x.delta) AS delta FROM moves x
    JOIN snap USING (material_code, site_code) WHERE x.day > snap.as_of {day_cap} GROUP BY ALL
),
po AS (
    SELECT p.material_code, p.site_code, sum(p.quantity) AS on_order, bool_or(p.simulated) AS simulated
    FROM purchase_orders p
    SEMI JOIN snap ON p.material_code = snap.material_code AND p.site_code = snap.site_code
    WHERE TRUE {po_cap} GROUP BY ALL
),
fc AS (
    SELECT material_code, site_code, week_start, mean, q_levels, q_values, generated_at_us FROM forecasts
    WHERE level = 1
    QUALIFY generated_at_us = max(generated_at_us) OVER (PARTITION BY series_key)
),
fc_rate AS (
    SELECT material_code, site_code,
           avg(CASE WHEN mean > 0 THEN mean
                    ELSE coalesce(list_extract(q_values, list_position(q_levels, 0.5)), 0) END
               ORDER BY week_start) / 7.0 AS rate,
           max(generated_at_us) AS forecast_version
    FROM fc GROUP BY ALL
),
horizon AS (SELECT coalesce(?::DATE, max(demand_date)) AS d FROM consumption),
hist AS (
    SELECT c.material_code, c.site_code, sum(c.quantity) / {HISTORY_RATE_DAYS}.0 AS rate
    FROM consumption c SEMI JOIN snap ON c.material_code = snap.material_code AND c.site_code = snap.site_code
    CROSS JOIN horizon
    WHERE c.demand_date > horizon.d - {HISTORY_RATE_DAYS} AND c.demand_date <= horizon.d GROUP BY ALL
),
lt_ms AS (SELECT material_code, site_code, sum(n) AS n, sum(total) / sum(n) AS mean FROM lead_time_stats
          SEMI JOIN snap USING (material_code, site_code) GROUP BY ALL),
lt_m AS (SELECT material_code, sum(n) AS n, sum(total) / sum(n) AS mean FROM lead_time_stats
         SEMI JOIN snap USING (material_code) GROUP BY ALL),
lt_f AS (SELECT family, sum(n) AS n, sum(total) / sum(n) AS mean FROM lead_time_stats GROUP BY ALL),
lt_all AS (SELECT sum(n) AS n, sum(total) / sum(n) AS mean FROM lead_time_stats),
base AS (
    SELECT snap.material_code AS material, snap.site_code AS site,
           snap.on_hand + coalesce(mv.delta, 0) AS ledger,
           coalesce(po.on_order, 0) AS on_order,
           pol.material_code IS NOT NULL AS has_policy,
           coalesce(pol.safety_stock, 0) AS safety_stock, coalesce(pol.reorder_point, 0) AS reorder_point,
           coalesce(pol.order_up_to, 0) AS order_up_to,
           coalesce(fc_rate.rate, hist.rate, 0) AS rate,
           coalesce(nullif(pol.lead_time_mean_days, 0),
                    CASE WHEN lt_ms.n >= {MIN_LEAD_TIME_OBSERVATIONS} THEN lt_ms.mean END,
                    CASE WHEN lt_m.n >= {MIN_LEAD_TIME_OBSERVATIONS} THEN lt_m.mean END,
                    CASE WHEN lt_f.n >= {MIN_LEAD_TIME_OBSERVATIONS} THEN lt_f.mean END,
                    lt_all.mean, 0) AS lead_time,
           coalesce(m.family, '') AS family, coalesce(nullif(m.unit, ''), pol.unit, '') AS unit,
           snap.simulated OR coalesce(po.simulated, FALSE) AS simulated,
           coalesce(pol.generated_at_us, 0) AS policy_version,
           coalesce(fc_rate.forecast_version, 0) AS forecast_version
    FROM snap
    LEFT JOIN mv USING (material_code, site_code)
    LEFT JOIN po USING (material_code, site_code)
    LEFT JOIN policies pol USING (material_code, site_code)
    LEFT JOIN fc_rate USING (material_code, site_code)
    LEFT JOIN hist USING (material_code, site_code)
    LEFT JOIN materials m ON m.code = snap.material_code
    LEFT JOIN lt_ms USING (material_code, site_code)
    LEFT JOIN lt_m USING (material_code)
    LEFT JOIN lt_f ON lt_f.family = coalesce(nullif(m.family, ''), '')
    CROSS JOIN lt_all
    WHERE coalesce(m.stocked, TRUE)
),
pos AS (
    SELECT *, greatest(ledger, 0) AS on_hand, greatest(-ledger, 0) AS backorders,
           greatest(ledger, 0) + on_order - greatest(-ledger, 0) AS position,
           CASE WHEN rate > 0 THEN least(greatest(ledger, 0) / rate, {COVER_CAP_DAYS})
                ELSE {COVER_CAP_DAYS} END
               AS cover
    FROM base
),
rated AS (
    SELECT *,
           CASE WHEN (has_policy AND position <= safety_stock) OR (lead_time > 0 AND cover < lead_time) THEN 3
                WHEN has_policy AND position <= reorder_point THEN 2 ELSE 1 END AS status,
           CASE WHEN has_policy AND position <= reorder_point
                THEN greatest(greatest(order_up_to, reorder_point) - position, 0) ELSE 0 END AS suggested
    FROM pos
)
SELECT material, site, on_hand, on_order, backorders, position, safety_stock, reorder_point, cover, status,
       suggested,
       status
         + 0.5 * CASE WHEN has_policy AND reorder_point > 0
                      THEN least(greatest((reorder_point - position) / reorder_point, 0), 0.999) ELSE 0 END
         + 0.5 * CASE WHEN lead_time > 0
                      THEN least(greatest((lead_time - cover) / lead_time, 0), 0.999) ELSE 0 END
           AS risk,
       family, unit, lead_time, has_policy, simulated, policy_version, forecast_version
FROM rated
"""
    tail: list[object] = []
    if as_of is not None:
        tail = [as_of, as_of, as_of]
    # Parameter order follows the placeholders: snap, mv day cap, po caps, horizon.
    ordered: list[object] = [*params]
    if as_of is not None:
        ordered.append(tail[0])  # mv
        ordered.extend([tail[1], tail[2]])  # po
    ordered.append(as_of)  # horizon
    return sql, ordered


def inventory_status(
    job: Job, s: Slice, min_status: int, offset: int, limit: int
) -> tuple[list[InventoryRow], int]:
    """Inventory status rows of the slice, riskiest first, and the total matching."""
    sql, params = inventory_sql(s, s.end, pairs=False)
    rows = job.cursor.execute(
        f"SELECT *, count(*) OVER () FROM ({sql}) WHERE status >= ? "
        "ORDER BY risk DESC, material, site LIMIT ? OFFSET ?",
        [*params, min_status, limit, offset],
    ).fetchall()
    if rows:
        total = int(rows[0][-1])
    else:  # an empty first page is an empty listing; past the end, the count needs its own query
        total = 0 if offset == 0 else _inventory_count(job, sql, params, min_status)
    return [_inventory_row(r[:-1]) for r in rows], total


def _inventory_count(job: Job, sql: str, params: list[object], min_status: int) -> int:
    row = one(job.cursor.execute(f"SELECT count(*) FROM ({sql}) WHERE status >= ?", [*params, min_status]))
    return int(row[0]) if row else 0


def _inventory_row(r: Sequence[object]) -> InventoryRow:
    return InventoryRow(
        material=str(r[0]),
        site=str(r[1]),
        on_hand=float(r[2]),  # type: ignore[arg-type]
        on_order=float(r[3]),  # type: ignore[arg-type]
        backorders=float(r[4]),  # type: ignore[arg-type]
        stock_position=float(r[5]),  # type: ignore[arg-type]
        safety_stock=float(r[6]),  # type: ignore[arg-type]
        reorder_point=float(r[7]),  # type: ignore[arg-type]
        days_of_cover=float(r[8]),  # type: ignore[arg-type]
        status=int(r[9]),  # type: ignore[call-overload]
        suggested_order_quantity=float(r[10]),  # type: ignore[arg-type]
        risk=float(r[11]),  # type: ignore[arg-type]
        family=str(r[12]),
        unit=str(r[13]),
        lead_time_days=float(r[14]),  # type: ignore[arg-type]
        has_policy=bool(r[15]),
        simulated=bool(r[16]),
        policy_version=int(r[17]),  # type: ignore[call-overload]
        forecast_version=int(r[18]),  # type: ignore[call-overload]
    )


def inventory_for_pairs(job: Job, pairs: Sequence[tuple[str, str]] | None) -> list[InventoryRow]:
    """Current inventory rows of the given pairs (all pairs when None): what alerts are evaluated on."""
    cur = job.cursor
    if pairs is not None:
        if not pairs:
            return []
        cur.register(
            "wanted_pairs",
            pa.table({"material_code": [p[0] for p in pairs], "site_code": [p[1] for p in pairs]}),
        )
    try:
        if pairs is not None:
            # Most changed pairs (new demand lines) have no stock counts: skip the full computation then.
            counted = one(
                cur.execute(
                    "SELECT count(*) FROM (SELECT 1 FROM stock_snapshots s JOIN wanted_pairs w "
                    "ON w.material_code = s.material_code AND w.site_code = s.site_code LIMIT 1)"
                )
            )
            if not counted or not counted[0]:
                return []
        sql, params = inventory_sql(Slice(), None, pairs=pairs is not None)
        rows = cur.execute(sql, params).fetchall()
    finally:
        if pairs is not None:
            cur.unregister("wanted_pairs")
    return [_inventory_row(r) for r in rows]
