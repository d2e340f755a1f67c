"""statsforecast baselines computed in the same run, on the same cutoffs and rows as our backtest, with
statsforecast's own conformal intervals for their quantiles (P50 = the point forecast, P80/P90/P95 = the upper
bounds of the 60/80/90% two-sided conformal intervals), clipped at zero."""

from __future__ import annotations

import numpy as np

from ml_training.datasets import Panel
from ml_training.evaluate import Backtest
from ml_training.model import QUANTILES

__all__ = ["BASELINES", "add_baselines"]

BASELINES = ("CrostonOptimized", "CrostonSBA", "TSB", "ADIDA", "IMAPA", "SeasonalNaive")
SEASON_WEEKS = 4  # ~37 usable weeks cannot hold a 52-week season; 4 weeks is "same week last month"
_LEVEL_FOR = {0.8: 60, 0.9: 80, 0.95: 90}


def add_baselines(bt: Backtest, panel: Panel, n_jobs: int = 1) -> list[str]:
    import pandas as pd
    from statsforecast import StatsForecast
    from statsforecast.models import ADIDA, IMAPA, TSB, CrostonOptimized, CrostonSBA, SeasonalNaive
    from statsforecast.utils import ConformalIntervals

    ids = sorted(bt.classes)
    T = panel.weeks.size
    ci = ConformalIntervals(h=bt.horizon, n_windows=2)
    models = [
        CrostonOptimized(prediction_intervals=ci),
        CrostonSBA(prediction_intervals=ci),
        TSB(alpha_d=0.1, alpha_p=0.1, prediction_intervals=ci),
        ADIDA(prediction_intervals=ci),
        IMAPA(prediction_intervals=ci),
        SeasonalNaive(season_length=SEASON_WEEKS, prediction_intervals=ci),
    ]
    df = pd.DataFrame(
        {
            "unique_id": np.repeat(np.array(ids), T),
            "ds": np.tile(panel.weeks.astype("datetime64[ns]"), len(ids)),
            "y": np.concatenate([panel.series[i].y for i in ids]),
        }
    )
    n_windows = int(bt.cutoffs.size)
    if int(bt.cutoffs[-1]) + bt.horizon != T - 1 or np.any(np.diff(bt.cutoffs) != 1):
        raise ValueError("baselines need consecutive cutoffs ending horizon weeks before the window end")
    sf = StatsForecast(models=models, freq="W-MON", n_jobs=n_jobs)
    cv = sf.cross_validation(df=df, h=bt.horizon, step_size=1, n_windows=n_windows, level=[60, 80, 90])
    week0 = panel.weeks[0].astype("datetime64[ns]")
    origin = ((cv["cutoff"].to_numpy() - week0) // np.timedelta64(7, "D")).astype(np.int64)
    target = ((cv["ds"].to_numpy() - week0) // np.timedelta64(7, "D")).astype(np.int64)
    key = {
        (int(s), int(o), int(t - o)): r
        for r, (s, o, t) in enumerate(zip(cv["unique_id"], origin, target, strict=True))
    }
    order = np.array(
        [key[(int(s), int(o), int(h))] for s, o, h in zip(bt.series, bt.origin, bt.h, strict=True)]
    )
    for name in BASELINES:
        cols = [cv[name].to_numpy()] + [cv[f"{name}-hi-{_LEVEL_FOR[q]}"].to_numpy() for q in QUANTILES[1:]]
        Q = np.maximum(np.column_stack(cols)[order], 0.0)
        bt.forecasts[f"sf_{name}"] = np.sort(Q, axis=1)
    return [f"sf_{n}" for n in BASELINES]
