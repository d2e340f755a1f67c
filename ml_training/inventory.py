"""Inventory simulation over the backtest weeks: what each method's forecasts would have done to stock.

Periodic review, one review a week, lost sales. At the end of week c, after that week's demand, a method's
order-up-to level S is the quantile at the target service level of its demand over the protection interval:
the lead time plus the review week, weeks c+1..c+L+1 (L = the material's median observed lead time in weeks,
at least 1), sampled from its weekly quantile forecasts made at c: each week's quantile function is piecewise
linear through (0, 0), its P50..P95 and an extrapolated P99, weeks are drawn independently, with the same
random draws for every method. If the stock position (on hand + on order) is below S the difference is
ordered and arrives after that order's *observed* lead time (the material's real lead times, cycled in
request order, in whole weeks rounded up): an order of lead time l weeks placed at the end of week c is on
hand for week c+1+l, not before. Materials with fewer than two demand weeks before the backtest are
bought to order and left out. The export holds no stock ledger, so every method starts with on-hand = its
own first S. Stock and demand are normalised by the series' mean weekly demand before the backtest (so
"average stock" reads as weeks of cover and every material weighs the same).

Methods that forecast the lead-time window total directly (the lead_time_demand model and the window
references) set S to their window quantile function at the service level instead: the same piecewise-linear
function through (0, 0), P50..P95 and the extrapolated P99, of the window total over the L lead-time weeks,
with no sampling, scaled by (L+1)/L to the protection interval (the review week at the window's weekly rate:
those methods forecast the lead time only). For those,
"ours" is the lead_time_demand model: the reorder point is the lead-time demand quantile at the target
service level.
"""

from __future__ import annotations

import numpy as np

from ml_training.datasets import Panel
from ml_training.evaluate import Backtest
from ml_training.lead_time import WindowBacktest, default_lead_days, lead_weeks

__all__ = ["SERVICE_LEVELS", "simulate", "stock_at_fill_rate"]

SERVICE_LEVELS = (0.80, 0.85, 0.90, 0.93, 0.95, 0.97, 0.98, 0.99)
_KNOTS = np.array([0.0, 0.5, 0.8, 0.9, 0.95, 0.99])
DRAWS = 400


def quantile_fn(Q: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Quantiles Q [C, L, 4] (P50, P80, P90, P95) evaluated at uniforms u [C, M, L] -> [C, M, L]: piecewise
    linear through (0, 0), the four quantiles and P99 = P95 + 0.8 (P95 - P90)."""
    p99 = Q[..., 3] + (Q[..., 3] - Q[..., 2]) * 0.8
    fp = np.concatenate([np.zeros((*Q.shape[:-1], 1)), Q, p99[..., None]], axis=-1)[:, None, :, :]
    fp = np.broadcast_to(fp, (*u.shape, _KNOTS.size))
    seg = np.clip(np.searchsorted(_KNOTS, u, side="right"), 1, _KNOTS.size - 1)
    lo, hi = _KNOTS[seg - 1], _KNOTS[seg]
    a = np.take_along_axis(fp, (seg - 1)[..., None], axis=-1)[..., 0]
    b = np.take_along_axis(fp, seg[..., None], axis=-1)[..., 0]
    return a + (b - a) * (u - lo) / (hi - lo)


def simulate(
    bt: Backtest,
    panel: Panel,
    methods: list[str],
    seed: int = 11,
    window: WindowBacktest | None = None,
    window_methods: tuple[str, ...] = (),
) -> dict[str, dict[str, list[float]]]:
    """method -> {"service_level", "fill_rate", "avg_stock_weeks"} curves over :data:`SERVICE_LEVELS`.
    ``window_methods`` (forecasts in ``window``) set S from their lead-time window quantiles directly."""
    ids = sorted(bt.classes)
    cutoffs = [int(c) for c in bt.cutoffs]
    H = bt.horizon
    default_days = default_lead_days(panel)
    rng = np.random.default_rng(seed)
    first = cutoffs[0]
    norm = {i: panel.series[i].y[: first + 1].mean() for i in ids}
    # Only materials with a demand pattern (at least two demand weeks before the backtest) are stocked; a
    # material seen once is bought to order, and no forecast can justify holding it.
    ids = [i for i in ids if norm[i] > 0 and bt.classes[i] != "insufficient"]
    leads = {i: lead_weeks(panel.lead_days.get(panel.series[i].material, []), default_days) for i in ids}
    # Lead-time-demand samples per (method, series, cutoff): same uniforms for every method.
    row_of = {
        (int(s), int(o), int(h)): r
        for r, (s, o, h) in enumerate(zip(bt.series, bt.origin, bt.h, strict=True))
    }
    # An order placed at the end of week c arrives for week c+1+L and the next one is placed a week later,
    # so S protects the L+1 weeks c+1..c+L+1 (lead time plus the one-week review period).
    uniforms = {i: rng.random((len(cutoffs), DRAWS, leads[i][0] + 1)) for i in ids}
    idx = {
        i: np.array([[row_of[(i, c, min(h, H))] for h in range(1, leads[i][0] + 2)] for c in cutoffs])
        for i in ids
    }
    out: dict[str, dict[str, list[float]]] = {}
    at_levels = np.broadcast_to(
        np.asarray(SERVICE_LEVELS)[None, :, None], (len(cutoffs), len(SERVICE_LEVELS), 1)
    )
    for method in [*methods, *window_methods]:
        S = np.zeros((len(SERVICE_LEVELS), len(ids), len(cutoffs)))
        for k, i in enumerate(ids):
            if method in window_methods:
                assert window is not None
                Qw = window.by_cutoff(method, i)  # [C, 4] window-total quantiles
                planned = leads[i][0]
                at_level = quantile_fn(Qw[:, None, :], at_levels)[:, :, 0].T
                S[:, k, :] = at_level * (planned + 1) / planned
                continue
            ltd = quantile_fn(bt.forecasts[method][idx[i]], uniforms[i]).sum(axis=2)  # [C, M] samples
            S[:, k, :] = np.quantile(ltd, SERVICE_LEVELS, axis=1)
        fill, stock = [], []
        for s_idx in range(len(SERVICE_LEVELS)):
            served_total = demand_total = 0.0
            stock_weeks = []
            for k, i in enumerate(ids):
                y = panel.series[i].y
                actual = leads[i][1]
                on_hand = S[s_idx, k, 0]  # start at the first order-up-to level, nothing on order
                arrivals: dict[int, float] = {}
                n_orders = 0
                levels = []
                for c_idx, c in enumerate(cutoffs):
                    if c_idx > 0:  # review at the end of week c
                        position = on_hand + sum(arrivals.values())
                        if position < S[s_idx, k, c_idx]:
                            lead = actual[n_orders % len(actual)]
                            n_orders += 1
                            # Placed after week c's demand: it serves week c+1+lead at the earliest.
                            due = c + 1 + lead
                            arrivals[due] = arrivals.get(due, 0.0) + S[s_idx, k, c_idx] - position
                    t = c + 1
                    on_hand += arrivals.pop(t, 0.0)
                    demand = float(y[t])
                    served = min(on_hand, demand)
                    on_hand -= served
                    served_total += served / norm[i]
                    demand_total += demand / norm[i]
                    levels.append(on_hand / norm[i])
                stock_weeks.append(float(np.mean(levels)))
            fill.append(served_total / demand_total if demand_total > 0 else float("nan"))
            stock.append(float(np.mean(stock_weeks)))
        out[method] = {"service_level": list(SERVICE_LEVELS), "fill_rate": fill, "avg_stock_weeks": stock}
    return out


def stock_at_fill_rate(curve: dict[str, list[float]], target: float = 0.95) -> float | None:
    """Average stock needed to reach ``target`` fill rate, interpolated along the method's curve (None if no
    service level in the sweep reaches it)."""
    fill = np.asarray(curve["fill_rate"])
    stock = np.asarray(curve["avg_stock_weeks"])
    order = np.argsort(stock)
    fill, stock = np.maximum.accumulate(fill[order]), stock[order]
    if fill.max() < target:
        return None
    k = int(np.argmax(fill >= target))
    if k == 0:
        return float(stock[0])
    f0, f1, s0, s1 = fill[k - 1], fill[k], stock[k - 1], stock[k]
    return float(s0 + (s1 - s0) * (target - f0) / (f1 - f0)) if f1 > f0 else float(s1)
