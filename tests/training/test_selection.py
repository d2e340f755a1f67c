"""The per-series model choice only looks at backtest rows whose target is known at the cutoff."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from ml_training.evaluate import OURS, choose_methods


def _case() -> tuple[SimpleNamespace, dict[str, np.ndarray], np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    y_hist = np.array([0, 3, 0, 4, 0, 0, 5, 0, 3, 0, 4, 0, 6, 0, 0, 3.0])  # intermittent
    panel = SimpleNamespace(series=[SimpleNamespace(y=y_hist)])
    origin = np.repeat(np.arange(8, 15), 1)
    h = np.ones_like(origin)
    y = y_hist[origin + 1]
    series = np.zeros_like(origin)
    good_early = np.where(origin + h <= 11, y, 0.0)[:, None].repeat(4, 1)  # perfect on rows known at 11
    good_late = np.where(origin + h > 11, y, 0.0)[:, None].repeat(4, 1)  # perfect only afterwards
    forecasts = {
        OURS: good_late,
        "croston": good_early,
        "sba": np.full((origin.size, 4), 50.0),
        "tsb": np.full((origin.size, 4), 50.0),
    }
    return panel, forecasts, series, origin, h, y


def test_choice_ignores_rows_not_known_at_cutoff() -> None:
    panel, forecasts, series, origin, h, y = _case()
    picks, classes = choose_methods(panel, series, origin, h, y, forecasts, 11, [0], min_demand_weeks=1)
    assert picks[0]["method"] == "croston"
    assert picks[0]["basis"] == "series"
    assert classes == {"intermittent": "croston"}
    picks, _ = choose_methods(panel, series, origin, h, y, forecasts, 15, [0], min_demand_weeks=1)
    assert picks[0]["method"] == OURS  # with every row known the later, better method wins


def test_no_known_rows_falls_back_to_the_onnx_model() -> None:
    panel, forecasts, series, origin, h, y = _case()
    picks, classes = choose_methods(panel, series, origin, h, y, forecasts, 5, [0])
    assert picks[0]["method"] == OURS and picks[0]["basis"] == "default"
    assert classes == {}
