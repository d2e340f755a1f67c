"""The fast paths of the shared feature module give the very bits of the straightforward computations."""

from __future__ import annotations

import numpy as np
import pytest

from services.forecast import features as F
from services.forecast.features import _linear_quantiles  # the helper under test

LEVELS = np.array([0.5, 0.8, 0.9, 0.95])


def _series(seed: int, size: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y = np.where(rng.random(size) < rng.random(), rng.gamma(0.7, 9.0, size), 0.0)
    if seed % 4 == 0:
        y[rng.random(size) < 0.05] = np.nan
    return y


def _croston_reference(y: np.ndarray, alpha: float = 0.1, variant: str = "sba") -> np.ndarray:
    """The recursion on numpy scalars, as first written."""
    out = np.full(y.size, np.nan)
    z = p = np.nan
    since = 0
    factor = 1.0 - alpha / 2.0 if variant == "sba" else 1.0
    for t, value in enumerate(y):
        since += 1
        if value > 0:
            if np.isnan(z):
                z, p = value, float(since)
            else:
                z += alpha * (value - z)
                p += alpha * (since - p)
            since = 0
        if not np.isnan(z):
            out[t] = factor * z / p
    return out


def _tsb_reference(y: np.ndarray, alpha: float = 0.1, beta: float = 0.1) -> np.ndarray:
    out = np.full(y.size, np.nan)
    z = d = np.nan
    for t, value in enumerate(y):
        if np.isnan(z):
            if value > 0:
                z, d = value, 1.0 / (t + 1)
        else:
            d += beta * ((1.0 if value > 0 else 0.0) - d)
            if value > 0:
                z += alpha * (value - z)
        if not np.isnan(z):
            out[t] = d * z
    return out


@pytest.mark.parametrize("seed", range(40))
def test_recursions_match_numpy_scalar_arithmetic(seed: int) -> None:
    y = _series(seed, 5 + seed * 3)
    for variant in ("sba", "croston"):
        assert F.croston(y, 0.2, variant).tobytes() == _croston_reference(y, 0.2, variant).tobytes()
    assert F.tsb(y, 0.1, 0.3).tobytes() == _tsb_reference(y, 0.1, 0.3).tobytes()


@pytest.mark.parametrize("size", [1, 2, 3, 7, 13, 26, 30])
def test_linear_quantiles_are_numpy_quantiles(size: int) -> None:
    rows = np.stack([_series(seed, size) for seed in range(24)])
    expected = np.array([np.quantile(row, LEVELS) for row in rows])
    assert _linear_quantiles(rows).tobytes() == expected.tobytes()


@pytest.mark.parametrize("seed", range(12))
def test_window_features_match_per_origin_slices(seed: int) -> None:
    y = _series(seed + 1, 60)
    weeks = np.datetime64("2024-01-01") + 7 * np.arange(60).astype("timedelta64[D]")
    origins = np.arange(60)
    X = F.build_features(y, weeks, {}, 2, origins=origins)[::2]
    scale = X[:, F.FEATURE_NAMES.index("scale")].astype(np.float64)
    cs = np.concatenate(([0.0], np.cumsum(y)))
    csn = np.concatenate(([0.0], np.cumsum(y > 0)))
    exact_scale = np.where(csn[1:] > 0, cs[1:] / np.maximum(csn[1:], 1), 1.0)
    assert np.array_equal(scale, exact_scale.astype(np.float32), equal_nan=True)
    for e in origins + 1:
        window26 = y[max(e - 26, 0) : e]
        q = (np.quantile(window26, LEVELS) / exact_scale[e - 1]).astype(np.float32)
        got = [X[e - 1, F.FEATURE_NAMES.index(f"hist_q{round(level * 100)}_26")] for level in LEVELS]
        assert np.array_equal(got, q, equal_nan=True)
        peak = np.float32(y[max(e - 13, 0) : e].max() / exact_scale[e - 1])
        assert np.array_equal(X[e - 1, F.FEATURE_NAMES.index("max_13")], peak, equal_nan=True)
