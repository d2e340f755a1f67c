"""Use cases of forecast-serving, transport-agnostic: forecast series, derive reorder policies, re-forecast.

Method per series, in order:

* the series has no history at all -> a zero forecast, ``fallback`` with the reason;
* no model version is loaded, the history is shorter than ``min_history_weeks`` or the series' family is not
  in the model's vocabulary -> the intermittent-demand fallback (``fallback`` = true, with the reason);
* training recorded an intermittent method (Croston, SBA, TSB) as the better one for the series (or its
  demand class) -> that method with the model's conformal offsets (a choice, not a fallback);
* otherwise the ONNX quantile model, all series of a call in one onnxruntime run.

``Forecast`` answers of material x site series are cached as computed (``result_cache``) and served again
while the series' history generation, the external points, the model version and the options are unchanged.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import hashlib
import logging
import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from novacorrente.common.v1 import common_pb2 as cpb

from services.forecast import features
from services.forecast.history import AnalyticsReader, History, SeriesKey, StockPosition, await_all
from services.forecast.intermittent import METHODS, intermittent_distribution
from services.forecast.metrics import ForecastMetrics
from services.forecast.policy import (
    PolicyNumbers,
    as_of_date,
    compute_policy,
    quantile_atoms,
    target_service_level,
)
from services.forecast.repository import LoadedModel, ModelRepository
from services.forecast.result_cache import CachedForecast, ForecastCache, ResultKey
from services.forecast.runner import InferenceRunner
from services.forecast.settings import ForecastSettings
from services.kit.errors import FailedPrecondition, FieldViolation, InvalidArgument

__all__ = [
    "DEFAULT_LEVELS",
    "LEVEL_NAMES",
    "MAX_REVIEW_PERIOD_DAYS",
    "ForecastResult",
    "ForecastUseCases",
    "PolicyResult",
    "SeriesSpec",
    "answer_settings_digest",
]

DEFAULT_LEVELS: tuple[float, ...] = (0.5, 0.8, 0.9, 0.95)
"""Quantile levels of fallback forecasts when no model (and so no model levels) is loaded."""

LEVEL_NAMES = {1: "material_site", 2: "material", 3: "family", 4: "region", 5: "national"}
_MODEL_METHOD = "lightgbm-quantile"
_DEFAULT_WEATHER_CITY = "salvador_ba"  # the serving contract's default: most demand is in Bahia
_MAX_EXTERNAL_DAYS = 3650  # within analytics' longest range per call (max_range_days, 3,700 by default)
_CHOSEN = {"croston": "croston", "sba": "sba", "tsb": "tsb"}

log = logging.getLogger(__name__)


MAX_REVIEW_PERIOD_DAYS = 365.0
"""Longest review period a policy accepts: a year between reviews is already no policy at all, and the
protection interval sizes the convolution grid's week count, so an unbounded one is unbounded work."""

_REFORECAST_POLICIES_IN_FLIGHT = 4
"""Policies a re-forecast computes at once (a lead-time call to analytics each, beside the chunk's one stock
listing): analytics' default query pool."""


@dataclass(frozen=True, slots=True)
class SeriesSpec:
    """A series to forecast: aggregation level (common AggregationLevel numbers) and its keys."""

    level: int = 1
    material_code: str = ""
    site_code: str = ""
    family: str = ""
    region: str = ""

    @property
    def key(self) -> SeriesKey:
        return (self.material_code, self.site_code)


@dataclass
class ForecastResult:
    """Forecast of one series with everything its provenance needs."""

    series: SeriesSpec
    week_starts: list[dt.date]
    levels: tuple[float, ...]
    quantiles: np.ndarray  # [H, K]
    means: np.ndarray  # [H]
    demand_class: str
    method: str
    fallback: bool
    fallback_reason: str
    unit: str
    model_name: str
    model_version: str
    watermark: str
    generated_at: dt.datetime
    history: History | None = field(default=None, repr=False)
    cache_key: ResultKey | None = field(default=None, repr=False)
    """Where this forecast may be cached (``result_cache``); None when it may not (no history generation)."""


@dataclass
class PolicyResult:
    """Reorder policy of one series, the forecast it came from and the lead-time sample scope."""

    forecast: ForecastResult
    numbers: PolicyNumbers
    service_target_source: str
    lead_time_scope: str
    stock: StockPosition


def answer_settings_digest(settings: ForecastSettings) -> str:
    """The settings (and feature spec) that shape a forecast besides its model and data: cached answers are
    only shared between processes that agree on them."""
    shaping = (
        settings.model_name,
        settings.fallback_method,
        settings.min_history_weeks,
        features.FEATURE_SPEC_VERSION,
        _DEFAULT_WEATHER_CITY,
    )
    return hashlib.sha256(repr(shaping).encode()).hexdigest()[:16]


def _check_review_period(days: float) -> None:
    # NaN passes every ordered comparison, so finiteness is checked first.
    if not math.isfinite(days) or not 0 <= days <= MAX_REVIEW_PERIOD_DAYS:
        raise InvalidArgument(
            [
                FieldViolation(
                    "review_period_days",
                    f"must be a finite number of days between 0 and {MAX_REVIEW_PERIOD_DAYS:g} "
                    f"(0: continuous review), got {days!r}",
                )
            ]
        )


def _from_training_start(history: History, start: np.datetime64 | None) -> History:
    """``history`` as training saw the same weeks: from the training window's first week ``start``, zeros
    before the series' first demand, weeks before ``start`` left out.

    Analytics starts a history at the series' own first demand week; training started every series at the
    window's first week. Everything computed over the whole history (history length, ADI, zero shares,
    scale, the Croston/SBA/TSB recursions, the demand class) would otherwise differ from what the model and
    the method choice were fitted on. Without a recorded window (``start`` None), a history that ends
    before it, or weeks off its Monday grid, the history is used as it is."""
    if start is None or history.weekly.size == 0:
        return history
    days = int((history.first_week - start).astype(np.int64))
    if days == 0 or days % 7 != 0:
        return history
    if days > 0:
        weekly = np.concatenate((np.zeros(days // 7), history.weekly))
    elif -days // 7 < history.weekly.size:
        weekly = history.weekly[-days // 7 :]
    else:
        return history
    return dataclasses.replace(history, first_week=start, weekly=weekly)


def _to_date(value: np.datetime64) -> dt.date:
    return dt.date.fromisoformat(str(value.astype("datetime64[D]")))


@dataclass(frozen=True, slots=True)
class _ExternalPlan:
    """What a model was trained with: the weather city of each state and the factors it had (by city)."""

    cities: Mapping[str, str]
    sources: frozenset[str] | None  # None: every factor (a sidecar that does not list them)

    @classmethod
    def of(cls, model: LoadedModel) -> _ExternalPlan | None:
        """None for a sidecar without an ``externals`` section: a model trained without them."""
        section = model.sidecar.get("externals")
        if not isinstance(section, Mapping):
            return None
        cities = section.get("weather_city_by_region")
        sources = section.get("sources")
        return cls(
            cities if isinstance(cities, Mapping) else features.WEATHER_CITY_BY_REGION,
            frozenset(map(str, sources)) if isinstance(sources, list) else None,
        )

    def city(self, region: str) -> str:
        return str(self.cities.get(region, _DEFAULT_WEATHER_CITY))

    def names(self, city: str) -> frozenset[str]:
        """The factors supplied for a series of weather city ``city``: the ones training had for it, so a
        factor training lacked stays NaN here too."""
        return frozenset(
            name
            for name, (series, _) in features.EXTERNAL_SERIES.items()
            if self.sources is None
            or (f"weather:{city}" if series.startswith("weather.") else name) in self.sources
        )

    def series_ids(self) -> set[str]:
        """Every series the model may need, whatever the states of a call: one cache entry serves all."""
        cities = {*map(str, self.cities.values()), _DEFAULT_WEATHER_CITY}
        return {features.external_series_ids(c)[n] for c in cities for n in self.names(c)}


class ForecastUseCases:
    """The service core. ``clock`` returns the current UTC time (tests pin it)."""

    def __init__(
        self,
        repository: ModelRepository,
        runner: InferenceRunner,
        reader: AnalyticsReader,
        settings: ForecastSettings,
        *,
        metrics: ForecastMetrics | None = None,
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
        results: ForecastCache | None = None,
    ):
        self._repository = repository
        self._runner = runner
        self._reader = reader
        self._settings = settings
        self._metrics = metrics
        self._clock = clock
        self._results = results
        self._missing_externals: set[str] = set()  # logged once each

    # -- validation ------------------------------------------------------------------------------------

    def _horizon(self, requested: int, model: LoadedModel | None) -> int:
        limit = self._settings.max_horizon_weeks
        if model is not None and model.max_horizon is not None:
            limit = min(limit, model.max_horizon)
        if requested < 0 or requested > limit:
            raise InvalidArgument(
                [
                    FieldViolation(
                        "horizon_weeks", f"must be between 1 and {limit} (0 for the default), got {requested}"
                    )
                ]
            )
        return requested or min(self._settings.default_horizon_weeks, limit)

    def _check_series(self, series: Sequence[SeriesSpec], material_site_only: bool = False) -> None:
        if not series:
            raise InvalidArgument([FieldViolation("series", "at least one series is required")])
        if len(series) > self._settings.max_series_per_request:
            raise InvalidArgument(
                [FieldViolation("series", f"at most {self._settings.max_series_per_request} series per call")]
            )
        violations = []
        for i, spec in enumerate(series):
            if spec.level not in LEVEL_NAMES:
                violations.append(
                    FieldViolation(f"series[{i}].level", f"unknown aggregation level {spec.level}")
                )
            elif material_site_only and spec.level != 1:
                violations.append(
                    FieldViolation(f"series[{i}].level", "reorder policies are per material x site")
                )
            elif spec.level in (1, 2) and not spec.material_code:
                violations.append(FieldViolation(f"series[{i}].material_code", "required at this level"))
            elif spec.level == 1 and not spec.site_code:
                violations.append(
                    FieldViolation(f"series[{i}].site_code", "required at the material_site level")
                )
            elif spec.level == 3 and not spec.family:
                violations.append(FieldViolation(f"series[{i}].family", "required at the family level"))
            elif spec.level == 4 and not spec.region:
                violations.append(FieldViolation(f"series[{i}].region", "required at the region level"))
        if violations:
            raise InvalidArgument(violations)

    # -- histories -------------------------------------------------------------------------------------

    async def _aggregate_history(self, spec: SeriesSpec) -> tuple[History, dict[str, str]]:
        level = LEVEL_NAMES[spec.level]
        if level == "material":
            filter_ = cpb.Filter(material_codes=[spec.material_code])
            family = await self._reader.material_family(spec.material_code)
            attrs = features.static_attributes(family, "ALL", "material", "ALL")
        elif level == "family":
            filter_, family = cpb.Filter(families=[spec.family]), spec.family
            attrs = features.static_attributes(spec.family, "ALL", "family", "ALL")
        elif level == "region":
            filter_, family = cpb.Filter(regions=[spec.region]), ""
            attrs = features.static_attributes("", "ALL", "region", spec.region)
        else:
            filter_, family = cpb.Filter(), ""
            attrs = features.static_attributes("", "ALL", "national", "ALL")
        first, values, unit, watermark = await self._reader.demand_series(
            filter_, use_lines=level != "material"
        )
        history = History(
            material_code=spec.material_code or "ALL",
            site_code="ALL",
            first_week=first,
            weekly=values,
            family=family,
            unit=unit,
            material_criticality=0,
            site_criticality=0,
            unknown=values.size == 0,
            watermark=watermark,
        )
        return history, attrs

    async def _histories(
        self, series: Sequence[SeriesSpec], tokens: Mapping[SeriesKey, str] | None = None
    ) -> list[tuple[History, dict[str, str]]]:
        site_specs = [s for s in series if s.level == 1]
        site_histories = iter(
            await self._reader.histories([s.key for s in site_specs], tokens) if site_specs else []
        )
        aggregates = await await_all([self._aggregate_history(s) for s in series if s.level != 1])
        agg_iter = iter(aggregates)
        out = []
        for spec in series:
            if spec.level == 1:
                history = next(site_histories)
                attrs = features.static_attributes(history.family, spec.site_code, "material_site")
                out.append((history, attrs))
            else:
                out.append(next(agg_iter))
        return out

    # -- forecasting -----------------------------------------------------------------------------------

    def _choose(
        self,
        spec: SeriesSpec,
        history: History,
        attrs: dict[str, str],
        model: LoadedModel | None,
        demand_class: str,
    ) -> tuple[str, str]:
        """(method key, fallback reason or ''): method key is 'model', an intermittent method, or 'zero'."""
        if history.unknown or not np.any(history.weekly > 0):
            return "zero", "no demand recorded for this series"
        if model is None:
            return (
                self._settings.fallback_method,
                f"no version of model '{self._settings.model_name}' is loaded",
            )
        width = model.inputs[0].shape[-1] if model.inputs[0].shape else -1
        if width not in (-1, len(features.FEATURE_NAMES)):
            return self._settings.fallback_method, (
                f"{model.name} version {model.version} takes {width} features, this service builds "
                f"{len(features.FEATURE_NAMES)}"
            )
        if history.weekly.size < self._settings.min_history_weeks:
            return self._settings.fallback_method, (
                f"history has {history.weekly.size} weeks, fewer than {self._settings.min_history_weeks}"
            )
        family_vocab = model.vocabularies.get("family", ())
        if attrs["family"] not in family_vocab and attrs["level"] in ("material_site", "material", "family"):
            return self._settings.fallback_method, (
                f"family '{attrs['family']}' is unknown to {model.name} version {model.version}"
            )
        key = f"{spec.material_code}|{spec.site_code if spec.level == 1 else 'ALL'}"
        recorded = model.series_methods.get(key) or model.class_methods.get(demand_class, "")
        if recorded in _CHOSEN:
            return _CHOSEN[recorded], ""
        return "model", ""

    async def _externals(
        self, model: LoadedModel, modelled: Sequence[tuple[History, dict[str, str]]]
    ) -> tuple[list[dict[str, np.ndarray]], str]:
        """The ``externals`` of each modelled series, as training computed them for its own weeks, and the
        ``extgen`` token of the points they came from.

        The model's sidecar says which factors it was trained with (``externals.sources``) and which weather
        city stands for each state; only those are supplied, so a factor training lacked stays NaN here too.
        Every series of the call is served by one ``GetExternalSeries`` read (cached), at day grain: the
        weekly rules (a sum, a mean, the week's last SELIC, the previous month's IPCA) are the shared ones of
        ``features.EXTERNAL_SERIES``, which analytics' own weekly grain (averages) would not reproduce.
        Features read externals up to the origin (the last history week) only, so the forecast weeks need no
        value of their own: like training's forecast rows, a week without observations is NaN, never filled
        from an earlier one.
        """
        plan = _ExternalPlan.of(model)
        wanted = plan.series_ids() if plan is not None else set()
        if plan is None or not wanted:
            return [{} for _ in modelled], ""
        firsts = [h.week_starts[0] for h, _ in modelled if h.weekly.size]
        lasts = [h.week_starts[-1] for h, _ in modelled if h.weekly.size]
        # From the first day of the month before the first week's month (the IPCA a week sees) to the last
        # history day; no further back than analytics serves in one call, far beyond the 5 weeks the
        # features read.
        end = max(lasts) + np.timedelta64(6, "D")
        month = (min(firsts) + np.timedelta64(3, "D")).astype("datetime64[M]") - np.timedelta64(1, "M")
        start = max(month.astype("datetime64[D]"), end - np.timedelta64(_MAX_EXTERNAL_DAYS - 1, "D"))
        found = await self._reader.external_observations(wanted, start, end)
        self._log_missing(found.missing, model)
        out: list[dict[str, np.ndarray]] = []
        memo: dict[tuple[str, np.datetime64, int], dict[str, np.ndarray]] = {}
        for history, attrs in modelled:
            city = plan.city(attrs["region"])
            key = (city, history.first_week, history.weekly.size)
            if key not in memo:
                names = plan.names(city)
                weekly = features.weekly_externals(found.series, history.week_starts, city)
                memo[key] = {name: values for name, values in weekly.items() if name in names}
            out.append(memo[key])
        return out, found.generation

    def _log_missing(self, missing: Sequence[str], model: LoadedModel) -> None:
        new = sorted(set(missing) - self._missing_externals)
        if new:
            self._missing_externals.update(new)
            log.warning(
                "analytics holds no external series %s: %s version %s was trained with them, their "
                "features are NaN (missing) until they are ingested",
                ", ".join(new),
                model.name,
                model.version,
                extra={"external_series": new},
            )

    async def forecast(self, series: Sequence[SeriesSpec], horizon_weeks: int) -> list[ForecastResult]:
        """Forecasts computed now (the reorder policies need the distributions, not an encoded answer)."""
        self._check_series(series)
        model = self._repository.serving(self._settings.model_name)
        horizon = self._horizon(horizon_weeks, model)
        start = time.perf_counter()
        histories = await self._histories(series)
        results = await self._forecast_histories(series, histories, model, horizon)
        self._observe("Forecast", model, start)
        return results

    async def forecast_cached(
        self,
        series: Sequence[SeriesSpec],
        horizon_weeks: int,
        encode: Callable[[ForecastResult], bytes],
    ) -> list[CachedForecast]:
        """Forecasts as encoded answers (``encode``), in order. A material x site series whose history
        generation, external points, model version and options are those of a cached answer is served from
        the forecast cache without reading its history or running anything; the others are computed and
        cached for the next call."""
        self._check_series(series)
        model = self._repository.serving(self._settings.model_name)
        horizon = self._horizon(horizon_weeks, model)
        start = time.perf_counter()
        out: list[CachedForecast | None] = [None] * len(series)
        tokens: dict[SeriesKey, str] = {}
        external = ""
        if self._results is not None:
            site = [i for i, spec in enumerate(series) if spec.level == 1]
            if site:
                tokens = await self._reader.generations([series[i].key for i in site])
                external = await self._reader.external_generation()
                lookups = [
                    (i, self._result_key(series[i], horizon, model, tokens[series[i].key], external))
                    for i in site
                    if tokens.get(series[i].key)
                ]
                found = await self._results.get_many([key for _, key in lookups])
                for (i, _), blob in zip(lookups, found, strict=True):
                    if blob is not None:
                        out[i] = CachedForecast(blob, True)
                if self._metrics is not None:
                    hits = sum(blob is not None for blob in found)
                    if hits:
                        self._metrics.result_cache_hit.inc(hits)
                    if hits < len(site):
                        self._metrics.result_cache_miss.inc(len(site) - hits)
        todo = [i for i, item in enumerate(out) if item is None]
        if todo:
            specs = [series[i] for i in todo]
            histories = await self._histories(specs, tokens)
            results = await self._forecast_histories(specs, histories, model, horizon, external)
            payloads = [encode(result) for result in results]
            for i, blob in zip(todo, payloads, strict=True):
                out[i] = CachedForecast(blob, False)
            await self.remember(results, payloads)
        self._observe("Forecast", model, start)
        return out  # type: ignore[return-value]  # every slot is filled above

    async def remember(self, results: Sequence[ForecastResult], payloads: Sequence[bytes]) -> None:
        """Cache encoded answers of freshly computed forecasts (those with a ``cache_key``)."""
        if self._results is None:
            return
        items = [(r.cache_key, blob) for r, blob in zip(results, payloads, strict=True) if r.cache_key]
        if items:
            await self._results.put_many(items)  # type: ignore[arg-type]  # None filtered above

    def _result_key(
        self, spec: SeriesSpec, horizon: int, model: LoadedModel | None, history: str, external: str
    ) -> ResultKey:
        identity = ("", "", "")
        if model is not None:
            identity = (model.name, model.version, str(model.sidecar.get("sha256", "")))
        return ResultKey(
            spec.key,
            (spec.level, spec.material_code, spec.site_code, spec.family, spec.region),
            horizon,
            identity,
            history,
            external,
        )

    def _observe(self, method: str, model: LoadedModel | None, start: float) -> None:
        if self._metrics is not None:
            version = model.version if model is not None else "none"
            count, latency = self._metrics.request_instruments(method, self._settings.model_name, version)
            count.inc()
            latency.observe(time.perf_counter() - start)

    async def _forecast_histories(
        self,
        series: Sequence[SeriesSpec],
        histories: Sequence[tuple[History, dict[str, str]]],
        model: LoadedModel | None,
        horizon: int,
        external_generation: str = "",
    ) -> list[ForecastResult]:
        """Forecasts of ``series`` from their histories. ``external_generation``: the ``extgen`` token read
        before the histories; each result's ``cache_key`` carries it, or the newer token the modelled series
        read their points under (see the comment below)."""
        now = self._clock()
        levels = model.quantiles if model is not None else DEFAULT_LEVELS
        start = model.training_first_week if model is not None else None
        histories = [(_from_training_start(history, start), attrs) for history, attrs in histories]
        plans = []
        for spec, (history, attrs) in zip(series, histories, strict=True):
            demand_class = features.classify_demand(history.weekly) if history.weekly.size else "insufficient"
            method, reason = self._choose(spec, history, attrs, model, demand_class)
            plans.append((spec, history, demand_class, method, reason))
        modelled = [(h, a) for (_, h, _, m, _), (_, a) in zip(plans, histories, strict=True) if m == "model"]
        blocks: list[np.ndarray] = []
        external = external_generation
        if modelled:
            assert model is not None
            externals, read_under = await self._externals(model, modelled)
            external = read_under or external  # "" when the model reads no external points
            for (history, attrs), ext in zip(modelled, externals, strict=True):
                codes = features.encode_static(attrs, model.vocabularies)
                blocks.append(
                    features.build_features(
                        history.weekly,
                        history.week_starts,
                        codes,
                        horizon,
                        externals=ext,
                        region=attrs["region"],
                    )
                )
        model_out: Iterator[np.ndarray] = iter(())
        if blocks:
            assert model is not None
            stacked = np.concatenate(blocks, axis=0)
            (quantiles,) = await self._runner.run(
                model, {model.inputs[0].name: stacked}, [model.outputs[0].name]
            )
            model_out = iter(np.split(np.asarray(quantiles, dtype=np.float64), len(blocks)))
        results = []
        for spec, history, demand_class, method, reason in plans:
            last = history.last_week if history.last_week is not None else np.datetime64(now.date(), "D")
            origin = _to_date(last)
            weeks = [origin + dt.timedelta(days=7 * h) for h in range(1, horizon + 1)]
            if method == "model":
                values = np.maximum.accumulate(np.maximum(next(model_out), 0.0), axis=1)
                means = quantile_atoms(levels, values).mean(axis=1)
                name, version, method_name = model.name, model.version, _MODEL_METHOD  # type: ignore[union-attr]
            elif method == "zero":
                values, means = np.zeros((horizon, len(levels))), np.zeros(horizon)
                name, version, method_name = "", "", "zero"
            elif model is not None:
                calibrated = model.sidecar.get("intermittent_models", {}).get("conformal_factors", {})
                factors = calibrated.get(method)
                point = features.intermittent_forecast(history.weekly, method)
                if factors is None or len(factors) != len(levels):
                    dist = intermittent_distribution(history.weekly, levels, method)
                    values = np.tile(dist.quantiles, (horizon, 1))
                else:
                    values = features.conformal_quantiles(point, factors, horizon).astype(np.float64)
                means = np.full(horizon, point)
                name, version, method_name = model.name, model.version, METHODS[method]
            else:
                dist = intermittent_distribution(history.weekly, levels, method)
                values, means = np.tile(dist.quantiles, (horizon, 1)), np.full(horizon, dist.mean)
                name, version, method_name = "", "", METHODS[method]
            if reason and self._metrics is not None:
                self._metrics.fallbacks.labels(reason.split(" ")[0]).inc()
            cache_key = None
            if spec.level == 1 and history.generation:
                # Under the newest extgen token this call saw: the one modelled series read their points
                # under, which the next call will look up with (the others do not depend on it at all).
                cache_key = self._result_key(spec, horizon, model, history.generation, external)
            results.append(
                ForecastResult(
                    series=spec,
                    week_starts=weeks,
                    levels=tuple(levels),
                    quantiles=values,
                    means=means,
                    demand_class=demand_class,
                    method=method_name,
                    fallback=bool(reason),
                    fallback_reason=reason,
                    unit=history.unit,
                    model_name=name,
                    model_version=version,
                    watermark=history.watermark,
                    generated_at=now,
                    history=history,
                    cache_key=cache_key,
                )
            )
        return results

    # -- policies --------------------------------------------------------------------------------------

    def _stocks(self, forecasts: Sequence[ForecastResult]) -> asyncio.Task[dict[SeriesKey, StockPosition]]:
        """The stock positions of all the series, from one listing (a call per series would compute the
        whole inventory status each time), started at once so that it runs beside the lead-time calls."""
        keys = [(f.series.material_code, f.series.site_code) for f in forecasts]
        return asyncio.ensure_future(self._reader.stock_positions(keys))

    async def _policy(
        self,
        forecast: ForecastResult,
        stocks: asyncio.Task[dict[SeriesKey, StockPosition]],
        service_level: float,
        review_period_days: float,
    ) -> PolicyResult:
        spec, history = forecast.series, forecast.history
        assert history is not None
        lead, positions = await asyncio.gather(
            self._reader.lead_times(spec.material_code, spec.site_code), stocks
        )
        stock = positions[(spec.material_code, spec.site_code)]
        if lead.days.size == 0:
            raise FailedPrecondition(
                f"no observed lead times for material {spec.material_code} (site {spec.site_code})",
                reason="NO_LEAD_TIMES",
                metadata={"material_code": spec.material_code, "site_code": spec.site_code},
            )
        if service_level > 0:
            target, source = service_level, "request"
        else:
            target = target_service_level(history.material_criticality, history.site_criticality)
            source = "criticality"
        numbers = compute_policy(
            forecast.levels,
            forecast.quantiles,
            lead.days,
            service_level=target,
            stock_position=stock.value,
            today=as_of_date(self._clock().date(), forecast.week_starts[0] if forecast.week_starts else None),
            review_period_days=review_period_days,
            order_cycle_days=self._settings.order_cycle_days,
            # Days of cover divide by the method's own weekly mean (the one Forecast reports): the mean
            # read back from the quantiles loses the lumps above the top level of intermittent methods.
            weekly_means=forecast.means,
        )
        return PolicyResult(forecast, numbers, source, lead.scope, stock)

    async def reorder_policies(
        self, series: Sequence[SeriesSpec], service_level: float, review_period_days: float
    ) -> list[PolicyResult]:
        if not 0 <= service_level < 1:
            raise InvalidArgument(
                [FieldViolation("service_level", "must be in (0, 1), or 0 for the criticality table")]
            )
        _check_review_period(review_period_days)
        self._check_series(series, material_site_only=True)
        forecasts = await self.forecast(series, 0)
        stocks = self._stocks(forecasts)
        return list(
            await asyncio.gather(
                *(self._policy(f, stocks, service_level, review_period_days) for f in forecasts)
            )
        )

    # -- re-forecast (batch events) --------------------------------------------------------------------

    async def reforecast(self, keys: Sequence[SeriesKey]) -> tuple[list[ForecastResult], list[PolicyResult]]:
        """Forecasts and policies of material x site series; series without lead times get no policy."""
        specs = [SeriesSpec(1, m, s) for m, s in keys]
        model = self._repository.serving(self._settings.model_name)
        horizon = self._horizon(0, model)
        external = await self._reader.external_generation()
        histories = await self._histories(specs)
        forecasts = await self._forecast_histories(specs, histories, model, horizon, external)
        policies: list[PolicyResult] = []
        # A chunk's policies would ask analytics for every series' lead times and stock at once; analytics
        # answers from a small query pool, where calls beyond it only queue with their deadlines running.
        # Interactive policy calls are not held back by this limit: it is the re-forecast's own.
        slots = asyncio.Semaphore(_REFORECAST_POLICIES_IN_FLIGHT)
        stocks = self._stocks(forecasts)

        async def policy(forecast: ForecastResult) -> PolicyResult:
            async with slots:
                return await self._policy(forecast, stocks, 0.0, 0.0)

        outcomes = await asyncio.gather(*(policy(f) for f in forecasts), return_exceptions=True)
        for outcome in outcomes:
            if isinstance(outcome, FailedPrecondition):
                continue  # no lead times yet: a forecast without a policy
            if isinstance(outcome, BaseException):
                raise outcome
            policies.append(outcome)
        return forecasts, policies

    def models(self) -> LoadedModel | None:
        return self._repository.serving(self._settings.model_name)
