"""Feature engineering shared by offline training and online serving (numpy only).

Training calls :func:`build_features` for every forecast origin of every series; serving calls the very same
function for the latest origin only. Keeping both paths in this one module (and importing nothing but
numpy) is what stops training and serving from drifting apart. Bump :data:`FEATURE_SPEC_VERSION` whenever a
feature's meaning or order changes: serving refuses a model whose sidecar names another version.

Also here, because serving needs them without any training dependency:

* Brazilian calendar (national holidays incl. Carnival and Easter computed with the Gregorian computus,
  a few state holidays, rainy season by state);
* the rules that map a site code to its site type and state, and a family to a criticality;
* the intermittent-demand models Croston, SBA and TSB (numpy recursions) and their conformal quantiles,
  first-class alternatives to the ONNX model for the series whose recorded choice says so;
* the Syntetos-Boylan demand classification (ADI / CV²).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from functools import lru_cache

import numpy as np

__all__ = [
    "ADI_CUTOFF",
    "CRITICALITIES",
    "CV2_CUTOFF",
    "DEMAND_CLASSES",
    "EXTERNAL_NAMES",
    "EXTERNAL_SERIES",
    "FEATURE_NAMES",
    "FEATURE_SPEC_VERSION",
    "LEVELS",
    "SITE_TYPES",
    "STATIC_NAMES",
    "UNKNOWN",
    "WEATHER_CITY_BY_REGION",
    "brazil_holidays",
    "build_features",
    "classify_demand",
    "conformal_quantiles",
    "criticality_for_family",
    "croston",
    "demand_class_stats",
    "easter_sunday",
    "encode_static",
    "external_series_ids",
    "intermittent_forecast",
    "intermittent_quantiles",
    "is_rainy_season",
    "site_attributes",
    "static_attributes",
    "tsb",
    "weather_series_city",
    "week_calendar",
    "weekly_external",
    "weekly_externals",
]

# 1.2: weather aggregated on Brazil-time days by the shared EXTERNAL_SERIES rules (training = serving).
FEATURE_SPEC_VERSION = "1.2"

UNKNOWN = "__unknown__"
"""Vocabulary entry 0: any value unseen at training time encodes to code 0."""

LEVELS: tuple[str, ...] = ("material_site", "material", "family", "region", "national")
SITE_TYPES: tuple[str, ...] = (
    "tower_site",
    "warehouse",
    "office",
    "regional_base",
    "person",
    "unknown",
    "all",
)
CRITICALITIES: tuple[str, ...] = ("low", "medium", "high")
STATIC_NAMES: tuple[str, ...] = ("family", "site_type", "criticality", "region", "level")
DEMAND_CLASSES: tuple[str, ...] = ("smooth", "erratic", "intermittent", "lumpy", "insufficient")

# Syntetos-Boylan-Croston cut-offs (Syntetos, Boylan & Croston 2005).
ADI_CUTOFF = 1.32
CV2_CUTOFF = 0.49

EXTERNAL_NAMES: tuple[str, ...] = (
    "precip_mm",  # weekly precipitation sum at the series' weather city
    "temp_c",  # weekly mean temperature
    "humidity_pct",  # weekly mean relative humidity
    "ptax_usd",  # weekly mean PTAX USD selling rate (closing bulletin)
    "selic_pct",  # SELIC target at the end of the week, % a year
    "ipca_pct",  # IPCA monthly variation of the month before the week's month (the latest published), %
)

FEATURE_NAMES: tuple[str, ...] = (
    "horizon",
    "scale",
    "log_scale",
    "lag_1",
    "lag_2",
    "lag_3",
    "lag_4",
    "mean_4",
    "mean_8",
    "mean_13",
    "mean_26",
    "zero_share_4",
    "zero_share_13",
    "zero_share_26",
    "std_13",
    "max_13",
    "weeks_since_demand",
    "history_weeks",
    "demand_weeks",
    "adi",
    "cv2",
    "sba",
    "tsb",
    "hist_q50_26",
    "hist_q80_26",
    "hist_q90_26",
    "hist_q95_26",
    "naive_mae",
    "target_week_of_year",
    "target_month",
    "target_holidays",
    "target_business_days",
    "target_carnival",
    "target_holy_week",
    "target_year_end",
    "target_rainy_season",
    "family",
    "site_type",
    "criticality",
    "region",
    "level",
    "ext_precip_4w",
    "ext_temp_4w",
    "ext_humidity_4w",
    "ext_ptax_usd",
    "ext_ptax_usd_change_4w",
    "ext_selic",
    "ext_ipca",
)
"""Column order of the feature matrix. Demand-valued columns (lags, means, std, max, sba, tsb) are divided by
``scale`` (the mean non-zero weekly demand up to the origin) so one global model fits series of any size; the
exported ONNX graph multiplies its quantiles back by the ``scale`` column."""

SCALE_INDEX = FEATURE_NAMES.index("scale")

# ---------------------------------------------------------------------- calendar

_UFS = frozenset("AC AL AP AM BA CE DF ES GO MA MT MS MG PA PB PR PE PI RJ RN RS RO RR SC SP SE TO".split())
# Weather samples exist for five capitals; every state is mapped to the nearest one with a similar climate.
WEATHER_CITY_BY_REGION: dict[str, str] = {
    **dict.fromkeys(("BA", "SE", "ALL", "UNKNOWN"), "salvador_ba"),
    **dict.fromkeys(("PE", "PB", "AL", "RN"), "recife_pe"),
    **dict.fromkeys(("CE", "PI", "MA", "PA", "AP", "AM", "RR", "AC", "RO", "TO"), "fortaleza_ce"),
    **dict.fromkeys(("SP", "PR", "SC", "RS", "MS", "MT", "GO", "DF"), "sao_paulo_sp"),
    **dict.fromkeys(("RJ", "ES", "MG"), "rio_de_janeiro_rj"),
}

# Rainy months by state: the eastern north-east coast rains April-July, the northern coast February-May,
# the centre-south November-March. Series without a state ("ALL") follow Salvador, where most demand is.
_RAINY_MONTHS: dict[str, frozenset[int]] = {
    **dict.fromkeys(("BA", "SE", "AL", "PE", "PB", "RN", "ALL", "UNKNOWN"), frozenset({4, 5, 6, 7})),
    **dict.fromkeys(("CE", "PI", "MA"), frozenset({2, 3, 4, 5})),
    **dict.fromkeys(("PA", "AP", "AM", "RR", "AC", "RO", "TO"), frozenset({12, 1, 2, 3, 4, 5})),
}
_RAINY_DEFAULT = frozenset({11, 12, 1, 2, 3})

_STATE_HOLIDAYS: dict[str, tuple[tuple[int, int], ...]] = {
    "BA": ((7, 2),),  # Independência da Bahia
    "PE": ((3, 6),),  # Revolução Pernambucana
    "CE": ((3, 25),),  # Data Magna do Ceará
    "SP": ((7, 9),),  # Revolução Constitucionalista
    "RJ": ((4, 23),),  # São Jorge
}
_FIXED_NATIONAL = ((1, 1), (4, 21), (5, 1), (9, 7), (10, 12), (11, 2), (11, 15), (12, 25))


def easter_sunday(year: int) -> np.datetime64:
    """Gregorian Easter Sunday (anonymous Gregorian algorithm, Meeus/Jones/Butcher)."""
    a = year % 19
    b, c = divmod(year, 100)
    d, e = divmod(b, 4)
    f = (b + 8) // 25
    g = (b - f + 1) // 3
    h = (19 * a + b - d - g + 15) % 30
    i, k = divmod(c, 4)
    ell = (32 + 2 * e + 2 * i - h - k) % 7
    m = (a + 11 * h + 22 * ell) // 451
    month, day = divmod(h + ell - 7 * m + 114, 31)
    return np.datetime64(f"{year:04d}-{month:02d}-{day + 1:02d}", "D")


@lru_cache(maxsize=256)
def brazil_holidays(year: int, region: str = "ALL") -> dict[np.datetime64, str]:
    """Holidays observed in ``year``: national ones (Carnival Monday/Tuesday, Good Friday and Corpus Christi
    are optional points but stop field work, so they count) plus the state holiday of ``region`` if known."""
    easter = easter_sunday(year)
    days: dict[np.datetime64, str] = {
        easter - np.timedelta64(48, "D"): "carnival_monday",
        easter - np.timedelta64(47, "D"): "carnival",
        easter - np.timedelta64(2, "D"): "good_friday",
        easter: "easter",
        easter + np.timedelta64(60, "D"): "corpus_christi",
    }
    names = (
        "new_year",
        "tiradentes",
        "labour",
        "independence",
        "aparecida",
        "all_souls",
        "republic",
        "christmas",
    )
    for (month, day), name in zip(_FIXED_NATIONAL, names, strict=True):
        days[np.datetime64(f"{year:04d}-{month:02d}-{day:02d}", "D")] = name
    if year >= 2024:  # Dia da Consciência Negra became national by Lei 14.759/2023
        days[np.datetime64(f"{year:04d}-11-20", "D")] = "black_consciousness"
    for month, day in _STATE_HOLIDAYS.get(region, ()):
        days[np.datetime64(f"{year:04d}-{month:02d}-{day:02d}", "D")] = f"state_{region.lower()}"
    return days


def is_rainy_season(month: int, region: str = "ALL") -> bool:
    return month in _RAINY_MONTHS.get(region, _RAINY_DEFAULT)


def week_calendar(week_starts: np.ndarray, region: str = "ALL") -> np.ndarray:
    """Calendar features of whole weeks, one row per week start (a Monday), columns as the ``target_*``
    features: week_of_year, month, holidays on weekdays, business days, carnival, holy week, year end,
    rainy."""
    starts = np.asarray(week_starts, dtype="datetime64[D]")
    rows = [_week_row(day, region) for day in starts.astype(np.int64).tolist()]
    return np.array(rows, dtype=np.float64).reshape(starts.size, 8)


@lru_cache(maxsize=16384)
def _week_row(day: int, region: str) -> tuple[float, ...]:
    """One row of :func:`week_calendar` for the week starting ``day`` (days since 1970-01-01). A week's
    calendar never changes and serving asks for the same few weeks on every call, so rows are memoised."""
    start = np.datetime64(day, "D")
    # ISO rule: a week belongs to the year and month of its Thursday.
    thursday = start + np.timedelta64(3, "D")
    year = int(thursday.astype("datetime64[Y]").astype(int)) + 1970
    month = int(thursday.astype("datetime64[M]").astype(int)) % 12 + 1
    jan4 = np.datetime64(f"{year:04d}-01-04", "D")
    week1_monday = jan4 - np.timedelta64((int(jan4.astype(int)) - 4) % 7, "D")  # 1970-01-05 is a Monday
    week_of_year = int((start - week1_monday).astype(int)) // 7 + 1
    holidays = {**brazil_holidays(year - 1, region), **brazil_holidays(year, region)}
    holidays.update(brazil_holidays(year + 1, region))
    weekday_holidays = 0
    carnival = holy = False
    for offset in range(7):
        name = holidays.get(start + np.timedelta64(offset, "D"))
        if name is None:
            continue
        weekday_holidays += offset < 5
        carnival |= name == "carnival"
        holy |= name == "good_friday"
    day_of_year = int((thursday - np.datetime64(f"{year:04d}-01-01", "D")).astype(int))
    year_end = week_of_year >= 52 or day_of_year <= 6  # Christmas to Epiphany: crews are thin
    return (
        float(week_of_year),
        float(month),
        float(weekday_holidays),
        float(5 - weekday_holidays),
        float(carnival),
        float(holy),
        float(year_end),
        float(is_rainy_season(month, region)),
    )


# ---------------------------------------------------------------------- static attributes


def site_attributes(site: str) -> tuple[str, str]:
    """(site_type, region) of a Sapiens site code. Codes start with the state (``BAJSS002-3``), Salvador sites
    with ``SAL``, regional bases are ``GER<UF>``, warehouses ``ALMOX-<UF>``; ``N/A`` and ``ESCRITÓRIO`` are
    what the export really holds. Anything else (mostly a person's name) is a ``person`` with unknown
    region."""
    code = site.strip().upper()
    if code in ("N/A", "", "NA"):
        return "unknown", "UNKNOWN"
    if code == "ALL":
        return "all", "ALL"
    if code.startswith("ESCRIT"):
        return "office", "BA"  # head office in Salvador
    if code.startswith("ALMOX"):
        uf = code.rsplit("-", 1)[-1]
        return "warehouse", uf if uf in _UFS else "UNKNOWN"
    if code.startswith("GER") and code[3:5] in _UFS:
        return "regional_base", code[3:5]
    if code.startswith("SAL") and any(ch.isdigit() for ch in code):
        return "tower_site", "BA"
    if code[:2] in _UFS and any(ch.isdigit() for ch in code):
        return "tower_site", code[:2]
    if any(ch.isdigit() for ch in code):
        return "tower_site", "UNKNOWN"
    return "person", "UNKNOWN"


# The export holds no criticality; this rule encodes what stops a repair (electrical parts, steel, PPE without
# which crews may not climb) versus what does not (office supplies). Planners can override it per material.
_HIGH = ("MATERIAL ELETRICO", "FERRO E AÇO", "EPI", "SINALIZADORES")
_MEDIUM = ("MATERIAL CIVIL", "FERRAMENTAS E EQUIPAMENTOS", "PINTURA", "ABRASIVOS", "OLEOS E LUBRIFICANTES")


def criticality_for_family(family: str) -> str:
    name = family.strip().upper()
    if name in _HIGH:
        return "high"
    if name in _MEDIUM:
        return "medium"
    return "low"


def static_attributes(
    family: str, site: str = "ALL", level: str = "material_site", region: str | None = None
) -> dict[str, str]:
    """Static attributes (as strings) of a series: what serving derives from a material's family and a site
    (``site="ALL"`` and the ``level`` for aggregates)."""
    site_type, site_region = site_attributes(site)
    return {
        "family": family if family else UNKNOWN,
        "site_type": site_type,
        "criticality": criticality_for_family(family) if family not in ("", "ALL") else "medium",
        "region": region if region is not None else site_region,
        "level": level,
    }


def encode_static(attrs: Mapping[str, str], vocabularies: Mapping[str, Sequence[str]]) -> dict[str, int]:
    """Integer codes of the static attributes from the vocabularies stored in the model sidecar."""
    codes: dict[str, int] = {}
    for name in STATIC_NAMES:
        vocab = list(vocabularies[name])
        value = attrs.get(name, UNKNOWN)
        codes[name] = vocab.index(value) if value in vocab else 0
    return codes


# ---------------------------------------------------------------------- external factors

EXTERNAL_SERIES: dict[str, tuple[str, str]] = {
    "precip_mm": ("weather.{city}.precipitation_mm", "sum"),
    "temp_c": ("weather.{city}.temperature_mean_c", "mean"),
    "humidity_pct": ("weather.{city}.humidity_mean_pct", "mean"),
    "ptax_usd": ("ptax.usd.sell", "mean"),
    "selic_pct": ("selic.target_pct_year", "last"),
    "ipca_pct": ("ipca.monthly_pct", "previous_month"),
}
"""Each of :data:`EXTERNAL_NAMES` -> (series id, weekly rule). Series ids are the ones ingestion's readers
give the feeds' observations (daily; monthly ones dated on the month's first day), so training (reading the
files with those readers) and serving (reading analytics' ``GetExternalSeries`` at day grain) start from the
same points; ``{city}`` is :func:`weather_series_city` of the series' weather city. The rule is how
:func:`weekly_external` turns them into one value per week. This table is the only place that says which
observation feeds which feature."""


def weather_series_city(city: str) -> str:
    """City part of a weather series id: ``"rio_de_janeiro_rj"`` -> ``"rio_de_janeiro"``. The weather cities
    of :data:`WEATHER_CITY_BY_REGION` carry their state, as the feed's file names do; ingestion names the
    series after the city without it."""
    head, _, tail = city.rpartition("_")
    return head if head and tail.upper() in _UFS else city


def external_series_ids(city: str) -> dict[str, str]:
    """External name -> series id for a series whose weather city (a WEATHER_CITY_BY_REGION value) is
    ``city``."""
    slug = weather_series_city(city)
    return {name: series.format(city=slug) for name, (series, _) in EXTERNAL_SERIES.items()}


def weekly_external(days: np.ndarray, values: np.ndarray, week_starts: np.ndarray, how: str) -> np.ndarray:
    """One value per week (``week_starts``: ascending Mondays) from dated observations, NaN where none.

    ``sum`` / ``mean``: of the observations dated inside the week; ``last``: the latest of them;
    ``previous_month``: the observation of the month before the week's month (a week belongs to the month of
    its Thursday, as in :func:`week_calendar`), because a monthly index is published during the next month.
    NaN values count as absent. A week never borrows a value from another week: nothing is carried forward.
    """
    weeks = np.asarray(week_starts, dtype="datetime64[D]")
    out = np.full(weeks.size, np.nan)
    stamps = np.asarray(days, dtype="datetime64[D]")
    vals = np.asarray(values, dtype=np.float64)
    if stamps.shape != vals.shape or stamps.ndim != 1:
        raise ValueError("days and values must be 1-D arrays of the same length")
    if how not in ("sum", "mean", "last", "previous_month"):
        raise ValueError(f"unknown weekly rule {how!r}")
    keep = ~np.isnan(vals)
    order = np.argsort(stamps[keep], kind="stable")
    stamps, vals = stamps[keep][order], vals[keep][order]
    if weeks.size == 0 or stamps.size == 0:
        return out
    if how == "previous_month":
        months = stamps.astype("datetime64[M]")
        wanted = (weeks + np.timedelta64(3, "D")).astype("datetime64[M]") - np.timedelta64(1, "M")
        pos = np.searchsorted(months, wanted, side="right") - 1  # the month's latest observation
        hit = (pos >= 0) & (months[np.maximum(pos, 0)] == wanted)
        out[hit] = vals[pos[hit]]
        return out
    pos = np.searchsorted(weeks, stamps, side="right") - 1
    inside = (pos >= 0) & (stamps < weeks[np.maximum(pos, 0)] + np.timedelta64(7, "D"))
    pos, vals = pos[inside], vals[inside]
    if pos.size == 0:
        return out
    counts = np.bincount(pos, minlength=weeks.size)
    seen = counts > 0
    if how == "last":
        ends = np.flatnonzero(np.append(np.diff(pos) != 0, True))  # last observation of each week
        out[pos[ends]] = vals[ends]
        return out
    sums = np.bincount(pos, weights=vals, minlength=weeks.size)
    out[seen] = sums[seen] if how == "sum" else sums[seen] / counts[seen]
    return out


def weekly_externals(
    observations: Mapping[str, tuple[np.ndarray, np.ndarray]], week_starts: np.ndarray, city: str
) -> dict[str, np.ndarray]:
    """The ``externals`` argument of :func:`build_features` for a series whose weather city is ``city``, from
    observations by series id (``(days, values)``); a name whose series is absent is left out (NaN)."""
    out: dict[str, np.ndarray] = {}
    for name, series_id in external_series_ids(city).items():
        found = observations.get(series_id)
        if found is not None:
            out[name] = weekly_external(found[0], found[1], week_starts, EXTERNAL_SERIES[name][1])
    return out


# ---------------------------------------------------------------------- intermittent models


def croston(y: np.ndarray, alpha: float = 0.1, variant: str = "sba") -> np.ndarray:
    """Croston's method, one-step forecasts after each period: ``out[t]`` is the forecast made at the end of
    period ``t`` for every later period. Sizes ``z`` and intervals ``p`` are smoothed only when demand occurs,
    initialised with the first demand and its interval (periods since the series start, counting it).
    ``variant='sba'`` applies the Syntetos-Boylan bias correction ``(1 - alpha/2)``. NaN before the first
    demand."""
    # The recursion runs on Python floats: the same IEEE double operations as numpy scalars, without the
    # per-operation overhead that made it the costliest part of a served forecast.
    values = np.asarray(y, dtype=np.float64).tolist()
    nan = math.nan
    out = [nan] * len(values)
    z = p = nan
    since = 0
    factor = 1.0 - alpha / 2.0 if variant == "sba" else 1.0
    for t, value in enumerate(values):
        since += 1
        if value > 0:
            if z != z:  # NaN: no demand yet
                z, p = value, float(since)
            else:
                z += alpha * (value - z)
                p += alpha * (since - p)
            since = 0
        if z == z:
            out[t] = factor * z / p
    return np.array(out, dtype=np.float64)


def tsb(y: np.ndarray, alpha: float = 0.1, beta: float = 0.1) -> np.ndarray:
    """Teunter-Syntetos-Babai: the demand probability ``d`` is smoothed every period (so a long run of zeros
    decays the forecast), the size ``z`` only on demand. Initialised at the first demand with ``z`` = that
    size and ``d`` = 1 / (periods up to and including it). ``out[t]`` = d * z after period t; NaN before any
    demand."""
    values = np.asarray(y, dtype=np.float64).tolist()  # Python floats, as in croston
    nan = math.nan
    out = [nan] * len(values)
    z = d = nan
    for t, value in enumerate(values):
        if z != z:  # NaN: no demand yet
            if value > 0:
                z, d = value, 1.0 / (t + 1)
        else:
            occurred = 1.0 if value > 0 else 0.0
            d += beta * (occurred - d)
            if value > 0:
                z += alpha * (value - z)
        if z == z:
            out[t] = d * z
    return np.array(out, dtype=np.float64)


def intermittent_forecast(history: np.ndarray, method: str) -> float:
    """Point forecast (demand per week, flat over the horizon) of ``croston``, ``sba`` or ``tsb`` at the
    end of ``history``; 0 when the history holds no demand."""
    if method == "tsb":
        path = tsb(history)
    elif method in ("croston", "sba"):
        path = croston(history, variant=method)
    else:
        raise ValueError(f"unknown intermittent method {method!r}")
    if path.size == 0 or np.isnan(path[-1]):
        return 0.0
    return float(path[-1])


def intermittent_quantiles(
    history: np.ndarray, method: str, factors: Sequence[float], horizon: int
) -> np.ndarray:
    """Quantiles [horizon, Q] of an intermittent model: its point forecast (a mean demand rate) times the
    split-conformal factors stored in the sidecar (``intermittent_models.conformal_factors[method]``), made
    non-decreasing so they never cross. Flat over the horizon, as these methods are."""
    point = intermittent_forecast(np.asarray(history, dtype=np.float64), method)
    return conformal_quantiles(point, factors, horizon)


def conformal_quantiles(point: float, factors: Sequence[float], horizon: int) -> np.ndarray:
    """:func:`intermittent_quantiles` from an already computed point forecast (serving also reports the
    point as the weekly mean, so it computes it once)."""
    row = np.maximum.accumulate(np.maximum(point * np.asarray(factors, dtype=np.float64), 0.0))
    return np.tile(row.astype(np.float32), (horizon, 1))


def demand_class_stats(y: np.ndarray) -> tuple[float, float, int]:
    """(ADI, CV², number of demand periods). ADI = periods / demand periods (over the series' observed
    window);
    CV² = squared coefficient of variation of the non-zero sizes."""
    values = np.asarray(y, dtype=np.float64)
    positive = values[values > 0]
    count = int(positive.size)
    if count == 0:
        return float("inf"), float("nan"), 0
    adi = values.size / count
    if count < 2:
        return float(adi), float("nan"), count
    # positive.var() / positive.mean() ** 2 with the very reductions numpy's var and mean perform (so the
    # same bits), without their per-call overhead: serving classifies every series it forecasts.
    mean = np.add.reduce(positive) / count
    deviation = positive - mean
    var = np.add.reduce(deviation * deviation) / count
    return float(adi), float(var / mean**2), count


def classify_demand(y: np.ndarray) -> str:
    """Syntetos-Boylan class; ``insufficient`` when fewer than two demand periods make CV² meaningless."""
    adi, cv2, count = demand_class_stats(y)
    if count < 2:
        return "insufficient"
    if adi < ADI_CUTOFF:
        return "smooth" if cv2 < CV2_CUTOFF else "erratic"
    return "intermittent" if cv2 < CV2_CUTOFF else "lumpy"


# ---------------------------------------------------------------------- the feature matrix


def _trailing_windows(
    y: np.ndarray, end: np.ndarray, k: int, reduce: Callable[[np.ndarray], np.ndarray]
) -> np.ndarray:
    """``reduce`` (rows -> one value or one row each) of the last ``k`` weeks before each ``end``
    (``y[max(e - k, 0):e]``): the full windows as rows of one strided view, the shorter early ones by length.
    The reductions see the very values a per-origin slice holds, so results are those of a loop."""
    out: np.ndarray | None = None
    full = end >= k
    groups = [(full, np.lib.stride_tricks.sliding_window_view(y, k)[end[full] - k])] if full.any() else []
    for e in np.unique(end[~full]).tolist() if not full.all() else ():
        rows = end == e
        groups.append((rows, np.broadcast_to(y[:e], (int(rows.sum()), e))))
    for rows, windows in groups:
        values = reduce(windows)
        if out is None:
            out = np.empty((end.size, *values.shape[1:]), dtype=np.float64)
        out[rows] = values
    assert out is not None  # end is never empty
    return out


def _linear_quantiles(windows: np.ndarray) -> np.ndarray:
    """``np.quantile(row, _HIST_LEVELS)`` of every row, [R, len(_HIST_LEVELS)], with numpy's own arithmetic
    for the default 'linear' method (virtual index (n - 1) * q, numpy's two-sided lerp, NaN rows NaN), so the
    numbers are bit for bit those of the per-row calls, without their per-call overhead."""
    n = windows.shape[1]
    ordered = np.sort(windows, axis=1)
    virtual = (n - 1) * np.asarray(_HIST_LEVELS, dtype=np.float64)
    previous = np.floor(virtual)
    following = previous + 1
    above = virtual >= n - 1
    previous[above] = -1  # numpy reads the last value there, and takes gamma from the moved index
    following[above] = -1
    gamma = virtual - previous
    low, high = ordered[:, previous.astype(np.intp)], ordered[:, following.astype(np.intp)]
    step = high - low
    out = low + step * gamma
    upper = gamma >= 0.5
    out[:, upper] = high[:, upper] - step[:, upper] * (1 - gamma[upper])
    nan_rows = np.isnan(ordered[:, -1])
    if nan_rows.any():
        out[nan_rows] = ordered[nan_rows, -1:]
    return out


def _window_mean(cs: np.ndarray, end: np.ndarray, k: int) -> np.ndarray:
    start = np.maximum(end - k, 0)
    return (cs[end] - cs[start]) / np.maximum(end - start, 1)


def build_features(
    history: np.ndarray,
    week_starts: np.ndarray,
    static: Mapping[str, int],
    horizon: int,
    externals: Mapping[str, np.ndarray] | None = None,
    origins: np.ndarray | None = None,
    region: str = "ALL",
) -> np.ndarray:
    """Feature rows for forecasting the ``horizon`` weeks after each origin.

    history      weekly quantities, oldest first (zeros for weeks without demand), shape [T]
    week_starts  Monday of each history week, numpy datetime64[D], shape [T]
    static       integer codes from :func:`encode_static` (family, site_type, criticality, region, level)
    horizon      number of weeks ahead (row h-1 forecasts week origin + h)
    externals    optional weekly arrays aligned with ``history``, keyed by :data:`EXTERNAL_NAMES`;
                 a missing one gives NaN features
    origins      indices into history of the last observed week of each origin; default: the last week
                 (what serving asks for)
    region       the series' state (string), for the state holidays and rainy season of the target weeks

    Returns float32 [len(origins) * horizon, len(FEATURE_NAMES)], origin-major then horizon.
    """
    y = np.asarray(history, dtype=np.float64)
    weeks = np.asarray(week_starts, dtype="datetime64[D]")
    if y.ndim != 1 or weeks.shape != y.shape:
        raise ValueError("history and week_starts must be 1-D arrays of the same length")
    if y.size == 0:
        raise ValueError("history is empty")
    if horizon < 1:
        raise ValueError("horizon must be >= 1")
    idx = np.array([y.size - 1]) if origins is None else np.asarray(origins, dtype=np.int64)
    if idx.size and (idx.min() < 0 or idx.max() >= y.size):
        raise ValueError("origins out of range")
    n_orig = idx.size
    end = idx + 1  # exclusive end of the observed history at each origin

    nonzero = (y > 0).astype(np.float64)
    cs = np.concatenate(([0.0], np.cumsum(y)))
    cs2 = np.concatenate(([0.0], np.cumsum(y * y)))
    csn = np.concatenate(([0.0], np.cumsum(nonzero)))
    demand_weeks = csn[end]
    scale = np.where(demand_weeks > 0, cs[end] / np.maximum(demand_weeks, 1), 1.0)

    cols: dict[str, np.ndarray] = {"scale": scale, "log_scale": np.log1p(scale)}
    for lag in range(1, 5):
        pos = end - lag
        cols[f"lag_{lag}"] = np.where(pos >= 0, y[np.maximum(pos, 0)], np.nan) / scale
    for k in (4, 8, 13, 26):
        cols[f"mean_{k}"] = _window_mean(cs, end, k) / scale
    for k in (4, 13, 26):
        cols[f"zero_share_{k}"] = 1.0 - _window_mean(csn, end, k)
    mean13 = _window_mean(cs, end, 13)
    cols["std_13"] = np.sqrt(np.maximum(_window_mean(cs2, end, 13) - mean13**2, 0.0)) / scale
    cols["max_13"] = _trailing_windows(y, end, 13, lambda w: w.max(axis=1)) / scale
    last_demand = np.maximum.accumulate(np.where(y > 0, np.arange(y.size), -1))
    last_at = last_demand[idx]
    cols["weeks_since_demand"] = np.where(last_at >= 0, idx - last_at, end).astype(np.float64)
    cols["history_weeks"] = end.astype(np.float64)
    cols["demand_weeks"] = demand_weeks
    cols["adi"] = np.where(demand_weeks > 0, end / np.maximum(demand_weeks, 1), np.nan)
    mean_nz = cs[end] / np.maximum(demand_weeks, 1)
    var_nz = cs2[end] / np.maximum(demand_weeks, 1) - mean_nz**2
    cols["cv2"] = np.where(
        demand_weeks >= 2, np.maximum(var_nz, 0.0) / np.maximum(mean_nz, 1e-12) ** 2, np.nan
    )
    cols["sba"] = np.nan_to_num(croston(y, variant="sba")[idx], nan=0.0) / scale
    cols["tsb"] = np.nan_to_num(tsb(y)[idx], nan=0.0) / scale
    # Empirical quantiles of the last 26 weeks: the distribution the series has shown lately.
    hist_q = _trailing_windows(y, end, 26, _linear_quantiles) / scale[:, None]
    for j, level in enumerate(_HIST_LEVELS):
        cols[f"hist_q{round(level * 100)}_26"] = hist_q[:, j]
    # Mean absolute week-on-week change up to the origin (the MASE denominator), in units of scale.
    csd = np.concatenate(([0.0, 0.0], np.cumsum(np.abs(np.diff(y)))))
    cols["naive_mae"] = np.where(end > 1, csd[end] / np.maximum(end - 1, 1), np.nan) / scale
    for name, code in static.items():
        cols[name] = np.full(n_orig, float(code))

    ext = externals or {}

    def series(name: str) -> np.ndarray:
        values = ext.get(name)
        if values is None:
            return np.full(y.size, np.nan)
        arr = np.asarray(values, dtype=np.float64)
        if arr.shape != y.shape:
            raise ValueError(f"external {name!r} must align with history (shape {y.shape})")
        return arr

    def trailing(values: np.ndarray, k: int, how: str) -> np.ndarray:
        out = np.empty(n_orig)
        for row, e in enumerate(end):
            window = values[max(e - k, 0) : e]
            window = window[~np.isnan(window)]
            out[row] = np.nan if window.size == 0 else (window.sum() if how == "sum" else window.mean())
        return out

    cols["ext_precip_4w"] = trailing(series("precip_mm"), 4, "sum")
    cols["ext_temp_4w"] = trailing(series("temp_c"), 4, "mean")
    cols["ext_humidity_4w"] = trailing(series("humidity_pct"), 4, "mean")
    ptax = series("ptax_usd")
    cols["ext_ptax_usd"] = ptax[idx]
    before = np.where(idx - 4 >= 0, ptax[np.maximum(idx - 4, 0)], np.nan)
    cols["ext_ptax_usd_change_4w"] = (ptax[idx] / before - 1.0) * 100.0
    cols["ext_selic"] = series("selic_pct")[idx]
    cols["ext_ipca"] = series("ipca_pct")[idx]

    # Target-week calendar: the weeks after each origin, computed once for all distinct target weeks.
    steps = np.arange(1, horizon + 1)
    targets = weeks[idx][:, None] + (7 * steps)[None, :].astype("timedelta64[D]")
    if n_orig == 1:  # one origin (serving): its target weeks are distinct already
        calendar = week_calendar(targets[0], region)
    else:
        uniq, inverse = np.unique(targets.ravel(), return_inverse=True)
        calendar = week_calendar(uniq, region)[inverse]

    # One row per origin, repeated for its horizon weeks; then the columns that vary with the horizon.
    rows = np.full((n_orig, len(FEATURE_NAMES)), np.nan)
    for j, name in enumerate(FEATURE_NAMES):
        values = cols.get(name)
        if values is not None:
            rows[:, j] = values  # absent: a static code the caller did not pass stays NaN
    out = np.repeat(rows, horizon, axis=0)
    out[:, _HORIZON_COLUMN] = np.tile(steps, n_orig)
    out[:, _CALENDAR_SLICE] = calendar
    return out.astype(np.float32)


_HIST_LEVELS = (0.5, 0.8, 0.9, 0.95)

_CALENDAR_COLUMNS = (
    "target_week_of_year",
    "target_month",
    "target_holidays",
    "target_business_days",
    "target_carnival",
    "target_holy_week",
    "target_year_end",
    "target_rainy_season",
)
_HORIZON_COLUMN = FEATURE_NAMES.index("horizon")
# The target_* columns are contiguous and in week_calendar's order, so the calendar goes in as one block.
_CALENDAR_SLICE = slice(
    FEATURE_NAMES.index(_CALENDAR_COLUMNS[0]), FEATURE_NAMES.index(_CALENDAR_COLUMNS[-1]) + 1
)
assert FEATURE_NAMES[_CALENDAR_SLICE] == _CALENDAR_COLUMNS
