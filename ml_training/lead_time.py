"""Lead-time demand: quantiles of the TOTAL demand over the L weeks after an origin, L = the material's
planning lead time in weeks (median observed lead time, rounded up, at least 1; the same L the inventory
simulation plans with).

A reorder point is a quantile of lead-time demand. Summing weekly quantiles is wrong (the sum of P95s is not
the P95 of the sum) and sampling the weekly forecasts as independent weeks ignores how a lumpy material's
weeks move together, so a second global LightGBM quantile model predicts the window total directly. It uses
the serving feature function unchanged: the row of ``build_features(history, weeks, codes, 1, ...)`` (the
latest origin, calendar of the window's first week) with its ``horizon`` column set to L, so the window
length is a feature and one model serves every lead time. Target: sum of demand over weeks o+1..o+L, divided
by the series scale like the weekly model; boosting starts from L x the series' empirical weekly quantiles of
the last 26 weeks; split-conformal (Mondrian) offsets from the windows that ended in the last calibration
weeks; clipping at 0, sort (non-crossing) and rescaling in the exported graph, exactly as the weekly model.

The backtest scores window totals on the weekly backtest's cutoffs and refit schedule against, computed in
the same run: window sums sampled from the weekly forecasts (independent weeks, as the inventory simulation
did before this model existed), the empirical quantiles of the L-week totals of the last 26 weeks, and TSB
(alpha 0.1, beta 0.1, the statsforecast TSB baseline's parameters) as L x its rate with split-conformal
multiplicative factors fitted on window totals (statsforecast's own conformal intervals are per week and do
not add up to an interval of the total).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ml_training.datasets import Panel
from ml_training.evaluate import Backtest
from ml_training.externals import Externals
from ml_training.metrics import naive_scale, summarize
from ml_training.model import QUANTILES, ModelParams, QuantileModel, conformal_factors, fit_quantile_model
from services.forecast import features as F

__all__ = [
    "LEVELS",
    "NAME",
    "WINDOW_INDEX",
    "WindowBacktest",
    "WindowMatrix",
    "build_window_matrix",
    "fit_window_model",
    "planning_lead_weeks",
    "run_window_backtest",
]

NAME = "lead_time_demand"
OURS = NAME
LEVELS = ("material", "material_site")  # lead times belong to a material; aggregates mix materials
WINDOW_INDEX = F.FEATURE_NAMES.index("horizon")
"""The feature column that holds the window length L (weeks) in this model's rows."""
DRAWS = 400


def lead_weeks(days: list[float], default_days: float) -> tuple[int, list[int]]:
    """(planning lead time in weeks = ceil(median observed days / 7), at least 1; each observed lead time in
    weeks, in request order)."""
    observed = days or [default_days]
    planning = max(1, math.ceil(float(np.median(observed)) / 7))
    return planning, [max(1, math.ceil(d / 7)) for d in observed]


def default_lead_days(panel: Panel) -> float:
    all_days = [d for v in panel.lead_days.values() for d in v]
    return float(np.median(all_days)) if all_days else 7.0


def planning_lead_weeks(panel: Panel) -> tuple[dict[str, int], int]:
    """material -> planning lead time in weeks, and the default for a material without observed lead
    times."""
    default_days = default_lead_days(panel)
    materials = {s.material for s in panel.series if s.level in LEVELS}
    lead = {m: lead_weeks(panel.lead_days.get(m, []), default_days)[0] for m in sorted(materials)}
    return lead, lead_weeks([], default_days)[0]


@dataclass
class WindowMatrix:
    X: np.ndarray  # float32 [N, F]; column WINDOW_INDEX = L
    y: np.ndarray  # total demand over weeks origin+1..origin+L; NaN where the window runs past the data
    series: np.ndarray
    origin: np.ndarray
    window: np.ndarray  # L per row
    target: np.ndarray  # last week of the window (origin + L): the row is known once that week is

    def take(self, mask: np.ndarray) -> WindowMatrix:
        return WindowMatrix(
            self.X[mask],
            self.y[mask],
            self.series[mask],
            self.origin[mask],
            self.window[mask],
            self.target[mask],
        )


def window_totals(y: np.ndarray, origins: np.ndarray, L: int) -> np.ndarray:
    cs = np.concatenate(([0.0], np.cumsum(y)))
    end = origins + L
    ok = end <= y.size - 1
    return np.where(ok, cs[np.minimum(end, y.size - 1) + 1] - cs[origins + 1], np.nan)


def build_window_matrix(
    panel: Panel,
    externals: Externals,
    vocab: dict[str, list[str]],
    lead: dict[str, int],
    default_lead: int,
    series_ids: list[int] | None = None,
    min_history: int = 4,
) -> WindowMatrix:
    T = panel.weeks.size
    ids = range(len(panel.series)) if series_ids is None else series_ids
    origins = np.arange(min_history - 1, T)
    blocks, ys, sid, wins = [], [], [], []
    for i in ids:
        s = panel.series[i]
        if s.level not in LEVELS:
            continue
        L = lead.get(s.material, default_lead)
        codes = F.encode_static(s.attrs, vocab)
        city = F.WEATHER_CITY_BY_REGION.get(s.region, "salvador_ba")
        X = F.build_features(s.y, panel.weeks, codes, 1, externals.for_city(city), origins, s.region)
        X[:, WINDOW_INDEX] = L
        blocks.append(X)
        ys.append(window_totals(s.y, origins, L))
        sid.append(np.full(origins.size, i))
        wins.append(np.full(origins.size, L))
    origin = np.tile(origins, len(blocks))
    window = np.concatenate(wins)
    return WindowMatrix(
        np.concatenate(blocks), np.concatenate(ys), np.concatenate(sid), origin, window, origin + window
    )


def fit_window_model(wm: WindowMatrix, cutoff: int, params: ModelParams) -> QuantileModel:
    return fit_quantile_model(wm.X, wm.y, wm.target, cutoff, params, base_multiplier=WINDOW_INDEX)


def _empirical_window(y: np.ndarray, origin: int, L: int, window: int = 26) -> np.ndarray:
    """Empirical quantiles of the (overlapping) L-week totals inside the last ``window`` weeks."""
    w = y[max(0, origin - window + 1) : origin + 1]
    sums = np.convolve(w, np.ones(L), mode="valid") if w.size >= L else np.array([w.sum() * L / w.size])
    return np.quantile(sums, QUANTILES)


def sample_window_quantiles(
    Q: np.ndarray, uniforms: np.ndarray, levels: tuple[float, ...] = QUANTILES
) -> np.ndarray:
    """Quantiles [C, len(levels)] of the window total from weekly quantiles Q [C, L, 4] drawn independently
    with ``uniforms`` [C, M, L] (the inventory simulation's weekly quantile function)."""
    from ml_training.inventory import quantile_fn

    return np.quantile(quantile_fn(Q, uniforms).sum(axis=2), levels, axis=1).T


@dataclass
class WindowBacktest:
    cutoffs: np.ndarray
    series: np.ndarray  # evaluated material series x reported cutoffs (windows past the data included)
    origin: np.ndarray
    window: np.ndarray
    y: np.ndarray  # NaN where the window runs past the data (not scored; still used by the simulation)
    forecasts: dict[str, np.ndarray]
    scales: dict[int, float]  # naive weekly scale x L per series (history up to the first cutoff)
    offsets: list[list[float]]

    def metrics(self) -> dict[str, dict[str, float]]:
        known = ~np.isnan(self.y)
        return {
            m: summarize(self.y[known], Q[known], self.series[known], self.scales, QUANTILES)
            for m, Q in self.forecasts.items()
        }

    def by_cutoff(self, method: str, series: int) -> np.ndarray:
        """[C, 4] window quantiles of ``series`` at every cutoff, in cutoff order."""
        rows = np.flatnonzero(self.series == series)
        return self.forecasts[method][rows[np.argsort(self.origin[rows])]]


def run_window_backtest(
    panel: Panel,
    wm: WindowMatrix,
    bt: Backtest,
    eval_series: list[int],
    params: ModelParams,
    refit_every: int = 4,
    warmup: int = 6,
    sampled: tuple[str, ...] = (),
    seed: int = 11,
    progress: Callable[[str], None] | None = None,
) -> WindowBacktest:
    """Same cutoffs and refit blocks as the weekly backtest (blocks aligned ``warmup`` cutoffs before the
    first reported one). ``sampled``: weekly methods of ``bt`` whose independent-week window sums are
    reported too."""
    say = progress or (lambda _msg: None)
    cutoffs = np.asarray(bt.cutoffs)
    first = int(cutoffs[0])
    all_cutoffs = np.arange(max(first - warmup, 3), int(cutoffs[-1]) + 1)
    blocks = [all_cutoffs[k : k + refit_every] for k in range(0, all_cutoffs.size, refit_every)]
    rows = np.flatnonzero(np.isin(wm.series, eval_series) & np.isin(wm.origin, cutoffs))
    sub = wm.take(rows)
    n = rows.size
    ours = np.zeros((n, len(QUANTILES)))
    tsb = np.zeros((n, len(QUANTILES)))
    # TSB rate at every origin of every window row, times L: its point forecast of the window total.
    tsb_point = np.zeros(wm.series.size)
    for i in np.unique(wm.series):
        r = np.flatnonzero(wm.series == i)
        tsb_point[r] = np.nan_to_num(F.tsb(panel.series[int(i)].y)[wm.origin[r]], nan=0.0) * wm.window[r]
    offsets = []
    for block in blocks:
        mask = np.isin(sub.origin, block)
        if not mask.any():
            continue
        c0 = int(block[0])
        say(f"lead-time model: fit at cutoff week {panel.weeks[c0]} for {int(mask.sum())} window rows")
        model = fit_window_model(wm, c0, params)
        offsets.append(model.offsets.tolist())
        ours[mask] = model.predict(sub.X[mask])
        cal = (wm.target <= c0) & (wm.target > c0 - params.calibration_weeks) & ~np.isnan(wm.y)
        factors = conformal_factors(wm.y[cal], tsb_point[cal])
        tsb[mask] = np.maximum.accumulate(tsb_point[rows][mask][:, None] * factors[None, :], axis=1)
    forecasts = {OURS: ours, "tsb_window_conformal": tsb}
    emp = np.zeros((n, len(QUANTILES)))
    for k in range(n):
        emp[k] = _empirical_window(panel.series[int(sub.series[k])].y, int(sub.origin[k]), int(sub.window[k]))
    forecasts["reference_empirical_26w_totals"] = emp
    if sampled:
        rng = np.random.default_rng(seed)
        row_of = {
            (int(s), int(o), int(h)): r
            for r, (s, o, h) in enumerate(zip(bt.series, bt.origin, bt.h, strict=True))
        }
        out = {m: np.zeros((n, len(QUANTILES))) for m in sampled}
        for i in np.unique(sub.series):
            r = np.flatnonzero(sub.series == i)
            r = r[np.argsort(sub.origin[r])]
            L = int(sub.window[r[0]])
            idx = np.array(
                [
                    [row_of[(int(i), int(c), min(h, bt.horizon))] for h in range(1, L + 1)]
                    for c in sub.origin[r]
                ]
            )
            u = rng.random((r.size, DRAWS, L))  # same draws for every method
            for m in sampled:
                out[m][r] = sample_window_quantiles(bt.forecasts[m][idx], u)
        forecasts.update({f"weekly_sampled_{m}": q for m, q in out.items()})
    scales = {}
    for i in eval_series:
        L = sub.window[sub.series == i]
        if L.size:
            scales[i] = naive_scale(panel.series[i].y[: first + 1]) * float(L[0])
    return WindowBacktest(cutoffs, sub.series, sub.origin, sub.window, sub.y, forecasts, scales, offsets)
