"""Rolling-origin backtest: the same cutoffs, horizons and series for every method.

At each cutoff c (the last observed week) every method forecasts weeks c+1..c+H from data up to c only. The
LightGBM model is refit every ``refit_every`` cutoffs on rows whose *target* week is <= the block's first
cutoff (so never on anything a forecast in the block could not have known); the numpy intermittent models are
re-run at every cutoff and get split-conformal offsets from the calibration weeks before the block."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import cast

import numpy as np

from ml_training.datasets import Panel
from ml_training.matrix import Matrix
from ml_training.metrics import naive_scale, summarize
from ml_training.model import QUANTILES, ModelParams, conformal_factors, fit_quantile_model
from services.forecast import features as F

__all__ = ["INTERMITTENT_METHODS", "OURS", "SELECTED", "Backtest", "choose_methods", "run_backtest"]

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
                    out[method][name] = summarize(
                        self.y[rows], Q[rows], self.series[rows], self.scales, quantiles
                    )
        return out


def intermittent_paths(panel: Panel, matrix: Matrix) -> dict[str, np.ndarray]:
    """Point forecast of each numpy intermittent model for every matrix row (made at the row's origin)."""
    out = {m: np.zeros(matrix.series.size) for m in INTERMITTENT_METHODS}
    for i in np.unique(matrix.series):
        rows = np.flatnonzero(matrix.series == i)
        y = panel.series[int(i)].y
        paths = {
            "croston": F.croston(y, variant="croston"),
            "sba": F.croston(y, variant="sba"),
            "tsb": F.tsb(y),
        }
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
    warmup: int = 6,
    progress: Callable[[str], None] | None = None,
) -> Backtest:
    """Backtest on ``cutoffs`` (consecutive). Our methods also run on ``warmup`` cutoffs before them, never
    reported: their results are what the rolling model selection of the first reported block can look at."""
    say = progress or log.info
    first_test = int(cutoffs[0])
    all_cutoffs = np.arange(max(first_test - warmup, 3), int(cutoffs[-1]) + 1)
    in_eval = np.isin(matrix.series, eval_series) & np.isin(matrix.origin, all_cutoffs)
    rows = np.flatnonzero(in_eval & ~np.isnan(matrix.y))
    sub = matrix.take(rows)
    forecasts: dict[str, np.ndarray] = {OURS: np.zeros((rows.size, len(QUANTILES)))}
    points = intermittent_paths(panel, matrix)
    for m in INTERMITTENT_METHODS:
        forecasts[m] = np.zeros((rows.size, len(QUANTILES)))
    offsets: dict[str, list[list[float]]] = {m: [] for m in (OURS, *INTERMITTENT_METHODS)}
    blocks = [all_cutoffs[k : k + refit_every] for k in range(0, all_cutoffs.size, refit_every)]
    for b, block in enumerate(blocks):
        c0 = int(block[0])
        say(
            f"backtest block {b + 1}/{len(blocks)}: fit at cutoff week {panel.weeks[c0]} for {block.size} "
            "cutoffs"
        )
        model = fit_quantile_model(matrix.X, matrix.y, matrix.target, c0, params)
        offsets[OURS].append(model.offsets.tolist())
        mask = np.isin(sub.origin, block)
        forecasts[OURS][mask] = model.predict(sub.X[mask])
        known = (matrix.target <= c0) & (matrix.target > c0 - params.calibration_weeks) & ~np.isnan(matrix.y)
        for m in INTERMITTENT_METHODS:
            factors = conformal_factors(matrix.y[known], points[m][known])
            offsets[m].append(factors.tolist())
            forecasts[m][mask] = np.maximum.accumulate(
                points[m][rows][mask][:, None] * factors[None, :], axis=1
            )
    selected = np.zeros((rows.size, len(QUANTILES)))
    choices: list[dict[str, int]] = []
    for block in blocks:
        c0 = int(block[0])
        choice, _ = choose_methods(
            panel, sub.series, sub.origin, sub.horizon, sub.y, forecasts, c0, eval_series
        )
        mask = np.isin(sub.origin, block)
        for m in SELECTABLE:
            pick = mask & np.array([choice[int(i)]["method"] == m for i in sub.series])
            selected[pick] = forecasts[m][pick]
        if c0 >= first_test:
            choices.append(dict(Counter(cast(str, v["method"]) for v in choice.values())))
    forecasts[SELECTED] = selected
    forecasts["reference_zero"] = np.zeros((rows.size, len(QUANTILES)))
    test = sub.origin >= first_test
    emp = np.zeros((int(test.sum()), len(QUANTILES)))
    for k, r in enumerate(np.flatnonzero(test)):
        emp[k] = _empirical(panel.series[int(sub.series[r])].y, int(sub.origin[r]))
    forecasts = {m: (f if m == "reference_empirical_26w" else f[test]) for m, f in forecasts.items()}
    forecasts["reference_empirical_26w"] = emp
    classes = {i: F.classify_demand(panel.series[i].y[: first_test + 1]) for i in eval_series}
    scales = {i: naive_scale(panel.series[i].y[: first_test + 1]) for i in eval_series}
    offsets["selection_counts_per_block"] = choices  # type: ignore[assignment]
    return Backtest(
        np.asarray(cutoffs),
        horizon,
        sub.series[test],
        sub.origin[test],
        sub.horizon[test],
        sub.y[test],
        forecasts,
        classes,
        scales,
        offsets,
    )


SELECTABLE = (OURS, *INTERMITTENT_METHODS)
SELECTED = "nova_selected"


def choose_methods(
    panel: Panel,
    series: np.ndarray,
    origin: np.ndarray,
    h: np.ndarray,
    y: np.ndarray,
    forecasts: dict[str, np.ndarray],
    cutoff: int,
    eval_series: list[int],
    min_demand_weeks: int = 3,
) -> tuple[dict[int, dict[str, object]], dict[str, str]]:
    """Per-series choice among the methods serving can run (the ONNX model, numpy Croston/SBA/TSB), using only
    backtest rows whose target week is known at ``cutoff``. Each demand class (classified on the history up to
    ``cutoff``) gets the method with the lowest mean scaled pinball loss over its series; a series with at
    least
    ``min_demand_weeks`` known demand weeks gets its own winner. Without any known row: the ONNX model."""
    from ml_training.metrics import pinball

    known = origin + h <= cutoff
    pin = {
        m: np.column_stack([pinball(y, forecasts[m][:, j], t) for j, t in enumerate(QUANTILES)]).mean(axis=1)
        for m in SELECTABLE
    }
    info: dict[int, tuple[str, dict[str, float], int]] = {}
    for i in eval_series:
        hist = panel.series[i].y[: cutoff + 1]
        rows = known & (series == i)
        s = naive_scale(hist)
        scores = {m: float(pin[m][rows].mean() / s) for m in SELECTABLE} if rows.any() and s > 0 else {}
        info[i] = (F.classify_demand(hist), scores, int((y[rows & (h == 1)] > 0).sum()))
    class_winner: dict[str, str] = {}
    for name in F.DEMAND_CLASSES:
        scored = [sc for cls, sc, _ in info.values() if cls == name and sc]
        if scored:
            class_winner[name] = min(SELECTABLE, key=lambda m: float(np.mean([sc[m] for sc in scored])))
    out: dict[int, dict[str, object]] = {}
    for i, (cls, scores, demand_weeks) in info.items():
        if scores and demand_weeks >= min_demand_weeks:
            method, basis = min(SELECTABLE, key=lambda m: scores[m]), "series"
        else:
            method, basis = class_winner.get(cls, OURS), "class" if cls in class_winner else "default"
        out[i] = {
            "method": method,
            "basis": basis,
            "demand_class": cls,
            "scaled_pinball": {m: round(v, 5) for m, v in scores.items()},
        }
    return out, class_winner
