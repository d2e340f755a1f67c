"""Lead-time window targets, references and the window quantile function, on cases known by hand."""

from __future__ import annotations

import numpy as np
import pytest

from ml_training.inventory import quantile_fn
from ml_training.lead_time import _empirical_window, lead_weeks, sample_window_quantiles, window_totals


def test_window_totals_sum_the_next_l_weeks_and_stop_at_the_data_end() -> None:
    y = np.arange(10, dtype=float)
    got = window_totals(y, np.array([0, 5, 7, 8]), 2)
    assert got[:3] == pytest.approx([1 + 2, 6 + 7, 8 + 9])
    assert np.isnan(got[3])  # weeks 9 and 10: the window runs past the data


def test_planning_lead_time_rounds_the_median_up_to_weeks() -> None:
    assert lead_weeks([3.0, 9.0, 20.0], 7.0) == (2, [1, 2, 3])
    assert lead_weeks([], 7.0)[0] == 1
    assert lead_weeks([0.0], 7.0)[0] == 1


def test_empirical_window_quantiles_of_overlapping_totals() -> None:
    y = np.zeros(30)
    y[-2] = 10.0  # one demand in the last 26 weeks: 2 of the 25 two-week totals hold it
    q = _empirical_window(y, 29, 2)
    # sorted totals: 23 zeros then 10, 10; P95 at position 0.95 x 24 = 22.8 -> 0.8 x 10
    assert q[0] == 0.0 and q[-1] == pytest.approx(8.0)


def test_sampled_window_quantiles_are_sorted_and_scale_with_the_forecast() -> None:
    Q = np.tile([1.0, 2.0, 3.0, 5.0], (3, 2, 1))
    u = np.random.default_rng(0).random((3, 200, 2))
    got = sample_window_quantiles(Q, u)
    assert got.shape == (3, 4) and np.all(np.diff(got, axis=1) >= 0)
    assert sample_window_quantiles(2 * Q, u) == pytest.approx(2 * got)
    assert np.all(got[:, -1] <= 2 * (5.0 + 0.8 * 2.0))  # never above twice the weekly P99
    Qw = np.array([[1.0, 2.0, 3.0, 4.0]])
    levels = np.array([0.5, 0.9, 0.99])[None, :, None]
    got = quantile_fn(Qw[:, None, :], levels)[0, :, 0]
    assert got == pytest.approx([1.0, 3.0, 4.0 + 0.8 * (4.0 - 3.0)])
