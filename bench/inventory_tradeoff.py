"""Inventory trade-off: average stock each method needs for a 95% fill rate in a week-by-week simulation with
the real lead times, ours (order-up-to level = the lead_time_demand model's quantile of the lead-time window
total at the service level) against the best statsforecast baseline (lead-time demand sampled from its weekly
quantiles); the weekly models' sampled variants are printed as rows too.

    .venv/bin/python bench/inventory_tradeoff.py [--data data] [--model-dir models/demand_forecast/N]
    .venv/bin/python bench/inventory_tradeoff.py --synthetic [--scale 0.1]   # synthetic company-scale history

Without --model-dir it trains a full model on the data into a temporary repository first. The last line
printed is one JSON object; ratio = baseline stock / our stock (higher is better), target = 1 / 0.85; value,
baseline
and ratio are null when a method never reaches 95% fill over service levels 80-99%.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ml_training.benchmarks import inventory_result, load_sidecar, parser


def main() -> None:
    side = load_sidecar(parser(__doc__ or "").parse_args())
    for method, r in side["inventory"]["results"].items():
        curve = ", ".join(
            f"{s:.2f}:{f:.3f}/{k:.2f}"
            for s, f, k in zip(r["service_level"], r["fill_rate"], r["avg_stock_weeks"], strict=True)
        )
        print(f"{method:28s} service:fill/stock {curve}")
    print(json.dumps(inventory_result(side)))


if __name__ == "__main__":
    main()
