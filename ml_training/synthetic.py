"""The training measurements on the synthetic company-scale history (bench/gen_company_history.py).

The generator writes an analytics read model (DuckDB) with 18,000 sites x 1,000 materials over three years,
shaped on the real export: each synthetic material copies a real material's family, unit and quantity
distribution, in the real popularity order; lead times are drawn from the real empirical distribution;
material and site popularity is heavy-tailed and every active material x site series draws its yearly
number of lines from the real series. ``--scale`` multiplies the number of lines (sites and materials stay
at company size).

The measurements are weekly and at material level, so the consumption lines are aggregated in DuckDB to one
row per stocked material and week (quantity = the week's total, purchase date = the week's Monday + the lead
time of one of that week's lines, the one with the smallest requisition id: a draw from the real lead-time
distribution, so the simulated arrivals keep the real spread; a median would narrow it) and written as
``consumption.parquet``; the panel is built without
material x site series (18,000 sites would multiply the rows without adding a material-level measurement).
Aggregates (family, region, national) then count material-weeks with demand instead of requisition lines.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

__all__ = ["SYNTHETIC_SCALE", "prepare", "summary", "train_synthetic"]

log = logging.getLogger("ml_training")

SYNTHETIC_SCALE = 0.1
"""Default generation scale: 2 M lines, still ~1,000 material series with 3 years of weeks; the full 20 M
lines (scale 1.0) only make each material's weekly total larger, at several minutes of generation."""
CUTOFFS = 26  # the last half year of weeks: run time grows with every cutoff's refit and baseline windows
REFIT_EVERY = 16  # with the 6 warm-up cutoffs: two refits, each LightGBM fit being on ~0.5 M rows


def prepare(work: Path, scale: float = SYNTHETIC_SCALE, regenerate: bool = False) -> tuple[Path, dict]:
    """Generate (or reuse) the synthetic read model under ``work``, write
    ``work/data/consumption.parquet``; returns the data directory and the generation figures."""
    import duckdb

    work.mkdir(parents=True, exist_ok=True)
    db = work / f"company-{scale:g}.duckdb"
    info_file = work / f"company-{scale:g}.json"
    data = work / "data"
    data.mkdir(exist_ok=True)
    started = time.monotonic()
    if regenerate or not db.is_file() or not info_file.is_file():
        from bench.gen_company_history import generate

        log.info("generating the synthetic company history at scale %g into %s", scale, db)
        info = generate(db, scale)
        info_file.write_text(json.dumps(info, indent=1) + "\n")
    info = json.loads(info_file.read_text())
    con = duckdb.connect(str(db), read_only=True)
    try:
        out = data / "consumption.parquet"
        con.execute(
            f"""
COPY (
    SELECT c.material_code AS material, 'ALL' AS site, any_value(c.family) AS family,
           sum(c.quantity)::DOUBLE AS quantity, any_value(c.unit) AS unit,
           date_trunc('week', c.demand_date)::DATE AS requested_date,
           (date_trunc('week', c.demand_date)::DATE
               + arg_min(c.lead_time_days, c.requisition_id)) AS purchase_date
    FROM consumption c JOIN materials m ON m.code = c.material_code AND m.stocked
    GROUP BY c.material_code, date_trunc('week', c.demand_date)
    ORDER BY material, requested_date
) TO '{out}' (FORMAT parquet)
"""
        )
        rows = con.execute(f"SELECT count(*), count(DISTINCT material) FROM '{out}'").fetchone()
    finally:
        con.close()
    assert rows is not None
    info = {
        **info,
        "scale": scale,
        "material_weeks": int(rows[0]),
        "materials": int(rows[1]),
        "prepare_seconds": round(time.monotonic() - started, 1),
    }
    return data, info


def train_synthetic(
    work: Path,
    out: Path,
    scale: float = SYNTHETIC_SCALE,
    regenerate: bool = False,
    publish_card: Path | None = None,
):
    """Generate (or reuse) and aggregate the synthetic history, then run the full training measurements on
    it."""
    from ml_training.pipeline import RunConfig, train

    data, info = prepare(work, scale, regenerate)
    cfg = RunConfig(
        data=data,
        out=out,
        name="demand_forecast_synthetic",
        lead_time_name="lead_time_demand_synthetic",
        site_series=False,
        max_cutoffs=CUTOFFS,
        refit_every=REFIT_EVERY,
        baseline_jobs=2,
        synthetic=info,
        publish_card=publish_card,
    )
    return train(cfg)


def summary(side: dict, seconds: float | None = None) -> dict:
    """The figures the model card shows next to the real-data ones."""
    bt = side["backtest"]
    metrics = bt["metrics"]
    keep = ["nova_selected", "lgbm_conformal", "tsb", "reference_zero", "reference_empirical_26w"]
    best = (
        min(bt["baselines"], key=lambda m: metrics[m]["overall"]["scaled_pinball"])
        if bt["baselines"]
        else None
    )
    if best:
        keep.append(best)
    weekly = {
        m: {
            k: metrics[m]["overall"][k]
            for k in (
                "scaled_pinball",
                "coverage_p50",
                "coverage_p90",
                "coverage_p95",
                "coverage_p90_demand_weeks",
                "demand_week_share",
            )
        }
        for m in keep
        if m in metrics
    }
    lt = side.get("lead_time_demand", {})
    inv = side.get("inventory") or {}
    return {
        "generation": side["training_data"].get("synthetic"),
        "weeks": side["training_data"]["weeks"],
        "date_range": side["training_data"]["date_range"],
        "series_by_level": side["training_data"]["series_by_level"],
        "cutoffs": [bt["cutoffs"][0], bt["cutoffs"][-1], len(bt["cutoffs"])],
        "refit_every": bt["refit_every"],
        "evaluated_series": bt["series"],
        "best_baseline": best,
        "weekly": weekly,
        "lead_time": {
            "metrics": lt.get("metrics"),
            "lead_weeks_evaluated": lt.get("lead_weeks_evaluated"),
            "windows_scored": lt.get("windows_scored"),
        },
        "inventory": {
            "ours": inv.get("ours"),
            "best_baseline": inv.get("best_baseline"),
            "ratio": inv.get("ratio"),
            "results": {
                m: {
                    "stock_at_95_fill": r["stock_at_95_fill"],
                    "fill_rate": r["fill_rate"],
                    "avg_stock_weeks": r["avg_stock_weeks"],
                }
                for m, r in (inv.get("results") or {}).items()
            },
            "service_levels": next(iter((inv.get("results") or {"": {"service_level": []}}).values()))[
                "service_level"
            ],
        },
        "targets": side.get("targets"),
        "seconds": seconds,
        "created_at": side["created_at"],
    }
