"""The global quantile model: one LightGBM regressor per quantile on scaled demand, conformal offsets, and the
post-processing (offsets, clip at zero, sort, rescale) that the exported ONNX graph reproduces exactly."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from services.forecast import features as F

__all__ = [
    "BASE_FEATURES",
    "QUANTILES",
    "ModelParams",
    "QuantileModel",
    "conformal_factors",
    "conformal_offsets",
    "fit_quantile_model",
    "postprocess",
]

QUANTILES: tuple[float, ...] = (0.5, 0.8, 0.9, 0.95)


@dataclass(frozen=True)
class ModelParams:
    n_estimators: int = 150
    learning_rate: float = 0.05
    num_leaves: int = 15
    min_child_samples: int = 200
    subsample: float = 0.8
    colsample_bytree: float = 0.8
    reg_lambda: float = 1.0
    calibration_weeks: int = 6
    seed: int = 7
    weighted: bool = False
    threads: int = 2

    def lgbm_kwargs(self, alpha: float) -> dict[str, Any]:
        return {
            "objective": "quantile",
            "alpha": alpha,
            "n_estimators": self.n_estimators,
            "learning_rate": self.learning_rate,
            "num_leaves": self.num_leaves,
            "min_child_samples": self.min_child_samples,
            "subsample": self.subsample,
            "subsample_freq": 1,
            "colsample_bytree": self.colsample_bytree,
            "reg_lambda": self.reg_lambda,
            "random_state": self.seed,
            "n_jobs": self.threads,
            "deterministic": True,
            "force_row_wise": True,
            "verbose": -1,
        }


POSITIVE_EPS = 1e-3
"""Raw scaled quantiles above this are "positive forecasts", the only ones conformal offsets move."""


def postprocess(raw: np.ndarray, offsets: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Scaled raw quantiles [N, Q] -> quantiles in series units: add the conformal offsets to the positive
    forecasts, clip at zero (demand is never negative), sort each row (non-crossing), multiply by the
    scale."""
    positive = (raw.astype(np.float32) > np.float32(POSITIVE_EPS)).astype(np.float64)
    adjusted = np.maximum(raw + offsets[None, :] * positive, 0.0)
    return np.sort(adjusted, axis=1) * scale[:, None]


def conformal_offsets(
    residuals: np.ndarray, quantiles: tuple[float, ...] = QUANTILES, groups: np.ndarray | None = None
) -> np.ndarray:
    """Split-conformal (CQR, one-sided per level) offsets: for level q, the ceil((n+1)q)-th smallest residual
    y - yhat_q on the calibration rows, so that P(y <= yhat_q + offset) >= q on exchangeable rows.

    ``groups`` [R, Q] (bool) restricts each level to the rows of its group (Mondrian conformal): the model
    uses the group of rows whose forecast is positive, because one additive shift fitted over all rows would
    turn every zero forecast of an intermittent series into a positive one."""
    offsets = np.zeros(len(quantiles))
    for j, q in enumerate(quantiles):
        col = residuals[:, j] if groups is None else residuals[groups[:, j], j]
        r = np.sort(col[~np.isnan(col)])
        if r.size == 0:
            continue
        k = min(math.ceil((r.size + 1) * q), r.size)
        offsets[j] = r[k - 1]
    return offsets


def conformal_factors(
    y: np.ndarray, point: np.ndarray, quantiles: tuple[float, ...] = QUANTILES
) -> np.ndarray:
    """Split-conformal multiplicative factors for a point forecast of the mean demand rate (Croston, SBA,
    TSB):
    for level q the ceil((n+1)q)-th smallest ratio y / point over calibration rows with a positive point, so
    that P(y <= factor_q * point) >= q. Multiplicative because the point is a rate: a zero-rate series stays
    at zero and a busy one gets proportionally wider quantiles."""
    ok = (point > 0) & ~np.isnan(y)
    ratio = np.sort(y[ok] / point[ok])
    factors = np.zeros(len(quantiles))
    for j, q in enumerate(quantiles):
        if ratio.size:
            factors[j] = ratio[min(math.ceil((ratio.size + 1) * q), ratio.size) - 1]
    return factors


@dataclass
class QuantileModel:
    boosters: list  # one fitted lightgbm.LGBMRegressor per quantile
    offsets: np.ndarray  # conformal offsets in scaled units, one per quantile
    quantiles: tuple[float, ...] = QUANTILES
    calibration_rows: int = 0
    raw_coverage_before: list[float] = field(default_factory=list)
    base_multiplier: int | None = None  # feature column multiplying the base (None: base as it is)

    def predict_raw(self, X: np.ndarray) -> np.ndarray:
        # float32 features cast to float64: exactly what onnxruntime sees, so the parity check is fair.
        X64 = np.asarray(X, dtype=np.float32).astype(np.float64)
        trees = np.column_stack([b.booster_.predict(X64) for b in self.boosters])
        return trees + base_margin(X, self.base_multiplier)

    def predict(self, X: np.ndarray) -> np.ndarray:
        scale = np.asarray(X, dtype=np.float32)[:, F.SCALE_INDEX].astype(np.float64)
        return postprocess(self.predict_raw(X), self.offsets, scale)


def row_weights(X: np.ndarray, cap: float = 50.0) -> np.ndarray:
    """Weight of a row in the loss: 1 / (the series' naive MAE in units of its scale, known at the origin), so
    the training loss weighs series as the scaled evaluation metrics do (a sparse series' errors count more
    per unit); capped so that a series with one demand does not dominate."""
    mae = X[:, F.FEATURE_NAMES.index("naive_mae")].astype(np.float64)
    return np.clip(1.0 / np.where(np.isfinite(mae) & (mae > 0), mae, 1.0), 1.0, cap)


def trainable(X: np.ndarray) -> np.ndarray:
    """Rows whose series had demand before the origin: without any, the scale is undefined and the model has
    nothing to learn from (serving answers zero for such series)."""
    return X[:, F.FEATURE_NAMES.index("demand_weeks")] > 0


BASE_FEATURES: tuple[str, ...] = ("hist_q50_26", "hist_q80_26", "hist_q90_26", "hist_q95_26")
"""Each quantile's boosting starts from the series' own empirical quantile of the last 26 weeks (scaled): the
trees learn corrections to it, so the model is never worse than that simple estimate by construction of its
start and moves away from it only where features carry signal."""
BASE_INDEX: tuple[int, ...] = tuple(F.FEATURE_NAMES.index(n) for n in BASE_FEATURES)


def base_margin(X: np.ndarray, multiplier: int | None = None) -> np.ndarray:
    """The boosting start per row and quantile. ``multiplier`` (a feature column, e.g. the window length of
    the lead-time model) multiplies it in float32, as the ONNX graph does."""
    X32 = np.asarray(X, dtype=np.float32)
    base = X32[:, BASE_INDEX]
    if multiplier is not None:
        base = base * X32[:, multiplier : multiplier + 1]
    return np.nan_to_num(base.astype(np.float64), nan=0.0)


def _fit_boosters(
    X: np.ndarray,
    y_scaled: np.ndarray,
    params: ModelParams,
    quantiles: tuple[float, ...],
    base_multiplier: int | None = None,
) -> list:
    import lightgbm as lgb

    boosters = []
    weights = row_weights(X) if params.weighted else None
    base = base_margin(X, base_multiplier)
    for j, q in enumerate(quantiles):
        model = lgb.LGBMRegressor(**params.lgbm_kwargs(q))
        model.fit(X, y_scaled, sample_weight=weights, init_score=base[:, j])
        snap_thresholds(model)
        boosters.append(model)
    return boosters


def snap_thresholds(model: object) -> None:
    """Replace every split threshold t by the largest float32 <= t.

    LightGBM splits at the midpoint of two adjacent feature values in double; when those values are float32
    neighbours, the midpoint rounds to one of them in the exported float32 graph and a row holding that value
    goes the other way (seen: a 4-week precipitation sum of 73.4 moved a P90 by 1.4%). For float32 inputs,
    ``x <= t`` holds exactly when ``x <= largest float32 <= t``, so the native predictions do not change and
    the ONNX graph decides every split the same way."""
    import lightgbm as lgb

    lines = model.booster_.model_to_string().split("\n")  # type: ignore[attr-defined]
    out = []
    for line in lines:
        if line.startswith("tree_sizes="):
            continue  # byte offsets of the original text; without them the trees are parsed in sequence
        if line.startswith("threshold="):
            t = np.array(line[len("threshold=") :].split(), dtype=np.float64)
            f = t.astype(np.float32)
            above = f.astype(np.float64) > t
            f[above] = np.nextafter(f[above], np.float32(-np.inf))
            line = "threshold=" + " ".join(repr(float(v)) for v in f)
        out.append(line)
    model._Booster = lgb.Booster(model_str="\n".join(out))  # type: ignore[attr-defined]


def fit_quantile_model(
    X: np.ndarray,
    y: np.ndarray,
    target: np.ndarray,
    cutoff: int,
    params: ModelParams,
    quantiles: tuple[float, ...] = QUANTILES,
    base_multiplier: int | None = None,
) -> QuantileModel:
    """Fit with everything whose target week is <= ``cutoff`` (known at the cutoff).

    The last ``calibration_weeks`` target weeks are held out, the boosters fit on the rest, and the conformal
    offsets come from the held-out residuals; then the boosters are refit on all rows (same hyper-parameters)
    and keep those offsets, so the model served uses the most recent weeks too.
    """
    known = (target <= cutoff) & ~np.isnan(y) & trainable(X)
    scale = X[:, F.SCALE_INDEX].astype(np.float64)
    y_scaled = y / scale
    cal = known & (target > cutoff - params.calibration_weeks)
    proper = known & ~cal
    if proper.sum() < 50 or cal.sum() < 20:
        raise ValueError(
            f"not enough rows to fit and calibrate (fit {proper.sum()}, calibration {cal.sum()})"
        )
    first = _fit_boosters(X[proper], y_scaled[proper], params, quantiles, base_multiplier)
    raw_cal = QuantileModel(
        first, np.zeros(len(quantiles)), quantiles, base_multiplier=base_multiplier
    ).predict_raw(X[cal])
    residuals = y_scaled[cal][:, None] - raw_cal
    positive = raw_cal.astype(np.float32) > np.float32(POSITIVE_EPS)
    offsets = conformal_offsets(residuals, quantiles, positive)
    before = [float(np.mean(y_scaled[cal] <= raw_cal[:, j])) for j in range(len(quantiles))]
    boosters = _fit_boosters(X[known], y_scaled[known], params, quantiles, base_multiplier)
    return QuantileModel(boosters, offsets, quantiles, int(cal.sum()), before, base_multiplier)
