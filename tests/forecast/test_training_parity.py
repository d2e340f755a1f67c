"""A series whose first demand comes late in the training window is served exactly as training saw it.

Training builds every series from the first week of its window (zeros before the first demand); analytics
serves a history from the series' own first demand week. Serving pads it back to the window recorded in the
sidecar, so the feature row, the demand class and the intermittent forecasts are training's own.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ml_training.datasets import Panel, Series
from ml_training.externals import Externals
from ml_training.matrix import build_matrix
from services.forecast import features as F
from services.forecast.service import SeriesSpec

FAMILY = "EPI"  # what the analytics double reports for a series it does not hold


def _late(panel, pattern: list[float]) -> np.ndarray:
    """The window's weeks with ``pattern`` as the last weeks: no demand before it."""
    y = np.zeros(panel.weeks.size)
    y[-len(pattern) :] = pattern
    return y


def _training_rows(panel, model, key: tuple[str, str], y: np.ndarray, horizon: int) -> np.ndarray:
    """Training's feature rows of the last origin, from ml_training's own matrix builder."""
    attrs = F.static_attributes(FAMILY, key[1], "material_site")
    series = Series(f"{key[0]}|{key[1]}", "material_site", key[0], key[1], FAMILY, attrs["region"], y, attrs)
    built = Panel(weeks=panel.weeks, series=[series], window=None, lead_days={}, units={})  # type: ignore[arg-type]
    vocab = {name: list(values) for name, values in model.vocabularies.items()}
    matrix = build_matrix(built, Externals(panel.weeks, {}), vocab, horizon)
    return matrix.X[matrix.origin == panel.weeks.size - 1]


async def test_late_series_features_and_methods_are_trainings(make_harness, trained_repo: Path, panel):
    site = next(iter(panel.series))[1]
    lumpy = ("LATE-LUMPY", site)
    intermittent = ("LATE-INTERMITTENT", site)
    y_lumpy = _late(panel, [5, 0, 0, 40, 0, 1, 0, 0, 12, 0, 0, 3])
    y_int = _late(panel, [4, 0, 0, 2, 0, 0, 0, 6, 0, 0, 3, 0])
    assert F.classify_demand(y_lumpy) == "lumpy" and F.classify_demand(y_int) == "intermittent"
    captured: list[np.ndarray] = []
    async with make_harness(trained_repo) as h:
        for key, y in ((lumpy, y_lumpy), (intermittent, y_int)):
            first = int(np.flatnonzero(y)[0])
            h.analytics.overrides[key] = y[first:]  # analytics starts at the first demand week
        runner = h.app.use_cases._runner
        run = runner.run

        async def spy(model, feeds, outputs):  # type: ignore[no-untyped-def]
            captured.append(next(iter(feeds.values())))
            return await run(model, feeds, outputs)

        runner.run = spy  # type: ignore[method-assign]
        modelled, chosen = await h.app.use_cases.forecast(
            [SeriesSpec(1, *lumpy), SeriesSpec(1, *intermittent)], 0
        )
        model = h.app.repository.serving("demand_forecast")
    assert model is not None and model.training_first_week == panel.weeks[0]
    horizon = modelled.quantiles.shape[0]
    # The model path: the very feature rows training built for the same origin.
    assert modelled.method == "lightgbm-quantile" and modelled.demand_class == "lumpy"
    (served,) = captured
    expected = _training_rows(panel, model, lumpy, y_lumpy, horizon)
    np.testing.assert_array_equal(served, expected)
    for name in ("history_weeks", "adi", "zero_share_26", "mean_26", "hist_q80_26", "tsb", "sba"):
        j = F.FEATURE_NAMES.index(name)
        assert served[0, j] == expected[0, j], name
    # The intermittent path: the class training chose the method by, and the method's forecast from the
    # window's start.
    assert chosen.demand_class == "intermittent" and chosen.method == "croston"
    assert chosen.means[0] == pytest.approx(F.intermittent_forecast(y_int, "croston"), rel=1e-12)
    assert chosen.history is not None and chosen.history.first_week == panel.weeks[0]
