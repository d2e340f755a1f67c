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


def render_card(side: dict, plots: list[str], plot_prefix: str = "") -> str:
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
        f"Feature spec {side['feature_spec_version']}, {len(side['feature_names'])} features.",
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
        inv = side.get("inventory")
        if inv:
            lines += [
                "",
                "## Inventory simulation",
                "",
                inv["method_note"],
                "",
                "| method | avg stock (weeks of cover) "
                "at 95% fill | fill rate at 80% / 95% / 99% service level |",
                "|---|---|---|",
            ]
            for m, r in inv["results"].items():
                f = r["fill_rate"]
                lines.append(
                    f"| {m} | {_fmt(r['stock_at_95_fill'])} | {_fmt(f[0])} / {_fmt(f[4])} / {_fmt(f[-1])} |"
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
    lines += ["", "## Limits", ""] + [f"- {x}" for x in side.get("limits", [])]
    lines += [""] + [f"![{p}]({plot_prefix}{p})" for p in plots] + [""]
    return "\n".join(lines)
