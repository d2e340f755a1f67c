"""External factors as weekly arrays aligned with the training weeks.

The feeds' own JSON files (Open-Meteo hourly weather, one file per city; BCB PTAX; BCB SGS SELIC; IBGE SIDRA
IPCA) are read by ingestion's readers, the code that fills analytics' read model, which serving queries at
day grain. Both sides then turn those observations into weekly values with the shared table and rules of
``services.forecast.features`` (``EXTERNAL_SERIES``, ``weekly_externals``), so a feature computed here and
the same feature computed while serving come from the same points by the same arithmetic.

A missing file leaves its factor out: the features become NaN and LightGBM treats them as missing. Lines a
reader refuses are left out too, as ingestion leaves them out of the read model (they are counted).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from pathlib import Path

import numpy as np

from services.forecast import features as F
from services.ingestion.formats import Parsed, ParseError, read_file
from services.ingestion.records import ExternalObservation

__all__ = ["FEED_FILES", "Externals", "load_externals", "read_observations"]

log = logging.getLogger(__name__)

FEED_FILES: tuple[str, ...] = (
    "openmeteo_hourly_*.json",
    "bcb_ptax_usd.json",
    "bcb_sgs_selic.json",
    "ibge_sidra_ipca.json",
)
"""File name patterns read from the external directory (the readers take the city/currency from the name)."""

Observations = dict[str, tuple[np.ndarray, np.ndarray]]
"""Series id -> (days as datetime64[D], values), as ingestion would commit them."""


class Externals:
    """Observations of the external series and the training weeks; weekly arrays per weather city."""

    def __init__(self, weeks: np.ndarray, observations: Observations):
        self.weeks = weeks
        self.observations = observations
        self._by_city: dict[str, dict[str, np.ndarray]] = {}

    def for_city(self, city: str) -> dict[str, np.ndarray]:
        """``externals`` for ``build_features`` of a series whose weather city is ``city``."""
        if city not in self._by_city:
            self._by_city[city] = F.weekly_externals(self.observations, self.weeks, city)
        return self._by_city[city]

    @property
    def sources(self) -> list[str]:
        """What the model was trained with: ``weather:<city>`` per weather city with all its series, and the
        national factors present (the sidecar records it; serving supplies only these)."""
        cities = sorted(set(F.WEATHER_CITY_BY_REGION.values()))
        weather = [name for name, (series, _) in F.EXTERNAL_SERIES.items() if series.startswith("weather.")]
        national = [name for name in F.EXTERNAL_SERIES if name not in weather]
        found = [
            f"weather:{city}"
            for city in cities
            if all(F.external_series_ids(city)[name] in self.observations for name in weather)
        ]
        found += [name for name in national if F.EXTERNAL_SERIES[name][0] in self.observations]
        return sorted(found)


def read_observations(directory: Path) -> Observations:
    """Observations of the series ``EXTERNAL_SERIES`` names, read from the feed files in ``directory``."""
    wanted = {
        series_id
        for city in set(F.WEATHER_CITY_BY_REGION.values())
        for series_id in F.external_series_ids(city).values()
    }
    points: dict[str, list[tuple[str, float]]] = defaultdict(list)
    for pattern in FEED_FILES:
        for path in sorted(directory.glob(pattern)):
            refused = 0
            for outcome in read_file(path):
                if isinstance(outcome, ParseError):
                    refused += 1
                elif isinstance(outcome, Parsed) and isinstance(outcome.record, ExternalObservation):
                    record = outcome.record
                    if record.series_id in wanted:
                        points[record.series_id].append((record.date.isoformat(), float(record.value)))
            if refused:
                log.warning("%s: %d lines refused by the reader are left out", path.name, refused)
    out: Observations = {}
    for series_id, rows in points.items():
        days = np.array([d for d, _ in rows], dtype="datetime64[D]")
        values = np.array([v for _, v in rows], dtype=np.float64)
        out[series_id] = (days, values)
    return out


def load_externals(directory: Path | None, weeks: np.ndarray) -> Externals:
    if directory is None or not directory.is_dir():
        return Externals(weeks, {})
    return Externals(weeks, read_observations(directory))
