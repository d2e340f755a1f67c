"""Split thresholds snapped to float32: the native predictions on float32 rows do not move and every
threshold is exactly what a float32 ONNX tree holds."""

from __future__ import annotations

import numpy as np

from ml_training.model import snap_thresholds


def test_snapped_thresholds_keep_predictions_and_are_float32() -> None:
    import lightgbm as lgb

    rng = np.random.default_rng(3)
    # Feature values on float32 neighbours: LightGBM's double midpoints fall between them.
    base = np.float32(73.4)
    grid = np.array([np.nextafter(base, np.float32(-np.inf)), base, np.nextafter(base, np.float32(np.inf))])
    X = np.column_stack([rng.choice(grid, 600), rng.random(600).astype(np.float32)]).astype(np.float32)
    y = (X[:, 0] > base).astype(float) * 5 + X[:, 1]
    model = lgb.LGBMRegressor(n_estimators=20, num_leaves=4, min_child_samples=5, verbose=-1)
    model.fit(X, y)
    X64 = X.astype(np.float64)
    before = model.booster_.predict(X64)
    snap_thresholds(model)
    assert np.array_equal(model.booster_.predict(X64), before)
    for tree in model.booster_.dump_model()["tree_info"]:
        stack = [tree["tree_structure"]]
        while stack:
            node = stack.pop()
            if "threshold" in node:
                t = float(node["threshold"])
                assert float(np.float32(t)) == t
                stack += [node["left_child"], node["right_child"]]
