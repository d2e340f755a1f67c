"""KPI computations. Each formula is documented in docs/kpis.md; the two must say the same thing.

A KPI the data cannot support comes back with ``available=False`` and a note saying why: nothing is
estimated or invented. Stock KPIs read stock counts, movements and purchase orders when they were ingested
(from a real ledger, or from the demo's simulated one: then the note says so).
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from services.analytics.engine import Job, one
from services.analytics.queries import HISTORY_RATE_DAYS
from services.analytics.slices import Slice
from services.analytics.sql_filters import demand_where, stock_where

__all__ = ["KPI_NAMES", "KPI_UNITS", "KpiValue", "compute_kpis"]


@dataclass(frozen=True, slots=True)
class KpiValue:
    name: str
    value: float
    unit: str
    available: bool
    note: str = ""


KPI_UNITS: dict[str, str] = {
    "total_demand": "units",
    "demand_lines": "lines",
    "fill_rate": "%",
    "stockout_rate": "%",
    "stockout_days": "days",
    "days_of_cover": "days",
    "inventory_turnover": "turns/year",
    "average_inventory_units": "units",
    "average_inventory_value": "BRL",
    "abc_a_share": "%",
    "abc_b_share": "%",
    "abc_c_share": "%",
    "lead_time_mean_days": "days",
    "lead_time_p50_days": "days",
    "lead_time_p90_days": "days",
    "lead_time_std_days": "days",
    "on_time_rate": "%",
    "forecast_wape": "%",
    "forecast_bias": "%",
    "forecast_interval_coverage": "%",
    "sla_risk_series": "series",
    "critical_site_stockout_days": "days",
}
KPI_NAMES: tuple[str, ...] = tuple(KPI_UNITS)
"""Every KPI, in the documented order (the order of an answer that asks for all)."""

_SIMULATED = "stock from a simulated ledger (demo), not real counts"
_NO_STOCK = "no stock counts in the read model for this slice"


def _ok(name: str, value: float, note: str = "") -> KpiValue:
    if value is None or not math.isfinite(value):
        return KpiValue(name, 0.0, KPI_UNITS[name], False, note or "not computable on this slice")
    return KpiValue(name, float(value), KPI_UNITS[name], True, note)


def _na(name: str, note: str) -> KpiValue:
    return KpiValue(name, 0.0, KPI_UNITS[name], False, note)


def _join(*notes: str) -> str:
    return "; ".join(n for n in notes if n)


# -- demand --------------------------------------------------------------------------------------------


def _demand(job: Job, s: Slice, ctx: _Context) -> list[KpiValue]:
    where = demand_where(s)
    q, n, units = one(
        job.cursor.execute(
            "SELECT sum(c.quantity)::DOUBLE, count(*), list(DISTINCT c.unit ORDER BY c.unit) "
            f"FROM consumption c WHERE {where.sql}",
            where.params,
        )
    )  # type: ignore[misc]
    note = f"mixed units: {', '.join(units)}" if units and len(units) > 1 else ""
    return [_ok("total_demand", float(q or 0.0), note), _ok("demand_lines", float(n))]


# -- stock ---------------------------------------------------------------------------------------------


class _Context:
    """Facts several KPI groups need, computed once per request."""

    def __init__(self) -> None:
        self.simulated = False
        self.stock_rows = 0
        self.stock_first: dt.date | None = None
        self.stock_last: dt.date | None = None
        self.start: dt.date | None = None
        self.end: dt.date | None = None

    def load_stock(self, job: Job, s: Slice) -> None:
        """The stock facts (only the stock KPIs need them)."""
        sw = stock_where(s, "s")
        row = one(
            job.cursor.execute(
                f"SELECT min(s.as_of), max(s.as_of), count(*), bool_or(s.simulated) FROM stock_snapshots s "
                f"WHERE {sw.sql}",
                sw.params,
            )
        )
        self.stock_first, self.stock_last, self.stock_rows, sim = row if row else (None, None, 0, False)
        self.simulated = bool(sim)
        # The period of stock KPIs: the filter's dates, else the span of the slice's stock counts.
        self.start = s.start or self.stock_first
        self.end = s.end or self.stock_last

    @property
    def has_stock(self) -> bool:
        return (
            bool(self.stock_rows)
            and self.start is not None
            and self.end is not None
            and self.start <= self.end
        )

    def stock_note(self, *extra: str) -> str:
        return _join(_SIMULATED if self.simulated else "", *extra)


def _stock(job: Job, s: Slice, ctx: _Context) -> list[KpiValue]:
    names = (
        "fill_rate",
        "stockout_rate",
        "stockout_days",
        "days_of_cover",
        "inventory_turnover",
        "average_inventory_units",
        "sla_risk_series",
        "critical_site_stockout_days",
    )
    ctx.load_stock(job, s)
    if not ctx.has_stock:
        return [_na(n, _NO_STOCK) for n in (*names, "average_inventory_value")]
    start, end = ctx.start, ctx.end
    assert start is not None and end is not None
    period_days = (end - start).days + 1
    sw = stock_where(s, "s")
    dw = demand_where(s, dates=False)
    critical_known = one(job.cursor.execute("SELECT count(*) FROM sites WHERE criticality = 3"))[0]  # type: ignore[index]
    row = one(
        job.cursor.execute(
            f"""
WITH s AS (
    SELECT s.material_code, s.site_code, s.as_of, s.on_hand,
           lead(s.as_of) OVER (PARTITION BY s.material_code, s.site_code ORDER BY s.as_of) AS nxt
    FROM stock_snapshots s WHERE {sw.sql} AND s.as_of <= ?
),
iv AS (
    SELECT material_code, site_code, on_hand, as_of,
           greatest(as_of, ?::DATE) AS a, least(coalesce(nxt, ?::DATE + 1), ?::DATE + 1) AS b FROM s
),
per AS (
    SELECT material_code, site_code, sum(date_diff('day', a, b)) AS obs,
           coalesce(sum(date_diff('day', a, b)) FILTER (WHERE on_hand <= 0), 0) AS out_days,
           sum(on_hand * date_diff('day', a, b)) AS oh_days
    FROM iv WHERE b > a GROUP BY ALL
),
cur AS (SELECT material_code, site_code, arg_max(on_hand, as_of) AS oh FROM s GROUP BY ALL),
dem AS (
    -- Only the demand of the pairs that have stock counts: a join on the few counted pairs, not a pass
    -- aggregating every series of the company.
    SELECT c.material_code, c.site_code,
           sum(c.quantity) FILTER (WHERE c.demand_date BETWEEN ? AND ?) AS period_q,
           sum(c.quantity) FILTER (WHERE c.demand_date > ?::DATE - {HISTORY_RATE_DAYS} AND c.demand_date <= ?)
               AS trail_q
    FROM consumption c SEMI JOIN cur ON c.material_code = cur.material_code AND c.site_code = cur.site_code
    WHERE {dw.sql} GROUP BY ALL
),
crit AS (SELECT code FROM sites WHERE criticality = 3),
-- Each observed pair's time-weighted average on hand, and its material's unit cost (NULL: unknown).
avg_oh AS (
    SELECT per.material_code, per.site_code, per.oh_days / per.obs AS oh, mc.unit_cost_brl AS cost
    FROM per LEFT JOIN material_costs mc ON mc.code = per.material_code WHERE per.obs > 0
)
SELECT
    (SELECT sum(obs) FROM per),
    (SELECT sum(out_days) FROM per),
    (SELECT sum(oh_days / obs ORDER BY material_code, site_code) FROM per WHERE obs > 0),
    (SELECT sum(dem.period_q)::DOUBLE FROM per JOIN dem USING (material_code, site_code)),
    (SELECT sum(oh)::DOUBLE FROM cur),
    (SELECT sum(dem.trail_q)::DOUBLE FROM cur JOIN dem USING (material_code, site_code)),
    (SELECT count(*) FROM cur WHERE oh <= 0 AND site_code IN (SELECT code FROM crit)),
    (SELECT sum(out_days) FROM per WHERE site_code IN (SELECT code FROM crit)),
    v.value, v.pairs, v.costed_pairs, v.costed_oh
FROM (
    SELECT sum(oh * cost ORDER BY material_code, site_code) FILTER (WHERE cost IS NOT NULL) AS value,
           count(*) AS pairs, count(cost) AS costed_pairs,
           sum(oh ORDER BY material_code, site_code) FILTER (WHERE cost IS NOT NULL) AS costed_oh
    FROM avg_oh
) AS v
""",
            [*sw.params, end, start, end, end, start, end, end, end, *dw.params],
        )
    )
    obs, out_days, avg_inv, period_q, on_hand_now, trail_q, crit_out, crit_days = row[:8]  # type: ignore[index]
    value, pairs, costed_pairs, costed_inv = row[8:]  # type: ignore[index]
    job.check()
    fill = _fill_rate(job, s, start, end, ctx)
    result = [fill]
    if obs:
        result.append(_ok("stockout_rate", 100.0 * out_days / obs, ctx.stock_note()))
        result.append(_ok("stockout_days", float(out_days), ctx.stock_note()))
    else:
        result += [_na("stockout_rate", _NO_STOCK), _na("stockout_days", _NO_STOCK)]
    rate = (trail_q or 0.0) / HISTORY_RATE_DAYS
    if on_hand_now is None:
        result.append(_na("days_of_cover", _NO_STOCK))
    elif rate <= 0:
        result.append(_na("days_of_cover", f"no demand in the {HISTORY_RATE_DAYS} days up to {end}"))
    else:
        result.append(
            _ok(
                "days_of_cover",
                on_hand_now / rate,
                ctx.stock_note(f"demand rate of the {HISTORY_RATE_DAYS} days up to {end}"),
            )
        )
    if avg_inv and avg_inv > 0:
        turns = (period_q or 0.0) / avg_inv * 365.0 / period_days
        result.append(_ok("inventory_turnover", turns, ctx.stock_note(f"period {start} to {end}")))
    else:
        result.append(_na("inventory_turnover", "average inventory is zero or unknown"))
    if avg_inv is not None:
        result.append(
            _ok("average_inventory_units", float(avg_inv), ctx.stock_note(f"period {start} to {end}"))
        )
    else:
        result.append(_na("average_inventory_units", _NO_STOCK))
    result.append(
        _inventory_value(ctx, start, end, value, int(pairs or 0), int(costed_pairs or 0), avg_inv, costed_inv)
    )
    if not critical_known:
        note = "no site is marked critical (criticality HIGH) in the site master"
        result += [_na("sla_risk_series", note), _na("critical_site_stockout_days", note)]
    else:
        result.append(_ok("sla_risk_series", float(crit_out or 0), ctx.stock_note()))
        result.append(_ok("critical_site_stockout_days", float(crit_days or 0), ctx.stock_note()))
    return result


def _inventory_value(
    ctx: _Context,
    start: dt.date,
    end: dt.date,
    value: float | None,
    pairs: int,
    costed_pairs: int,
    avg_inv: float | None,
    costed_inv: float | None,
) -> KpiValue:
    """``average_inventory_value``: only the pairs whose material has a unit cost count, and the note says
    how many did, so a value over part of the stock is never read as the value of all of it."""
    if not pairs:
        return _na("average_inventory_value", _NO_STOCK)
    if not costed_pairs:
        counted = f"{pairs} material × site pair{'s' if pairs != 1 else ''}"
        return _na(
            "average_inventory_value",
            # A comma, not "; ": that separates a note's parts.
            f"no unit cost for any material with stock counts in this slice ({counted}, unit_cost_brl "
            "not set in the material master)",
        )
    coverage = f"unit cost known for {costed_pairs} of {pairs} material × site pairs"
    if avg_inv and avg_inv > 0:
        coverage += f" ({100.0 * (costed_inv or 0.0) / avg_inv:.1f}% of the average quantity on hand)"
    return _ok(
        "average_inventory_value", float(value or 0.0), ctx.stock_note(coverage, f"period {start} to {end}")
    )


def _fill_rate(job: Job, s: Slice, start: dt.date, end: dt.date, ctx: _Context) -> KpiValue:
    dw = demand_where(s, start=start, end=end)
    sw = stock_where(s, "s")
    row = one(
        job.cursor.execute(
            f"""
WITH counted AS (SELECT DISTINCT material_code, site_code FROM stock_snapshots s WHERE {sw.sql}),
dd AS (
    SELECT c.material_code, c.site_code, c.demand_date AS d, sum(c.quantity) AS q
    FROM consumption c SEMI JOIN counted k ON c.material_code = k.material_code AND c.site_code = k.site_code
    WHERE {dw.sql} GROUP BY ALL
)
SELECT sum(dd.q)::DOUBLE, sum(least(dd.q, greatest(s.on_hand, 0)))::DOUBLE
FROM dd ASOF JOIN stock_snapshots s
  ON dd.material_code = s.material_code AND dd.site_code = s.site_code AND dd.d > s.as_of
""",
            [*sw.params, *dw.params],
        )
    )
    demanded, filled = row if row else (None, None)
    if not demanded or filled is None:
        return _na("fill_rate", "no demand with a stock count before it in this slice and period")
    return _ok("fill_rate", 100.0 * filled / demanded, ctx.stock_note())


# -- ABC -----------------------------------------------------------------------------------------------


def _abc(job: Job, s: Slice, ctx: _Context) -> list[KpiValue]:
    dw = demand_where(s)
    rows = job.cursor.execute(
        f"""
WITH lines AS (SELECT material_code, count(*) AS n FROM consumption GROUP BY 1),
ranked AS (
    SELECT material_code, n,
           sum(n) OVER (ORDER BY n DESC, material_code ROWS UNBOUNDED PRECEDING) - n AS before,
           sum(n) OVER () AS total
    FROM lines
),
classes AS (
    SELECT r.material_code,
           coalesce(nullif(m.abc_class, ''),
                    CASE WHEN r.before < 0.80 * r.total THEN 'A' WHEN r.before < 0.95 * r.total THEN 'B'
                         ELSE 'C' END) AS cls,
           nullif(m.abc_class, '') IS NULL AS derived
    FROM ranked r LEFT JOIN materials m ON m.code = r.material_code
)
SELECT cls, count(*), bool_or(derived) FROM classes
WHERE material_code IN (SELECT DISTINCT c.material_code FROM consumption c WHERE {dw.sql})
GROUP BY cls
""",
        dw.params,
    ).fetchall()
    total = sum(int(n) for _, n, _ in rows)
    if not total:
        return [_na(f"abc_{c}_share", "no materials with demand in this slice") for c in "abc"]
    derived = any(d for _, _, d in rows)
    note = "classes derived from requisition lines (80/15/5), no spend data" if derived else ""
    counts = {str(c).upper(): int(n) for c, n, _ in rows}
    return [_ok(f"abc_{c}_share", 100.0 * counts.get(c.upper(), 0) / total, note) for c in "abc"]


# -- lead times and purchase orders --------------------------------------------------------------------


def _lead(job: Job, s: Slice, ctx: _Context) -> list[KpiValue]:
    dw = demand_where(s)
    # Exact integer sums (so the answer does not depend on the scan order) and interpolated quantiles, as
    # numpy's default percentile.
    n, total, squares, p50, p90 = one(
        job.cursor.execute(
            f"SELECT count(*), sum(c.lead_time_days), sum(c.lead_time_days::BIGINT * c.lead_time_days), "
            f"quantile_cont(c.lead_time_days, 0.5), quantile_cont(c.lead_time_days, 0.9) "
            f"FROM consumption c WHERE {dw.sql} AND c.lead_time_days >= 0",
            dw.params,
        )
    )
    names = ("lead_time_mean_days", "lead_time_p50_days", "lead_time_p90_days", "lead_time_std_days")
    if not n:
        return [_na(n, "no purchased lines with a non-negative lead time in this slice") for n in names]
    n, total, squares = int(n), int(total), int(squares)
    note = f"{n} observations"
    out = [
        _ok("lead_time_mean_days", total / n, note),
        _ok("lead_time_p50_days", float(p50), note),
        _ok("lead_time_p90_days", float(p90), note),
    ]
    if n < 2:
        out.append(_na("lead_time_std_days", "fewer than two observations"))
    else:
        out.append(_ok("lead_time_std_days", math.sqrt((n * squares - total * total) / (n * (n - 1))), note))
    return out


def _on_time(job: Job, s: Slice, ctx: _Context) -> list[KpiValue]:
    pw = stock_where(s, "p", supplier_column="supplier_code")
    cond, params = pw.sql, list(pw.params)
    if s.start:
        cond += " AND p.received_date >= ?"
        params.append(s.start)
    if s.end:
        cond += " AND p.received_date <= ?"
        params.append(s.end)
    on_time, total, sim = one(
        job.cursor.execute(
            "SELECT count(*) FILTER (WHERE p.received_date <= p.expected_date), count(*), "
            f"bool_or(p.simulated) FROM purchase_orders p WHERE {cond} AND p.received_date IS NOT NULL "
            "AND p.expected_date IS NOT NULL",
            params,
        )
    )  # type: ignore[misc]
    if not total:
        return [_na("on_time_rate", "no received purchase orders with a promised date in this slice")]
    note = _SIMULATED if sim else ""
    return [_ok("on_time_rate", 100.0 * on_time / total, _join(note, f"{total} orders"))]


# -- forecast accuracy ---------------------------------------------------------------------------------


def _accuracy(job: Job, s: Slice, ctx: _Context) -> list[KpiValue]:
    fw = stock_where(s, "f")
    cond, params = fw.sql, list(fw.params)
    if s.start:
        cond += " AND f.week_start >= ?"
        params.append(s.start)
    if s.end:
        cond += " AND f.week_start + 6 <= ?"
        params.append(s.end)
    # Sums of doubles are ordered, so the answer does not depend on the scan order.
    n, actual, abs_error, error, with_band, inside, widths = one(
        job.cursor.execute(
            f"""
WITH fc AS (
    SELECT f.material_code, f.site_code, f.week_start, f.mean, f.q_levels, f.q_values
    FROM forecasts f WHERE f.level = 1 AND {cond}
    QUALIFY row_number() OVER (PARTITION BY f.material_code, f.site_code, f.week_start
                               ORDER BY f.origin DESC, f.generated_at_us DESC, f.event_id) = 1
),
last_day AS (SELECT max(demand_date) AS d FROM consumption),
act AS (
    SELECT c.material_code, c.site_code, date_trunc('week', c.demand_date)::DATE AS week_start,
           sum(c.quantity) AS q
    FROM consumption c
    SEMI JOIN fc ON c.material_code = fc.material_code AND c.site_code = fc.site_code
    GROUP BY ALL
),
j AS (
    SELECT fc.material_code, fc.site_code, fc.week_start, coalesce(act.q, 0) AS actual,
           coalesce(list_extract(fc.q_values, list_position(fc.q_levels, 0.5)), fc.mean) AS point,
           CASE WHEN len(fc.q_levels) >= 2
                THEN list_extract(fc.q_values, list_position(fc.q_levels, list_min(fc.q_levels))) END AS lo,
           CASE WHEN len(fc.q_levels) >= 2
                THEN list_extract(fc.q_values, list_position(fc.q_levels, list_max(fc.q_levels))) END AS hi,
           round((list_max(fc.q_levels) - list_min(fc.q_levels)) * 100)::INTEGER AS width
    FROM fc LEFT JOIN act USING (material_code, site_code, week_start), last_day
    WHERE fc.week_start + 6 <= last_day.d
)
SELECT count(*), sum(actual)::DOUBLE,
       sum(abs(actual - point) ORDER BY material_code, site_code, week_start),
       sum(point - actual ORDER BY material_code, site_code, week_start),
       count(lo), count(*) FILTER (WHERE lo <= actual AND actual <= hi),
       list(DISTINCT width ORDER BY width) FILTER (WHERE lo IS NOT NULL)
FROM j
""",
            params,
        )
    )
    names = ("forecast_wape", "forecast_bias", "forecast_interval_coverage")
    if not n:
        return [_na(n, "no past forecasts of weeks with complete actuals in this slice") for n in names]
    note = f"{n} series-weeks"
    out = []
    if actual and actual > 0:
        out.append(_ok("forecast_wape", 100.0 * abs_error / actual, note))
        out.append(_ok("forecast_bias", 100.0 * error / actual, note))
    else:
        out += [
            _na("forecast_wape", "no actual demand in the forecast weeks"),
            _na("forecast_bias", "no actual demand in the forecast weeks"),
        ]
    if with_band:
        nominal = "/".join(f"{w}%" for w in widths or [])
        out.append(
            _ok("forecast_interval_coverage", 100.0 * inside / with_band, f"{note}; nominal {nominal}")
        )
    else:
        out.append(_na("forecast_interval_coverage", "forecasts carry fewer than two quantiles"))
    return out


_GROUPS: tuple[tuple[tuple[str, ...], Callable[[Job, Slice, _Context], list[KpiValue]]], ...] = (
    (("total_demand", "demand_lines"), _demand),
    (
        (
            "fill_rate",
            "stockout_rate",
            "stockout_days",
            "days_of_cover",
            "inventory_turnover",
            "average_inventory_units",
            "average_inventory_value",
            "sla_risk_series",
            "critical_site_stockout_days",
        ),
        _stock,
    ),
    (("abc_a_share", "abc_b_share", "abc_c_share"), _abc),
    (("lead_time_mean_days", "lead_time_p50_days", "lead_time_p90_days", "lead_time_std_days"), _lead),
    (("on_time_rate",), _on_time),
    (("forecast_wape", "forecast_bias", "forecast_interval_coverage"), _accuracy),
)


def compute_kpis(job: Job, s: Slice, names: Sequence[str]) -> list[KpiValue]:
    """The KPIs ``names`` (all when empty) in the order asked (the documented order when empty)."""
    wanted = list(names) or list(KPI_NAMES)
    ctx = _Context()
    values: dict[str, KpiValue] = {}
    for group, compute in _GROUPS:
        if any(n in wanted for n in group):
            job.check()
            for kpi in compute(job, s, ctx):
                values[kpi.name] = kpi
    return [values[n] for n in wanted]
