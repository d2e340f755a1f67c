"""The training matrix: one row per (series, origin, horizon), built by the serving feature function."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ml_training.datasets import Panel
from ml_training.externals import Externals
from services.forecast import features as F

__all__ = ["Matrix", "build_matrix", "vocabularies"]


def vocabularies(panel: Panel) -> dict[str, list[str]]:
    """Categorical vocabularies (entry 0 is the unknown value); stored in the sidecar so serving encodes the
    same way. Families and regions come from the data, the rest are closed lists."""
    families = sorted({s.family for s in panel.series if s.family not in ("", "ALL")})
    regions = sorted({s.region for s in panel.series} | {"ALL", "UNKNOWN"})
    return {
        "family": [F.UNKNOWN, *families],
        "site_type": [F.UNKNOWN, *F.SITE_TYPES],
        "criticality": [F.UNKNOWN, *F.CRITICALITIES],
        "region": [F.UNKNOWN, *regions],
        "level": [F.UNKNOWN, *F.LEVELS],
    }


@dataclass
class Matrix:
    X: np.ndarray  # float32 [N, F]
    y: np.ndarray  # target in series units, NaN where the target week lies beyond the window
    series: np.ndarray  # index into panel.series
    origin: np.ndarray  # index of the origin week (last observed)
    horizon: np.ndarray  # 1..H
    target: np.ndarray  # index of the target week

    @property
    def scale(self) -> np.ndarray:
        return self.X[:, F.SCALE_INDEX].astype(np.float64)

    def take(self, mask: np.ndarray) -> Matrix:
        return Matrix(
            self.X[mask],
            self.y[mask],
            self.series[mask],
            self.origin[mask],
            self.horizon[mask],
            self.target[mask],
        )


def build_matrix(
    panel: Panel,
    externals: Externals,
    vocab: dict[str, list[str]],
    horizon: int,
    min_history: int = 4,
    series_ids: list[int] | None = None,
) -> Matrix:
    """Rows for every origin from ``min_history`` weeks on, including origins whose targets run past the
    window
    (their ``y`` is NaN: kept so the last origin can be predicted, filtered out for fitting)."""
    T = panel.weeks.size
    ids = range(len(panel.series)) if series_ids is None else series_ids
    origins = np.arange(min_history - 1, T)
    blocks, ys, sid, orig, hor = [], [], [], [], []
    steps = np.arange(1, horizon + 1)
    for i in ids:
        s = panel.series[i]
        codes = F.encode_static(s.attrs, vocab)
        city = F.WEATHER_CITY_BY_REGION.get(s.region, "salvador_ba")
        X = F.build_features(s.y, panel.weeks, codes, horizon, externals.for_city(city), origins, s.region)
        blocks.append(X)
        tgt = origins[:, None] + steps[None, :]
        padded = np.concatenate([s.y, np.full(horizon, np.nan)])
        ys.append(padded[tgt].ravel())
        sid.append(np.full(X.shape[0], i))
        orig.append(np.repeat(origins, horizon))
        hor.append(np.tile(steps, origins.size))
    origin = np.concatenate(orig)
    h = np.concatenate(hor)
    return Matrix(
        X=np.concatenate(blocks),
        y=np.concatenate(ys),
        series=np.concatenate(sid),
        origin=origin,
        horizon=h,
        target=origin + h,
    )
