"""Shared by bench/forecast_accuracy.py and bench/inventory_tradeoff.py: get a backtested model (a fresh full
training run on the data, or an existing version directory) and turn its sidecar into the bench result
line."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
from pathlib import Path

__all__ = ["accuracy_result", "inventory_result", "load_sidecar", "parser"]


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument(
        "--data", type=Path, default=Path("data"), help="data directory to train on (default: data)"
    )
    p.add_argument(
        "--model-dir",
        type=Path,
        default=None,
        help="read an existing full-run version directory instead of training now",
    )
    p.add_argument(
        "--synthetic",
        action="store_true",
        help="measure on the synthetic company-scale history (bench/gen_company_history.py, generated once "
        "under --work and reused) instead of --data",
    )
    p.add_argument("--scale", type=float, default=None, help="generation scale of --synthetic (x 20 M lines)")
    p.add_argument("--work", type=Path, default=Path(".nova/bench/ml-synthetic"), help="see --synthetic")
    return p


def load_sidecar(args: argparse.Namespace) -> dict:
    if args.model_dir is not None:
        return json.loads((args.model_dir / "model.json").read_text())
    from ml_training.pipeline import RunConfig, train

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="bench-models-") as repo:
        if getattr(args, "synthetic", False):
            from ml_training.synthetic import SYNTHETIC_SCALE, train_synthetic

            scale = SYNTHETIC_SCALE if args.scale is None else args.scale
            return train_synthetic(args.work, Path(repo), scale).sidecar
        return train(RunConfig(data=args.data, out=Path(repo))).sidecar


def _suffix(side: dict) -> str:
    """Results on the synthetic history carry their own name, so they are never read as real-data ones."""
    return "_synthetic" if side.get("training_data", {}).get("synthetic") else ""


def accuracy_result(side: dict) -> dict:
    bt = side["backtest"]
    metrics = bt["metrics"]
    if not bt["baselines"]:
        raise SystemExit("the model was trained without statsforecast baselines (quick run?)")
    best = min(bt["baselines"], key=lambda m: metrics[m]["overall"]["scaled_pinball"])
    ours = metrics["nova_selected"]["overall"]
    base = metrics[best]["overall"]["scaled_pinball"]
    return {
        "name": "forecast_accuracy_scaled_pinball" + _suffix(side),
        "value": round(ours["scaled_pinball"], 5),
        "unit": "mean scaled pinball loss P50/P80/P90/P95, material level, rolling origin (lower is better)",
        "baseline": round(base, 5),
        "baseline_name": best,
        "ratio": round(base / ours["scaled_pinball"], 4),
        "target": round(1 / 0.9, 4),
        "coverage_p90": round(ours["coverage_p90"], 4),
        "ratio_lightgbm_alone": round(base / metrics["lgbm_conformal"]["overall"]["scaled_pinball"], 4),
    }


def inventory_result(side: dict) -> dict:
    inv = side.get("inventory")
    if not inv:
        raise SystemExit("the model has no inventory simulation (quick run?)")
    ours_name = inv.get("ours", "nova_selected")
    ours = inv["results"][ours_name]["stock_at_95_fill"]
    best = inv["best_baseline"]
    base = inv["results"][best]["stock_at_95_fill"] if best else None
    return {
        "name": "inventory_stock_at_95pct_fill_rate" + _suffix(side),
        "value": None if ours is None else round(ours, 4),
        "unit": "average stock in weeks of cover needed for a 95% fill rate (lower is better; null = not "
        "reached)",
        "baseline": None if base is None else round(base, 4),
        "baseline_name": best,
        "ratio": None if inv["ratio"] is None else round(inv["ratio"], 4),
        "target": round(1 / 0.85, 4),
        "ours_name": ours_name,
        "max_fill_rate_ours": round(max(inv["results"][ours_name]["fill_rate"]), 4),
    }
