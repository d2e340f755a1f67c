"""Forecast accuracy metrics for intermittent weekly demand (no MAPE: it is meaningless on zeros)."""

from __future__ import annotations

import numpy as np

__all__ = ["naive_scale", "pinball", "summarize"]


def pinball(y: np.ndarray, q: np.ndarray, tau: float) -> np.ndarray:
    diff = y - q
    return np.maximum(tau * diff, (tau - 1.0) * diff)


def naive_scale(y: np.ndarray) -> float:
    """MASE denominator: in-sample mean absolute one-step naive error (0 when the history never changes)."""
    return float(np.mean(np.abs(np.diff(y)))) if y.size > 1 else 0.0


def summarize(
    y: np.ndarray,
    Q: np.ndarray,
    series: np.ndarray,
    scales: dict[int, float],
    quantiles: tuple[float, ...],
) -> dict[str, float]:
    """Metrics of quantile forecasts ``Q`` [R, len(quantiles)] (P50 first) against ``y`` [R].

    Scaled metrics (MASE, scaled pinball) divide each series' mean error by its naive scale and then average
    over series, so a large-volume material does not drown the others; WAPE and bias are pooled over all
    rows."""
    p50 = Q[:, 0]
    total = float(y.sum())
    out: dict[str, float] = {
        "rows": int(y.size),
        "series": int(np.unique(series).size),
        "wape": float(np.abs(y - p50).sum() / total) if total > 0 else float("nan"),
        "bias": float((p50 - y).sum() / total) if total > 0 else float("nan"),
    }
    pin = np.column_stack([pinball(y, Q[:, j], tau) for j, tau in enumerate(quantiles)])
    ids = np.unique(series)
    mase, spl, per_q = [], [], []
    for i in ids:
        s = scales[int(i)]
        if s <= 0:
            continue
        rows = series == i
        mase.append(np.abs(y[rows] - p50[rows]).mean() / s)
        spl.append(pin[rows].mean() / s)
        per_q.append(pin[rows].mean(axis=0) / s)
    out["mase"] = float(np.mean(mase)) if mase else float("nan")
    out["scaled_pinball"] = float(np.mean(spl)) if spl else float("nan")
    per_q_mean = np.mean(per_q, axis=0) if per_q else np.full(len(quantiles), np.nan)
    demand = y > 0
    for j, tau in enumerate(quantiles):
        name = f"p{round(tau * 100)}"
        out[f"scaled_pinball_{name}"] = float(per_q_mean[j])
        out[f"coverage_{name}"] = float(np.mean(y <= Q[:, j]))
        out[f"coverage_{name}_demand_weeks"] = (
            float(np.mean(y[demand] <= Q[demand, j])) if demand.any() else float("nan")
        )
    out["zero_forecast_share_p50"] = float(np.mean(p50 <= 0))
    out["zero_forecast_share_p90"] = (
        float(np.mean(Q[:, quantiles.index(0.9)] <= 0)) if 0.9 in quantiles else float("nan")
    )
    out["demand_week_share"] = float(np.mean(demand))
    return out
