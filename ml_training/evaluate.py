"""Rolling-origin backtest: the same cutoffs, horizons and series for every method.

At each cutoff c (the last observed week) every method forecasts weeks c+1..c+H from data up to c only. The
LightGBM model is refit every ``refit_every`` cutoffs on rows whose *target* week is <= the block's first
cutoff (so never on anything a forecast in the block could not have known); the numpy intermittent models are
re-run at every cutoff and get split-conformal offsets from the calibration weeks before the block.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from ml_training.datasets import Panel
from ml_training.matrix import Matrix
from ml_training.metrics import naive_scale, summarize
from ml_training.model import QUANTILES, ModelParams, conformal_factors, fit_quantile_model
from services.forecast import features as F

__all__ = ["INTERMITTENT_METHODS", "Backtest", "run_backtest", "select_models"]

log = logging.getLogger(__name__)
INTERMITTENT_METHODS = ("croston", "sba", "tsb")
OURS = "lgbm_conformal"


@dataclass
class Backtest:
    cutoffs: np.ndarray
    horizon: int
    series: np.ndarray  # panel index per row
    origin: np.ndarray
    h: np.ndarray
    y: np.ndarray
    forecasts: dict[str, np.ndarray]  # method -> [R, Q] quantiles in series units
    classes: dict[int, str]  # demand class per evaluated series (history up to the first cutoff)
    scales: dict[int, float]  # naive scale per series (history up to the first cutoff)
    offsets: dict[str, list[list[float]]] = field(default_factory=dict)  # conformal offsets/factors per block

    def metrics(self, quantiles: tuple[float, ...] = QUANTILES) -> dict[str, dict[str, dict[str, float]]]:
        """method -> group ("overall" or a demand class) -> metric -> value."""
        out: dict[str, dict[str, dict[str, float]]] = {}
        cls = np.array([self.classes[int(i)] for i in self.series])
        for method, Q in self.forecasts.items():
            out[method] = {"overall": summarize(self.y, Q, self.series, self.scales, quantiles)}
            for name in F.DEMAND_CLASSES:
                rows = cls == name
                if rows.any():
                    out[method][name] = summarize(self.y[rows], Q[rows], self.series[rows], self.scales, quantiles)
        return out

    def series_scores(self, method: str, quantiles: tuple[float, ...] = QUANTILES) -> dict[int, float]:
        from ml_training.metrics import pinball

        Q = self.forecasts[method]
        pin = np.column_stack([pinball(self.y, Q[:, j], t) for j, t in enumerate(quantiles)]).mean(axis=1)
        scores = {}
        for i in np.unique(self.series):
            s = self.scales[int(i)]
            if s > 0:
                scores[int(i)] = float(pin[self.series == i].mean() / s)
        return scores


def intermittent_paths(panel: Panel, matrix: Matrix) -> dict[str, np.ndarray]:
    """Point forecast of each numpy intermittent model for every matrix row (made at the row's origin)."""
    out = {m: np.zeros(matrix.series.size) for m in INTERMITTENT_METHODS}
    for i in np.unique(matrix.series):
        rows = np.flatnonzero(matrix.series == i)
        y = panel.series[int(i)].y
        paths = {"croston": F.croston(y, variant="croston"), "sba": F.croston(y, variant="sba"), "tsb": F.tsb(y)}
        for m in INTERMITTENT_METHODS:
            out[m][rows] = np.nan_to_num(paths[m][matrix.origin[rows]], nan=0.0)
    return out


def _empirical(y: np.ndarray, origin: int, window: int = 26) -> np.ndarray:
    return np.quantile(y[max(0, origin - window + 1) : origin + 1], QUANTILES)


def run_backtest(
    panel: Panel,
    matrix: Matrix,
    eval_series: list[int],
    cutoffs: np.ndarray,
    horizon: int,
    params: ModelParams,
    refit_every: int = 4,
    progress: Callable[[str], None] | None = None,
) -> Backtest:
    say = progress or log.info
    in_eval = np.isin(matrix.series, eval_series) & np.isin(matrix.origin, cutoffs)
    rows = np.flatnonzero(in_eval & ~np.isnan(matrix.y))
    sub = matrix.take(rows)
    forecasts: dict[str, np.ndarray] = {OURS: np.zeros((rows.size, len(QUANTILES)))}
    points = intermittent_paths(panel, matrix)
    for m in INTERMITTENT_METHODS:
        forecasts[m] = np.zeros((rows.size, len(QUANTILES)))
    offsets: dict[str, list[list[float]]] = {m: [] for m in (OURS, *INTERMITTENT_METHODS)}
    blocks = [cutoffs[k : k + refit_every] for k in range(0, cutoffs.size, refit_every)]
    for b, block in enumerate(blocks):
        c0 = int(block[0])
        say(f"backtest block {b + 1}/{len(blocks)}: fit at cutoff week {panel.weeks[c0]} for {block.size} cutoffs")
        model = fit_quantile_model(matrix.X, matrix.y, matrix.target, c0, params)
        offsets[OURS].append(model.offsets.tolist())
        mask = np.isin(sub.origin, block)
        forecasts[OURS][mask] = model.predict(sub.X[mask])
        known = (matrix.target <= c0) & (matrix.target > c0 - params.calibration_weeks) & ~np.isnan(matrix.y)
        for m in INTERMITTENT_METHODS:
            factors = conformal_factors(matrix.y[known], points[m][known])
            offsets[m].append(factors.tolist())
            forecasts[m][mask] = np.maximum.accumulate(points[m][rows][mask][:, None] * factors[None, :], axis=1)
    forecasts["reference_zero"] = np.zeros((rows.size, len(QUANTILES)))
    emp = np.zeros((rows.size, len(QUANTILES)))
    for r in range(rows.size):
        emp[r] = _empirical(panel.series[int(sub.series[r])].y, int(sub.origin[r]))
    forecasts["reference_empirical_26w"] = emp
    first = int(cutoffs[0])
    classes = {i: F.classify_demand(panel.series[i].y[: first + 1]) for i in eval_series}
    scales = {i: naive_scale(panel.series[i].y[: first + 1]) for i in eval_series}
    return Backtest(cutoffs, horizon, sub.series, sub.origin, sub.horizon, sub.y, forecasts, classes, scales, offsets)


def select_models(bt: Backtest, panel: Panel, min_demand_weeks: int = 3) -> dict[str, object]:
    """Per-series model choice among our own methods (the ones serving can run: the ONNX model and the numpy
    intermittent models). Each demand class gets the method with the lowest mean scaled pinball loss in the
    backtest; a series with at least ``min_demand_weeks`` demand weeks in the backtest targets gets its own
    winner instead. The choice is made on the same backtest that reports the figures, so the reported
    accuracy is that of the LightGBM model alone, never of this (optimistic) selection."""
    candidates = (OURS, *INTERMITTENT_METHODS)
    scores = {m: bt.series_scores(m) for m in candidates}
    class_winner: dict[str, str] = {}
    for name in F.DEMAND_CLASSES:
        ids = [i for i, c in bt.classes.items() if c == name and i in scores[OURS]]
        if ids:
            class_winner[name] = min(candidates, key=lambda m: float(np.mean([scores[m][i] for i in ids])))
    series_choice = {}
    for i, cls in bt.classes.items():
        key = panel.series[i].key
        demand_weeks = int((bt.y[(bt.series == i) & (bt.h == 1)] > 0).sum())
        if i in scores[OURS] and demand_weeks >= min_demand_weeks:
            method = min(candidates, key=lambda m: scores[m][i])
            basis = "series"
        else:
            method = class_winner.get(cls, OURS)
            basis = "class"
        series_choice[key] = {
            "method": method,
            "demand_class": cls,
            "basis": basis,
            "scaled_pinball": {m: round(scores[m][i], 5) for m in candidates if i in scores[m]},
        }
    return {"candidates": list(candidates), "class_choice": class_winner, "series": series_choice}
