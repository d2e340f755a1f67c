"""External factors: serving feeds the model the weather, PTAX, SELIC and IPCA values training used.

Training reads the feed files (ingestion's readers, then the shared weekly rules of ``features``); serving
reads the same observations from analytics' ``GetExternalSeries`` (then the same rules). The tests put the
real files through ingestion's readers into a real analytics read model and compare both sides value by
value, then compare served forecasts with the model run on training's features.
"""

from __future__ import annotations

import logging
import uuid
from pathlib import Path

import numpy as np
import pytest
from novacorrente.common.v1 import common_pb2 as cpb
from novacorrente.ingestion.v1 import records_pb2 as rpb

from ml_training.externals import Externals, load_externals, read_observations
from services.forecast import features as F
from services.forecast.app import build_app
from services.forecast.history import AnalyticsReader, History
from services.forecast.service import SeriesSpec
from services.forecast.settings import ForecastSettings
from services.ingestion.formats import bcb_sgs, ibge_sidra, openmeteo
from services.kit.auth import Role, TokenSource
from services.kit.clients import open_channel
from services.ports.cache import open_cache
from tests.forecast.conftest import WATERMARK
from tests.forecast.externals_data import (
    EXTERNAL_DIR,
    batch_event,
    export_records,
    feed_records,
    points_by_series,
    real_analytics,
)

CITIES = sorted(set(F.WEATHER_CITY_BY_REGION.values()))
NATIONAL = {"ptax_usd", "selic_pct", "ipca_pct"}
MODEL_METHOD = "lightgbm-quantile"


def _first_of_previous_month(week: np.datetime64) -> np.datetime64:
    month = (week + np.timedelta64(3, "D")).astype("datetime64[M]") - np.timedelta64(1, "M")
    return month.astype("datetime64[D]")


def _date(value: cpb.Date) -> np.datetime64:
    return np.datetime64(f"{value.year:04d}-{value.month:02d}-{value.day:02d}", "D")


# ----------------------------------------------------------------------------------------- the shared table


def test_the_table_names_every_external_by_the_ids_ingestion_gives() -> None:
    assert tuple(F.EXTERNAL_SERIES) == F.EXTERNAL_NAMES
    for city in CITIES:  # the weather city of a file name, as ingestion's Open-Meteo reader derives it
        assert openmeteo.city_from_filename(f"openmeteo_hourly_{city}.json") == F.weather_series_city(city)
    daily = {name for _, _, name in openmeteo.DAILY_SERIES}
    ids = F.external_series_ids("rio_de_janeiro_rj")
    assert {ids[n].split(".")[-1] for n in ("precip_mm", "temp_c", "humidity_pct")} <= daily
    assert ids["precip_mm"] == "weather.rio_de_janeiro.precipitation_mm"
    assert ids["selic_pct"] == bcb_sgs.KNOWN_SERIES["selic"][0]
    assert ids["ipca_pct"] == ibge_sidra.VARIABLES["63"]
    assert ids["ptax_usd"] == "ptax.usd.sell"
    # Every id the table names is one the real files give.
    produced = set(points_by_series(feed_records()))
    assert {i for c in CITIES for i in F.external_series_ids(c).values()} <= produced


def test_weekly_rules_by_hand() -> None:
    weeks = np.array(["2025-01-27", "2025-02-03", "2025-02-10"], dtype="datetime64[D]")
    days = np.array(
        ["2025-02-04", "2025-01-27", "2025-02-02", "2025-02-09", "2025-02-05", "2025-02-17"],
        dtype="datetime64[D]",
    )  # unsorted; one day after the last week
    values = np.array([3.0, 1.0, 2.0, np.nan, 5.0, 9.0])
    same = np.testing.assert_array_equal
    same(F.weekly_external(days, values, weeks, "sum"), [3.0, 8.0, np.nan])
    same(F.weekly_external(days, values, weeks, "mean"), [1.5, 4.0, np.nan])
    # The latest day of the week with a value (the NaN on Sunday 9 Feb counts as absent); an empty week
    # stays NaN: nothing is carried forward from the week before.
    same(F.weekly_external(days, values, weeks, "last"), [2.0, 5.0, np.nan])
    monthly = np.array(["2024-12-01", "2025-01-01"], dtype="datetime64[D]")
    # Week of 27 Jan belongs to January (its Thursday is 30 Jan) -> December's value; the February weeks
    # see January's; a month not yet published gives NaN.
    same(F.weekly_external(monthly, np.array([0.52, 0.16]), weeks, "previous_month"), [0.52, 0.16, 0.16])
    same(F.weekly_external(monthly[:1], np.array([0.52]), weeks, "previous_month"), [0.52, np.nan, np.nan])
    with pytest.raises(ValueError):
        F.weekly_external(days, values, weeks, "median")


# ------------------------------------------------------------------- parity on the real data, real analytics


async def test_training_and_serving_externals_are_equal_on_the_real_data(jwt_key: bytes, panel) -> None:
    weeks = panel.weeks
    wanted = {i for c in CITIES for i in F.external_series_ids(c).values()}
    start, end = _first_of_previous_month(weeks[0]), weeks[-1] + np.timedelta64(6, "D")
    async with real_analytics(jwt_key, feed_records()) as address:
        channel = open_channel(address, token_provider=TokenSource(jwt_key, "forecast-serving", Role.VIEWER))
        reader = AnalyticsReader(channel, open_cache(f"memory://ext-{uuid.uuid4().hex}"))
        try:
            served = await reader.external_observations(wanted, start, end)
            again = await reader.external_observations(wanted, start, end)
        finally:
            await channel.close()
    assert not served.missing and not served.from_cache and again.from_cache
    trained = load_externals(EXTERNAL_DIR, weeks)
    assert trained.sources == sorted([*(f"weather:{c}" for c in CITIES), *NATIONAL])
    for city in CITIES:
        serving = F.weekly_externals(served.series, weeks, city)
        training = trained.for_city(city)
        assert set(serving) == set(training) == set(F.EXTERNAL_NAMES)
        for name in F.EXTERNAL_NAMES:
            assert np.isfinite(training[name]).all(), (city, name)  # real values every week, not NaN
            np.testing.assert_array_equal(serving[name], training[name], err_msg=f"{city} {name}")
    # The feature rows of every material x site series of the panel, at every origin (the last one is
    # what serving asks for), are the same with either side's externals.
    vocab = {
        "family": [F.UNKNOWN, *sorted({f for f, _ in panel.series.values()})],
        "site_type": [F.UNKNOWN, *F.SITE_TYPES],
        "criticality": [F.UNKNOWN, *F.CRITICALITIES],
        "region": [F.UNKNOWN, "ALL", "BA", "UNKNOWN"],
        "level": [F.UNKNOWN, *F.LEVELS],
    }
    ext_columns = [j for j, n in enumerate(F.FEATURE_NAMES) if n.startswith("ext_")]
    origins = np.arange(3, weeks.size)
    for (material, site), (family, y) in panel.series.items():
        attrs = F.static_attributes(family, site, "material_site")
        city = F.WEATHER_CITY_BY_REGION.get(attrs["region"], "salvador_ba")
        codes = F.encode_static(attrs, vocab)
        args = (y, weeks, codes, 4)
        X_train = F.build_features(*args, trained.for_city(city), origins, attrs["region"])
        X_serve = F.build_features(
            *args, F.weekly_externals(served.series, weeks, city), origins, attrs["region"]
        )
        np.testing.assert_array_equal(X_serve, X_train, err_msg=f"{material}|{site}")
        # Real values at every origin, except the 4-week PTAX change at the first (no week 4 back).
        assert np.isfinite(X_serve[4:, ext_columns]).all()


# ------------------------------------------------------ served forecasts = the model on training's features


def _reference(
    model, history: History, attrs: dict[str, str], horizon: int, ext: dict[str, np.ndarray] | None
) -> np.ndarray:
    codes = F.encode_static(attrs, model.vocabularies)
    X = F.build_features(
        history.weekly, history.week_starts, codes, horizon, externals=ext, region=attrs["region"]
    )
    (q,) = model.session.run([model.outputs[0].name], {model.inputs[0].name: X})
    return np.maximum.accumulate(np.maximum(np.asarray(q, dtype=np.float64), 0.0), axis=1)


def _busiest_keys(records, n: int) -> list[tuple[str, str]]:
    counts: dict[tuple[str, str], int] = {}
    for r in records:
        if r.WhichOneof("kind") == "consumption" and "service" not in r.consumption.flags:
            key = (r.consumption.material_code, r.consumption.site_code)
            counts[key] = counts.get(key, 0) + 1
    return sorted(counts, key=lambda k: (-counts[k], k))[:n]


async def test_served_forecasts_use_the_externals_training_used(
    jwt_key: bytes, trained_repo: Path, tmp_path: Path
) -> None:
    """Real export and real feeds through ingestion's readers into real analytics; forecast-serving with a
    real model on top. Each model forecast equals onnxruntime on features built with *training's*
    externals (ml_training.externals) for the weeks analytics serves, and differs from the NaN ones."""
    records = export_records()
    keys = _busiest_keys(records, 40)
    name = uuid.uuid4().hex[:10]
    async with real_analytics(jwt_key, [*records, *feed_records()]) as address:
        settings = ForecastSettings(
            host="127.0.0.1",
            port=0,
            model_repository=trained_repo,
            analytics_target=address,
            broker_url=f"memory://forecast-{name}",
            cache_url=f"memory://forecast-{name}",
            repository_poll_seconds=0,
            grace_seconds=1,
        )
        app = await build_app(settings, jwt_key=jwt_key)
        await app.start()
        try:
            results = await app.use_cases.forecast([SeriesSpec(1, m, s) for m, s in keys], 0)
            model = app.repository.serving(settings.model_name)
        finally:
            await app.stop()
    assert model is not None
    modelled = [r for r in results if r.method == MODEL_METHOD]
    assert len(modelled) >= 5
    observations = read_observations(EXTERNAL_DIR)  # training's reading of the feed files
    horizon = modelled[0].quantiles.shape[0]
    moved = 0
    for result in modelled:
        history = result.history
        assert history is not None
        attrs = F.static_attributes(history.family, result.series.site_code, "material_site")
        city = model.sidecar["externals"]["weather_city_by_region"].get(attrs["region"], "salvador_ba")
        ext = Externals(history.week_starts, observations).for_city(city)
        assert set(ext) == set(F.EXTERNAL_NAMES)
        expected = _reference(model, history, attrs, horizon, ext)
        np.testing.assert_array_equal(result.quantiles, expected, err_msg=str(result.series))
        moved += not np.array_equal(expected, _reference(model, history, attrs, horizon, None))
    assert moved, "no forecast depends on the externals: this test could not tell NaN from real values"


# ------------------------------------------------------------------------ one cached read per forecast call


async def test_one_external_read_per_call_cached_until_new_external_data(
    make_harness, trained_repo: Path, panel
) -> None:
    keys = sorted(panel.series, key=lambda k: (-int((panel.series[k][1] > 0).sum()), k))[:30]
    specs = [SeriesSpec(1, m, s) for m, s in keys]
    async with make_harness(trained_repo) as h:
        h.analytics.external = points_by_series(feed_records())
        first = await h.app.use_cases.forecast(specs, 0)
        modelled = [r for r in first if r.method == MODEL_METHOD]
        assert modelled and h.analytics.calls["GetExternalSeries"] == 1
        (request,) = h.analytics.external_requests
        # Every series the model was trained with (all its weather cities), whatever the call's states:
        # one cache entry then serves every call.
        assert set(request.series_ids) == {i for c in CITIES for i in F.external_series_ids(c).values()}
        assert request.grain == cpb.TIME_GRAIN_DAY
        firsts = [r.history.week_starts[0] for r in modelled]  # type: ignore[union-attr]
        assert _date(request.date_range.start) == _first_of_previous_month(min(firsts))
        assert _date(request.date_range.end) == panel.weeks[-1] + np.timedelta64(6, "D")

        again = await h.app.use_cases.forecast(specs, 0)
        assert h.analytics.calls["GetExternalSeries"] == 1  # from the cache
        assert all(np.array_equal(a.quantiles, b.quantiles) for a, b in zip(first, again, strict=True))

        # A batch of demand only: its series are re-forecast with the cached externals.
        consumer = h.app.consumer
        assert consumer is not None
        demand = rpb.Record(
            consumption=rpb.Consumption(material_code=keys[0][0], site_code=keys[0][1], quantity=1)
        )
        await consumer.process(batch_event([demand], WATERMARK))
        assert h.analytics.calls["GetExternalSeries"] == 1
        # A batch carrying an external observation makes the cached points stale on every replica.
        selic = rpb.Record(
            external_observation=rpb.ExternalObservation(
                series_id="selic.target_pct_year",
                date=cpb.Date(year=2025, month=9, day=22),
                value=15.0,
                unit="% a.a.",
                source="BCB SGS",
            )
        )
        assert await consumer.process(batch_event([selic], WATERMARK)) == []
        await h.app.use_cases.forecast(specs, 0)
        assert h.analytics.calls["GetExternalSeries"] == 2


@pytest.mark.parametrize("catalogue", ["empty", "unimplemented"])
async def test_without_external_series_features_are_nan_and_logged_once(
    make_harness, trained_repo: Path, panel, caplog: pytest.LogCaptureFixture, catalogue: str
) -> None:
    keys = sorted(panel.series, key=lambda k: (-int((panel.series[k][1] > 0).sum()), k))[:12]
    caplog.set_level(logging.WARNING, logger="services.forecast.service")
    async with make_harness(trained_repo) as h:
        h.analytics.external = {} if catalogue == "empty" else None
        results = []
        for batch in (keys[:6], keys[6:]):  # two calls; the log says it once
            results += await h.app.use_cases.forecast([SeriesSpec(1, m, s) for m, s in batch], 0)
        model = h.app.repository.serving("demand_forecast")
    assert model is not None
    warnings = [r for r in caplog.records if "holds no external series" in r.getMessage()]
    assert len(warnings) == 1 and "selic.target_pct_year" in warnings[0].getMessage()
    modelled = [r for r in results if r.method == MODEL_METHOD]
    assert modelled and not any(r.fallback for r in modelled)
    for result in modelled:
        history = result.history
        assert history is not None
        attrs = F.static_attributes(history.family, result.series.site_code, "material_site")
        horizon = result.quantiles.shape[0]
        np.testing.assert_array_equal(result.quantiles, _reference(model, history, attrs, horizon, None))
