"""The inventory simulation on cases whose answer is known by hand."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from ml_training.evaluate import Backtest
from ml_training.inventory import SERVICE_LEVELS, simulate, stock_at_fill_rate


def _backtest(y: np.ndarray, q: np.ndarray, lead_days: list[float]) -> tuple[Backtest, SimpleNamespace]:
    cutoffs = np.arange(4, y.size - 1)
    origin = np.repeat(cutoffs, 2)
    h = np.tile([1, 2], cutoffs.size)
    series = np.zeros(origin.size, dtype=int)
    bt = Backtest(
        cutoffs=cutoffs,
        horizon=2,
        series=series,
        origin=origin,
        h=h,
        y=y[np.minimum(origin + h, y.size - 1)],
        forecasts={"m": np.tile(q, (origin.size, 1))},
        classes={0: "smooth"},
        scales={0: 1.0},
    )
    panel = SimpleNamespace(series=[SimpleNamespace(y=y, material="m1")], lead_days={"m1": lead_days})
    return bt, panel


def test_exact_forecast_of_constant_demand_serves_everything() -> None:
    """Lead 3 days -> 1 week: S covers that week and the review week, 2 x 10 = 20 at every level (both
    sampled weeks reach 10 with probability 1/4, the mass at the top of the sum). The first week ends with
    one week of stock; from then on each order arrives for the week after next, exactly when stock runs
    out: everything is served and the other 14 weeks end empty."""
    y = np.full(20, 10.0)
    bt, panel = _backtest(y, np.array([10.0, 10.0, 10.0, 10.0]), [3.0])
    curve = simulate(bt, panel, ["m"])["m"]
    weeks = bt.cutoffs.size
    assert curve["fill_rate"] == pytest.approx([1.0] * len(SERVICE_LEVELS))
    assert curve["avg_stock_weeks"] == pytest.approx([1.0 / weeks] * len(SERVICE_LEVELS))
    assert stock_at_fill_rate(curve) == pytest.approx(1.0 / weeks)


def test_an_order_is_not_on_hand_before_its_lead_time() -> None:
    """Forecast 5 a week: S = 2 x 5 = 10. Week 1 is served from the starting 10; the order placed after it
    (10) arrives only for week 3, so week 2 goes unserved; the position (10 on order) then equals S and
    nothing more is ordered until it arrives. Every other week is served: 8 of the 15."""
    y = np.full(20, 10.0)
    bt, panel = _backtest(y, np.array([5.0, 5.0, 5.0, 5.0]), [7.0])
    curve = simulate(bt, panel, ["m"])["m"]
    assert bt.cutoffs.size == 15
    assert curve["fill_rate"] == pytest.approx([8 / 15] * len(SERVICE_LEVELS))
    assert stock_at_fill_rate(curve) is None


def test_stock_at_fill_rate_interpolates() -> None:
    curve = {"fill_rate": [0.9, 0.94, 0.96, 0.99], "avg_stock_weeks": [1.0, 2.0, 4.0, 8.0]}
    assert stock_at_fill_rate(curve) == pytest.approx(3.0)


def test_window_method_sets_the_order_up_to_level_from_its_window_quantiles() -> None:
    from ml_training.lead_time import WindowBacktest

    y = np.full(20, 10.0)
    bt, panel = _backtest(y, np.array([5.0, 5.0, 5.0, 5.0]), [3.0])  # weekly forecast too low
    cutoffs = bt.cutoffs
    exact = np.tile([10.0, 10.0, 10.0, 10.0], (cutoffs.size, 1))  # L = 1 week: window total = 10
    window = WindowBacktest(
        cutoffs=cutoffs,
        series=np.zeros(cutoffs.size, dtype=int),
        origin=cutoffs,
        window=np.ones(cutoffs.size, dtype=int),
        y=np.full(cutoffs.size, 10.0),
        forecasts={"w": exact},
        scales={0: 1.0},
        offsets=[],
    )
    curves = simulate(bt, panel, ["m"], window=window, window_methods=("w",))
    # The window total (10 over L = 1 week) at the same weekly rate over lead time + review week: S = 20.
    assert curves["w"]["fill_rate"] == pytest.approx([1.0] * len(SERVICE_LEVELS))
    assert curves["m"]["fill_rate"][0] == pytest.approx(8 / 15)
