"""Forecast accuracy of the demand model against the best statsforecast baseline, measured in one run.

    .venv/bin/python bench/forecast_accuracy.py [--data data] [--model-dir models/demand_forecast/N]
    .venv/bin/python bench/forecast_accuracy.py --synthetic [--scale 0.1]   # synthetic company-scale history

Without --model-dir it trains a full model on the data into a temporary repository (a few minutes) and reads
the rolling-origin backtest it ran against CrostonOptimized, CrostonSBA, TSB, ADIDA, IMAPA and
SeasonalNaive. The last line printed is one JSON object; ratio = baseline / ours (higher is better), target
= 1 / 0.9.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ml_training.benchmarks import accuracy_result, load_sidecar, parser


def main() -> None:
    side = load_sidecar(parser(__doc__ or "").parse_args())
    metrics = side["backtest"]["metrics"]
    for method, groups in metrics.items():
        o = groups["overall"]
        print(
            f"{method:28s} scaled_pinball={o['scaled_pinball']:.4f} mase={o['mase']:.3f} "
            f"cov_p90={o['coverage_p90']:.3f} cov_p90_demand={o['coverage_p90_demand_weeks']:.3f}"
        )
    print(json.dumps(accuracy_result(side)))


if __name__ == "__main__":
    main()
