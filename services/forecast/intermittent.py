"""The intermittent-demand fallback: a distribution, not just a point, from the TSB (or Croston/SBA) state.

The point recursions live in ``services.forecast.features`` (shared with training). For quantiles this module
uses the compound-Bernoulli reading of those methods: in a week, demand occurs with probability ``d`` and,
when it occurs, its size follows the series' own non-zero sizes rescaled so that their mean is the smoothed
size ``z``. So the quantile at level ``p`` is 0 when ``p <= 1 - d`` and otherwise the empirical size
quantile at ``(p - (1 - d)) / d`` times ``z / mean(sizes)``. The mean is exactly the method's point
forecast ``d * z``. The forecast is flat over the horizon, as the methods are.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from services.forecast import features

__all__ = ["METHODS", "IntermittentForecast", "intermittent_distribution"]

METHODS = {"tsb": "tsb", "sba": "croston-sba", "croston": "croston"}
"""Fallback method setting -> method name reported in forecasts."""


@dataclass(frozen=True, slots=True)
class IntermittentForecast:
    """Weekly demand distribution of a fallback forecast (the same for every week of the horizon)."""

    method: str
    mean: float
    probability: float
    quantiles: np.ndarray  # one value per requested level


def _occurrence_and_size(history: np.ndarray, method: str) -> tuple[float, float]:
    """(probability of demand in a week, expected size when demand occurs) at the end of ``history``."""
    occurred = (history > 0).astype(np.float64)
    if method == "tsb":
        # TSB smooths the occurrence indicator every week; run on the indicator series it returns d itself.
        probability = features.intermittent_forecast(occurred, "tsb")
        point = features.intermittent_forecast(history, "tsb")
    else:
        # Croston/SBA: z / p, with p the smoothed interval; the occurrence probability is 1 / p.
        point = features.intermittent_forecast(history, method)
        intervals = features.croston(occurred, variant="croston")  # = 1 / p when every size is 1
        probability = float(intervals[-1]) if intervals.size and not np.isnan(intervals[-1]) else 0.0
    if probability <= 0 or point <= 0:
        return 0.0, 0.0
    return min(probability, 1.0), point / probability


def intermittent_distribution(
    history: Sequence[float] | np.ndarray, levels: Sequence[float], method: str = "tsb"
) -> IntermittentForecast:
    """Quantiles at ``levels`` and the mean of next week's demand under the fallback ``method``."""
    if method not in METHODS:
        raise ValueError(f"unknown intermittent method {method!r}")
    y = np.asarray(history, dtype=np.float64)
    levels_arr = np.asarray(levels, dtype=np.float64)
    probability, size = _occurrence_and_size(y, method)
    sizes = y[y > 0]
    if probability == 0 or sizes.size == 0:
        return IntermittentForecast(METHODS[method], 0.0, 0.0, np.zeros(levels_arr.size))
    relative = np.sort(sizes / sizes.mean())
    conditional = np.clip((levels_arr - (1.0 - probability)) / probability, 0.0, 1.0)
    size_quantiles = np.quantile(relative, conditional, method="linear") * size
    values = np.where(levels_arr <= 1.0 - probability, 0.0, size_quantiles)
    values = np.maximum.accumulate(np.maximum(values, 0.0))
    return IntermittentForecast(METHODS[method], float(probability * size), probability, values)
