"""Policy arithmetic: the weekly atoms, a decomposition that adds up, the as-of date of an order."""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import pytest

from services.forecast.policy import as_of_date, compute_policy, lead_time_demand, quantile_atoms

LEVELS = (0.5, 0.8, 0.9, 0.95)


def _weeks(seed: int, horizon: int = 8) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.sort(rng.gamma(0.8, 4.0, (horizon, len(LEVELS))), axis=1)


@pytest.mark.parametrize("levels", [LEVELS, (0.1, 0.5, 0.9), (0.0025, 0.5, 0.975), (0.5,)])
def test_atoms_are_the_readme_reading_of_each_week(levels: tuple[float, ...]) -> None:
    values = np.sort(np.random.default_rng(3).gamma(0.8, 4.0, (6, len(levels))), axis=1)
    u = (np.arange(200) + 0.5) / 200
    expected = []
    for row in values:
        top = row[-1]
        if len(levels) >= 2:
            top = row[-1] + (row[-1] - row[-2]) / (levels[-1] - levels[-2]) * (1 - levels[-1])
        expected.append(np.interp(u, [0.0, *levels, 1.0], [0.0, *row, top]))
    np.testing.assert_array_equal(quantile_atoms(levels, values), np.array(expected))


@pytest.mark.parametrize("seed", range(6))
def test_decomposition_adds_up_and_has_no_lead_time_part_without_spread(seed: int) -> None:
    weeks = _weeks(seed)
    today = dt.date(2025, 10, 27)
    steady = compute_policy(
        LEVELS, weeks, np.full(7, 9.0), service_level=0.95, stock_position=0.0, today=today
    )
    assert steady.lead_time_variability_part == 0.0
    assert steady.safety_stock == pytest.approx(steady.demand_part)
    lead = np.array([2.0, 4, 5, 6, 6, 7, 9, 12, 15, 21, 35])
    spread = compute_policy(LEVELS, weeks, lead, service_level=0.95, stock_position=0.0, today=today)
    assert spread.demand_part + spread.lead_time_variability_part == pytest.approx(spread.safety_stock)
    assert spread.reorder_point == pytest.approx(spread.expected_lead_time_demand + spread.safety_stock)
    # The demand part is the safety stock at the mean lead time, read on the reorder point's grid.
    atoms = quantile_atoms(LEVELS, weeks)
    mixture = lead_time_demand(atoms, lead)
    fixed = lead_time_demand(atoms, np.array([lead.mean()]), step=mixture.step)
    assert spread.demand_part == fixed.quantile(0.95) - fixed.mean


def test_order_date_counts_from_the_data_as_of_date() -> None:
    assert as_of_date(dt.date(2026, 11, 25), dt.date(2025, 10, 27)) == dt.date(2025, 10, 27)
    assert as_of_date(dt.date(2025, 10, 22), dt.date(2025, 10, 27)) == dt.date(2025, 10, 22)
    assert as_of_date(dt.date(2025, 10, 22), None) == dt.date(2025, 10, 22)
    weeks, lead = _weeks(1), np.array([5.0, 7.0, 9.0])
    as_of = dt.date(2025, 10, 27)
    low = compute_policy(LEVELS, weeks, lead, service_level=0.95, stock_position=0.0, today=as_of)
    assert low.suggested_order_date == as_of
    high = compute_policy(
        LEVELS, weeks, lead, service_level=0.95, stock_position=low.reorder_point + 70.0, today=as_of
    )
    days = (high.suggested_order_date - as_of).days  # type: ignore[operator]
    assert days == math.floor((high.stock_position - high.reorder_point) / high.mean_daily_demand)
