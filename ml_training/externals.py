"""External factors as weekly arrays aligned with the training weeks, read from the feeds' own JSON.

Open-Meteo hourly weather (one file per city), BCB PTAX (several bulletins a day: the closing one is used),
BCB SGS SELIC (daily, dd/mm/yyyy, string values) and IBGE SIDRA IPCA (monthly, first element is the header).
A missing file leaves its factor out: the features become NaN and LightGBM treats them as missing.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

__all__ = ["Externals", "load_externals"]


class Externals:
    """Weekly external factors: per weather city and national (PTAX, SELIC, IPCA)."""

    def __init__(
        self, weeks: np.ndarray, weather: dict[str, dict[str, np.ndarray]], national: dict[str, np.ndarray]
    ):
        self.weeks = weeks
        self.weather = weather
        self.national = national

    def for_city(self, city: str) -> dict[str, np.ndarray]:
        return {**self.weather.get(city, {}), **self.national}

    @property
    def sources(self) -> list[str]:
        return sorted([f"weather:{c}" for c in self.weather] + list(self.national))


def _weekly(days: np.ndarray, values: np.ndarray, weeks: np.ndarray, how: str) -> np.ndarray:
    """Aggregate daily (or finer) values into the Monday-started weeks; NaN where a week has no value."""
    out = np.full(weeks.size, np.nan)
    idx = ((days - weeks[0]).astype(np.int64) // 7).astype(np.int64)
    ok = (idx >= 0) & (idx < weeks.size) & ~np.isnan(values)
    for w in np.unique(idx[ok]):
        chunk = values[ok & (idx == w)]
        out[w] = chunk.sum() if how == "sum" else chunk[-1] if how == "last" else chunk.mean()
    return out


def _weather(path: Path, weeks: np.ndarray) -> dict[str, np.ndarray]:
    hourly = json.loads(path.read_text())["hourly"]
    times = np.array([t[:10] for t in hourly["time"]], dtype="datetime64[D]")

    def col(name: str) -> np.ndarray:
        return np.array([np.nan if v is None else v for v in hourly[name]], dtype=np.float64)

    return {
        "precip_mm": _weekly(times, col("precipitation"), weeks, "sum"),
        "temp_c": _weekly(times, col("temperature_2m"), weeks, "mean"),
        "humidity_pct": _weekly(times, col("relative_humidity_2m"), weeks, "mean"),
    }


def _ptax(path: Path, weeks: np.ndarray) -> np.ndarray:
    quotes = [q for q in json.loads(path.read_text())["value"] if q.get("tipoBoletim") == "Fechamento"]
    days = np.array([q["dataHoraCotacao"][:10] for q in quotes], dtype="datetime64[D]")
    return _weekly(days, np.array([q["cotacaoVenda"] for q in quotes], dtype=np.float64), weeks, "mean")


def _selic(path: Path, weeks: np.ndarray) -> np.ndarray:
    data = json.loads(path.read_text())["data"]
    days = np.array(
        [f"{d['data'][6:10]}-{d['data'][3:5]}-{d['data'][0:2]}" for d in data], dtype="datetime64[D]"
    )
    return _weekly(days, np.array([float(d["valor"]) for d in data]), weeks, "last")


def _ipca(path: Path, weeks: np.ndarray) -> np.ndarray:
    rows = json.loads(path.read_text())[1:]  # first element is SIDRA's header row
    by_month = {r["D3C"]: float(r["V"]) for r in rows if r.get("V") not in (None, "", "...", "-")}
    thursdays = weeks + np.timedelta64(3, "D")
    months = [str(t.astype("datetime64[M]")).replace("-", "") for t in thursdays]
    # The IPCA of a month is published the next month: a week sees the latest month published by its end.
    out = np.full(weeks.size, np.nan)
    for i, month in enumerate(months):
        prev = np.datetime64(f"{month[:4]}-{month[4:]}", "M") - np.timedelta64(1, "M")
        key = str(prev).replace("-", "")
        out[i] = by_month.get(key, np.nan)
    return out


def load_externals(directory: Path | None, weeks: np.ndarray) -> Externals:
    weather: dict[str, dict[str, np.ndarray]] = {}
    national: dict[str, np.ndarray] = {}
    if directory is None or not directory.is_dir():
        return Externals(weeks, weather, national)
    for path in sorted(directory.glob("openmeteo_hourly_*.json")):
        weather[path.stem.removeprefix("openmeteo_hourly_")] = _weather(path, weeks)
    if (directory / "bcb_ptax_usd.json").is_file():
        national["ptax_usd"] = _ptax(directory / "bcb_ptax_usd.json", weeks)
    if (directory / "bcb_sgs_selic.json").is_file():
        national["selic_pct"] = _selic(directory / "bcb_sgs_selic.json", weeks)
    if (directory / "ibge_sidra_ipca.json").is_file():
        national["ipca_pct"] = _ipca(directory / "ibge_sidra_ipca.json", weeks)
    return Externals(weeks, weather, national)
