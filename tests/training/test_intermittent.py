"""Croston / SBA / TSB against hand calculations, and the Syntetos-Boylan classification."""

from __future__ import annotations

import numpy as np
import pytest

from services.forecast import features as F

Y = np.array([0.0, 3.0, 0.0, 0.0, 6.0])


def test_croston_by_hand() -> None:
    # t=1: z=3, p=2 -> 1.5 ; t=4: z=3+.5(6-3)=4.5, p=2+.5(3-2)=2.5 -> 1.8
    out = F.croston(Y, alpha=0.5, variant="croston")
    assert np.isnan(out[0])
    assert out[1:] == pytest.approx([1.5, 1.5, 1.5, 1.8])


def test_sba_by_hand() -> None:
    out = F.croston(Y, alpha=0.5, variant="sba")  # (1 - alpha/2) = 0.75 x Croston
    assert out[1:] == pytest.approx([1.125, 1.125, 1.125, 1.35])


def test_tsb_by_hand() -> None:
    # t=1: z=3, d=1/2 -> 1.5 ; t=2: d=.25 -> .75 ; t=3: d=.125 -> .375 ; t=4: d=.5625, z=4.5 -> 2.53125
    out = F.tsb(Y, alpha=0.5, beta=0.5)
    assert out[1:] == pytest.approx([1.5, 0.75, 0.375, 2.53125])


def test_intermittent_forecast_and_quantiles() -> None:
    assert F.intermittent_forecast(np.zeros(5), "sba") == 0.0
    assert F.intermittent_forecast(Y, "tsb") == pytest.approx(F.tsb(Y)[-1])
    q = F.intermittent_quantiles(Y, "sba", factors=[0.0, 1.0, 2.5, 2.0], horizon=3)
    assert q.shape == (3, 4) and q.dtype == np.float32
    point = F.croston(Y, variant="sba")[-1]
    assert q[0] == pytest.approx([0.0, point, 2.5 * point, 2.5 * point], rel=1e-6)  # P95 never below P90
    assert np.all(q == q[0])
    assert np.all(F.intermittent_quantiles(np.zeros(6), "tsb", [0, 1, 2, 3], 2) == 0)
    with pytest.raises(ValueError):
        F.intermittent_forecast(Y, "arima")


def test_conformal_factors_and_offsets() -> None:
    from ml_training.model import conformal_factors, conformal_offsets

    y = np.array([0, 0, 0, 0, 0, 0, 0, 0, 4, 10.0])
    point = np.full(10, 2.0)
    # ratios sorted: 0 x8, 2, 5; level 0.8 -> ceil(11 * .8) = 9th -> 2 ; level 0.9 -> 10th -> 5
    assert list(conformal_factors(y, point, (0.5, 0.8, 0.9))) == [0.0, 2.0, 5.0]
    resid = np.arange(1, 11, dtype=float)[:, None]
    assert conformal_offsets(resid, (0.5,))[0] == 6.0  # ceil(11 * 0.5) = 6th smallest
    groups = (np.arange(10) >= 5)[:, None]
    assert conformal_offsets(resid, (0.5,), groups)[0] == 8.0  # among 6..10 (n=5): ceil(6 * .5) = 3rd


@pytest.mark.parametrize(
    ("series", "expected"),
    [
        ([5, 6, 5, 6, 5, 6, 5, 6], "smooth"),
        ([1, 20, 1, 30, 2, 25, 1, 40], "erratic"),
        ([0, 0, 5, 0, 0, 5, 0, 0, 6], "intermittent"),
        ([0, 0, 1, 0, 0, 50, 0, 0, 2], "lumpy"),
        ([0, 0, 0, 7, 0, 0], "insufficient"),
        ([0, 0, 0], "insufficient"),
    ],
)
def test_classification(series: list[float], expected: str) -> None:
    assert F.classify_demand(np.array(series, dtype=np.float64)) == expected


def test_class_stats() -> None:
    adi, cv2, n = F.demand_class_stats(np.array([0, 0, 5, 0, 0, 5, 0, 0, 6.0]))
    assert n == 3 and adi == pytest.approx(3.0)
    assert cv2 == pytest.approx(np.var([5, 5, 6]) / np.mean([5, 5, 6]) ** 2)
