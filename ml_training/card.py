"""The model card: markdown plus PNG plots, written next to the model (and published to docs/ for the real
data)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ml_training.datasets import Panel
from ml_training.evaluate import OURS, SELECTED, Backtest
from services.forecast import features as F

__all__ = ["plot_card", "render_card"]


def _fmt(value: object, digits: int = 3) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        if math.isnan(value):
            return "n/a"
        return f"{value:.{digits}f}"
    return str(value)


def plot_card(
    out: Path, bt: Backtest | None, panel: Panel, metrics: dict, final_q: dict[int, np.ndarray]
) -> list[str]:
    """Write the PNGs; returns their file names."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names: list[str] = []
    if bt is not None and metrics:
        methods = [m for m in metrics if not m.startswith("reference")]
        classes = [c for c in F.DEMAND_CLASSES if any(c in metrics[m] for m in methods)]
        fig, ax = plt.subplots(figsize=(10, 4.5))
        width = 0.8 / max(len(methods), 1)
        for k, m in enumerate(methods):
            vals = [metrics[m].get(c, {}).get("scaled_pinball", np.nan) for c in [*classes, "overall"]]
            ax.bar(np.arange(len(classes) + 1) + k * width, vals, width, label=m)
        ax.set_xticks(np.arange(len(classes) + 1) + 0.4 - width / 2, [*classes, "overall"])
        ax.set_ylabel("mean scaled pinball loss (lower is better)")
        ax.set_title("Rolling-origin backtest per demand class (material level)")
        ax.legend(fontsize=7, ncol=3)
        fig.tight_layout()
        fig.savefig(out / "backtest_by_class.png", dpi=110)
        plt.close(fig)
        names.append("backtest_by_class.png")

        fig, ax = plt.subplots(figsize=(5.5, 5))
        nominal = [0.5, 0.8, 0.9, 0.95]
        for m in methods:
            ov = metrics[m]["overall"]
            ax.plot(nominal, [ov[f"coverage_p{round(q * 100)}"] for q in nominal], marker="o", label=m)
        for name, style in ((SELECTED, "k--"), (OURS, "k:")):
            ov = metrics[name]["overall"]
            ax.plot(
                nominal,
                [ov[f"coverage_p{round(q * 100)}_demand_weeks"] for q in nominal],
                style,
                marker="x",
                label=f"{name} (weeks with demand)",
            )
        ax.plot([0.45, 1], [0.45, 1], color="grey", lw=0.8)
        ax.set_xlabel("nominal quantile level")
        ax.set_ylabel("share of weeks whose demand <= the quantile")
        ax.set_title("Calibration (colour: all weeks; black: weeks with demand)", fontsize=9)
        ax.legend(fontsize=6)
        fig.tight_layout()
        fig.savefig(out / "calibration.png", dpi=110)
        plt.close(fig)
        names.append("calibration.png")

    materials = sorted(panel.by_level("material"), key=lambda s: -int((s.y > 0).sum()))[:4]
    if materials:
        fig, axes = plt.subplots(len(materials), 1, figsize=(10, 2.4 * len(materials)), sharex=True)
        axes = np.atleast_1d(axes)
        index = {s.key: i for i, s in enumerate(panel.series)}
        for ax, s in zip(axes, materials, strict=False):
            i = index[s.key]
            ax.bar(panel.weeks, s.y, width=5, color="#4a7", label="weekly demand")
            if bt is not None:
                rows = (bt.series == i) & (bt.h == 1)
                if rows.any():
                    weeks = panel.weeks[bt.origin[rows] + 1]
                    Q = bt.forecasts[OURS][rows]
                    ax.fill_between(
                        weeks, 0, Q[:, 2], step="mid", alpha=0.25, color="#36c", label="backtest P90 (h=1)"
                    )
                    ax.step(weeks, Q[:, 0], where="mid", color="#36c", label="backtest P50 (h=1)")
            if i in final_q:
                Q = final_q[i]
                future = panel.weeks[-1] + (7 * np.arange(1, Q.shape[0] + 1)).astype("timedelta64[D]")
                ax.fill_between(
                    future, Q[:, 0], Q[:, 3], step="mid", alpha=0.3, color="#c63", label="forecast P50-P95"
                )
            ax.set_title(f"{s.material} ({s.family}, {panel.units.get(s.material, '')})", fontsize=9)
        axes[0].legend(fontsize=7, ncol=4)
        fig.tight_layout()
        fig.savefig(out / "series.png", dpi=110)
        plt.close(fig)
        names.append("series.png")
    return names


def _window_lines(side: dict) -> list[str]:
    w = side.get("lead_time_demand")
    if not w:
        return []
    lines = [
        "",
        "## Lead-time demand (second model)",
        "",
        f"`{w['model']}` v{w['version']} (same repository layout, `{w['model']}/{w['version']}/model.onnx` + "
        "`model.json`) predicts P50/P80/P90/P95 of the TOTAL demand over the L weeks after the origin, L = "
        "the material's planning lead time (ceil(median observed lead time / 7), at least 1). Same features "
        "(`build_features(..., horizon=1)`, its `horizon` column set to L), same LightGBM quantile set-up "
        "boosted from L x the empirical weekly quantiles of 26 weeks, Mondrian split-conformal offsets on "
        "window totals, sorted (non-crossing) and rescaled in the graph; parity checked like the weekly "
        "model before export.",
        "",
        f"Backtest on the same {len(w['cutoffs'])} cutoffs and refit blocks, {w['series']} material series, "
        f"{w['windows_scored']} scored windows ({w['windows_past_data']} windows that run past the data are "
        f"not scored); lead times evaluated (weeks: series) {w['lead_weeks_evaluated']}. Scaled pinball = "
        "pinball of the window total / (L x the series' naive weekly MAE before the first cutoff). "
        "References in the same run: `weekly_sampled_*` = window sums of independent draws from that "
        "method's weekly quantile forecasts (the inventory simulation's former lead-time demand), "
        "`reference_empirical_26w_totals` = empirical quantiles of the overlapping L-week totals of the last "
        "26 weeks, `tsb_window_conformal` = L x the TSB rate (alpha 0.1, beta 0.1, as the statsforecast TSB "
        "baseline) with split-conformal multiplicative factors fitted on window totals.",
        "",
        "| method | scaled pinball | P50 | P80 | P90 | P95 | cov P50 | cov P80 | cov P90 | cov P95 | cov "
        "P90 (windows with demand) | share of windows with demand |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for m, o in w["metrics"].items():
        lines.append(
            f"| {m} | {_fmt(o['scaled_pinball'])} | {_fmt(o['scaled_pinball_p50'])} | "
            f"{_fmt(o['scaled_pinball_p80'])} | {_fmt(o['scaled_pinball_p90'])} | "
            f"{_fmt(o['scaled_pinball_p95'])} | {_fmt(o['coverage_p50'])} | {_fmt(o['coverage_p80'])} | "
            f"{_fmt(o['coverage_p90'])} | {_fmt(o['coverage_p95'])} | "
            f"{_fmt(o['coverage_p90_demand_weeks'])} | {_fmt(o['demand_week_share'])} |"
        )
    return lines


def _synthetic_lines(syn: dict | None) -> list[str]:
    if not syn:
        return []
    gen = syn.get("generation") or {}
    inv = syn["inventory"]
    lines = [
        "",
        "## Synthetic company-scale history (same measurements)",
        "",
        "Data: `bench/gen_company_history.py` at scale "
        f"{gen.get('scale')} ({gen.get('lines')} requisition lines, 18,000 sites x 1,000 materials, "
        f"{syn['date_range'][0]} to {syn['date_range'][1]}). The generator copies the real export's shape: "
        "each synthetic material takes a real material's family, unit and empirical quantity distribution, "
        "in the real popularity order; lead times are drawn from the real lead times (negative ones "
        "included); material and site popularity is heavy-tailed and each active material x site series "
        "draws its yearly line count from the real series, on uniform days. Scale 1.0 (20 M lines, not run "
        "for this card) would multiply the lines per material; the default scale keeps run time to minutes "
        "and still gives "
        f"{gen.get('materials')} stocked material series. Lines are aggregated in DuckDB to material x week "
        f"({gen.get('material_weeks')} rows; purchase date = Monday + the lead time of one of the week's "
        "lines) and trained without material x site series; "
        f"{syn['weeks']} usable weeks, series {syn['series_by_level']}. "
        + (
            f"{gen['material_weeks'] / (gen['materials'] * syn['weeks']):.0%} of material-weeks have demand: "
            "summed over thousands of sites a material's week is rarely empty, unlike the real export's "
            "intermittent material series, so these series are dense and the figures below are not "
            "comparable in level with the real ones. "
            if gen.get("material_weeks") and gen.get("materials")
            else ""
        )
        + "Backtest: the last "
        f"{syn['cutoffs'][2]} cutoffs ({syn['cutoffs'][0]} to {syn['cutoffs'][1]}, fixed for run time, not "
        f"chosen on results), refit every {syn['refit_every']} cutoffs, {syn['evaluated_series']} material "
        "series. No external feeds exist for the synthetic history (those features are NaN). Run time: "
        f"generation {gen.get('seconds')} s, aggregation and export to Parquet "
        f"{gen.get('prepare_seconds')} s (generation included when not reused), training run (features, "
        "backtest, statsforecast baselines, "
        f"lead-time model, inventory simulation, final fits, export) {syn.get('seconds')} s on 2 cores.",
        "",
        "| method (weekly) | scaled pinball | cov P50 | cov P90 | cov P95 | cov P90 (demand wks) |",
        "|---|---|---|---|---|---|",
    ]
    for m, o in syn["weekly"].items():
        lines.append(
            f"| {m} | {_fmt(o['scaled_pinball'])} | {_fmt(o['coverage_p50'])} | {_fmt(o['coverage_p90'])} | "
            f"{_fmt(o['coverage_p95'])} | {_fmt(o['coverage_p90_demand_weeks'])} |"
        )
    lt = syn["lead_time"]
    if lt.get("metrics"):
        lines += [
            "",
            f"Lead-time window totals ({lt['windows_scored']} windows, lead weeks (weeks: series) "
            f"{lt['lead_weeks_evaluated']}). The generator draws every line's lead time from the pooled real "
            "lead times, whatever the material, so planning lead times hardly vary between "
            "synthetic materials: this table does not test long lead times.",
            "",
            "| method (window total) | scaled pinball | cov P50 | cov P90 | cov P95 | cov P90 (windows with "
            "demand) |",
            "|---|---|---|---|---|---|",
        ]
        for m, o in lt["metrics"].items():
            lines.append(
                f"| {m} | {_fmt(o['scaled_pinball'])} | {_fmt(o['coverage_p50'])} | "
                f"{_fmt(o['coverage_p90'])} | {_fmt(o['coverage_p95'])} | "
                f"{_fmt(o['coverage_p90_demand_weeks'])} |"
            )
    if inv.get("results"):
        lines += [
            "",
            f"Inventory simulation (ours = `{inv['ours']}`, best baseline `{inv['best_baseline']}`, stock "
            f"ratio baseline/ours {_fmt(inv['ratio'])}). Each order arrives after a real lead time drawn "
            "with the week's line, while every method's order-up-to level covers the planning (median) lead "
            "time and the review week: orders that take longer than planned, not the demand forecasts, keep "
            "fill rates low at any service level here.",
            "",
            "| method | avg stock (weeks of cover) at 95% fill | fill rate at 80% / 95% / 99% service level "
            "| avg stock at 95% service level |",
            "|---|---|---|---|",
        ]
        for m, r in inv["results"].items():
            f, k = r["fill_rate"], r["avg_stock_weeks"]
            lines.append(
                f"| {m} | {_fmt(r['stock_at_95_fill'])} | {_fmt(f[0])} / {_fmt(f[4])} / {_fmt(f[-1])} | "
                f"{_fmt(k[4])} |"
            )
    if syn.get("targets"):
        lines += ["", "Targets on the synthetic history:", ""]
        lines += [f"- **{t['name']}**: {t['result']} (target {t['target']})." for t in syn["targets"]]
    return lines


def render_card(side: dict, plots: list[str], plot_prefix: str = "", synthetic: dict | None = None) -> str:
    data = side["training_data"]
    window = data["window"]
    lines = [
        f"# Model card: {side['name']} v{side['version']}",
        "",
        f"Created {side['created_at']}. Weekly demand quantiles "
        + ", ".join(f"P{round(q * 100)}" for q in side["quantiles"])
        + f" for the next {side['horizon_weeks']} weeks of a series, from one global LightGBM model per "
        "quantile "
        "with split-conformal offsets, exported as one ONNX graph. "
        f"Feature spec {side['feature_spec_version']}, {len(side['feature_names'])} features."
        + (
            f" A second model, `{side['lead_time_demand']['model']}` v{side['lead_time_demand']['version']}, "
            "predicts the same quantiles of the total demand over the material's lead time (see Lead-time "
            "demand)."
            if side.get("lead_time_demand")
            else ""
        ),
        "",
        "## Contract",
        "",
        f"- input `{side['inputs'][0]['name']}` float32 {side['inputs'][0]['shape']}, output "
        f"`{side['outputs'][0]['name']}` float32 {side['outputs'][0]['shape']} (columns sorted, "
        "non-crossing, "
        "in the series' own units per week).",
        "- features: `services.forecast.features.build_features` (numpy only), static codes from the sidecar "
        "vocabularies via `encode_static(static_attributes(family, site, level), vocabularies)`.",
        f"- ONNX vs native max abs difference {_fmt(side['parity']['max_abs_diff'], 6)} on "
        f"{side['parity']['rows']} held-out rows (tolerance {side['parity']['abs_tolerance']} + "
        f"{side['parity']['rel_tolerance']} x value), sha256 `{side.get('sha256', '(in model.json)')}`.",
        "",
        "## Training data",
        "",
        f"- source `{Path(data['source']).name}`, {data['goods_rows']} goods lines, sha256 "
        f"`{data['sha256'][:16]}...`",
        f"- usable weeks {window['first_week']} to {window['last_week']} ({data['weeks']} weeks); export "
        "ends "
        f"{window['export_end']}.",
        f"- censored at the end (left out): {', '.join(window['censored_tail']) or 'none'}. Rule: "
        f"{window['rule']}.",
        f"- thin at the start (left out): {len(window['thin_head'])} weeks "
        f"({window['thin_head'][0] if window['thin_head'] else '-'} to "
        f"{window['thin_head'][-1] if window['thin_head'] else '-'}).",
        "- services are not stock and are excluded: "
        + ", ".join(f"{k} ({v} lines)" for k, v in sorted(data["services_excluded"].items())),
        f"- other lines dropped: {data['dropped'] or 'none'}; negative lead times are kept as demand but "
        "left out "
        "of lead-time statistics; a material bought in two units is two series (`code@UNIT`).",
        f"- series: {data['series_by_level']}. Aggregates above material (family, region, national) count "
        "requisition lines per week, because a family mixes units.",
        "",
    ]
    bt = side.get("backtest")
    if bt:
        lines += [
            "## Backtest (rolling origin, material level)",
            "",
            f"{len(bt['cutoffs'])} cutoffs from {bt['cutoffs'][0]} to {bt['cutoffs'][-1]}, horizon 1-"
            f"{side['horizon_weeks']} weeks, {bt['series']} material series with demand before the first "
            "cutoff. "
            f"LightGBM refit every {bt['refit_every']} cutoffs on rows whose target week is known at the "
            "block's "
            "first cutoff. Scaled metrics divide by the series' in-sample naive MAE before the first cutoff. "
            "Baselines are statsforecast models fitted in the same run on the same cutoffs, quantiles from "
            "their "
            "conformal intervals; references are the zero forecast and the empirical quantiles of the last "
            "26 weeks.",
            "",
            "| method | scaled pinball | MASE | WAPE | bias | cov P50 | cov P80 | cov P90 | cov P95 | cov "
            "P90 (demand wks) "
            "| zero P50 share |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for m, groups in bt["metrics"].items():
            o = groups["overall"]
            lines.append(
                f"| {m} | {_fmt(o['scaled_pinball'])} | {_fmt(o['mase'])} | {_fmt(o['wape'])} | "
                f"{_fmt(o['bias'])} | "
                f"{_fmt(o['coverage_p50'])} | {_fmt(o['coverage_p80'])} | {_fmt(o['coverage_p90'])} | "
                f"{_fmt(o['coverage_p95'])} | {_fmt(o['coverage_p90_demand_weeks'])} | "
                f"{_fmt(o['zero_forecast_share_p50'])} |"
            )
        lines += ["", "Scaled pinball loss per demand class (series count in brackets):", ""]
        classes = [c for c in F.DEMAND_CLASSES if c in bt["metrics"][SELECTED]]
        head = " | ".join(f"{c} ({bt['metrics'][SELECTED][c]['series']})" for c in classes)
        lines.append(f"| method | {head} |")
        lines.append("|---|" + "---|" * len(classes))
        for m, groups in bt["metrics"].items():
            lines.append(
                f"| {m} | "
                + " | ".join(_fmt(groups.get(c, {}).get("scaled_pinball")) for c in classes)
                + " |"
            )
        lines += ["", "## Targets", ""]
        for t in side["targets"]:
            lines.append(f"- **{t['name']}**: {t['result']} (target {t['target']}). {t['note']}")
        lines += _window_lines(side)
        inv = side.get("inventory")
        if inv:
            lines += [
                "",
                "## Inventory simulation",
                "",
                inv["method_note"],
                "",
                f"Ours is `{inv.get('ours', SELECTED)}`. Fill rate and average stock (weeks of cover) per "
                "target service level: compare methods at equal stock, not at equal nominal level.",
                "",
                "| method | avg stock (weeks of cover) "
                "at 95% fill | fill rate at 80% / 95% / 99% service level | avg stock at 80% / 95% / 99% |",
                "|---|---|---|---|",
            ]
            for m, r in inv["results"].items():
                f, k = r["fill_rate"], r["avg_stock_weeks"]
                lines.append(
                    f"| {m} | {_fmt(r['stock_at_95_fill'])} | {_fmt(f[0])} / {_fmt(f[4])} / {_fmt(f[-1])} | "
                    f"{_fmt(k[0], 2)} / {_fmt(k[4], 2)} / {_fmt(k[-1], 2)} |"
                )
        choice = side.get("model_choice", {})
        if choice:
            lines += [
                "",
                "## Per-series model choice",
                "",
                f"Recorded in `{choice.get('file')}` (made at the last week with every backtest row): "
                "class winners "
                f"{choice.get('class_choice')}; methods per series {choice.get('counts')}. Series not "
                "listed use "
                "their class winner (classify the history with "
                "`services.forecast.features.classify_demand`), else "
                "the ONNX model. Croston/SBA/TSB run at serving time from "
                "`services.forecast.features.intermittent_quantiles(history, method, factors, horizon)` with "
                "`intermittent_models.conformal_factors[method]` from the sidecar.",
                "",
                f"In the backtest, `{SELECTED}` is the same rule applied *rolling*: at each refit block it "
                "only sees "
                "backtest rows whose target week is known at the block's first cutoff (including 6 "
                "unreported warm-up "
                "cutoffs before the first reported one), so the selection never looks at the weeks it is "
                "scored on. "
                f"Methods chosen per reported block: {bt.get('selection_counts_per_block')}.",
            ]
    else:
        lines += ["## Backtest", "", "Not run for this model (quick mode without backtest).", ""]
    lines += _synthetic_lines(synthetic)
    lines += ["", "## Limits", ""] + [f"- {x}" for x in side.get("limits", [])]
    lines += [""] + [f"![{p}]({plot_prefix}{p})" for p in plots] + [""]
    return "\n".join(lines)
