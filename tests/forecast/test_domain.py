"""Domain API: reorder policies checked by hand, fallbacks, history cache, re-forecast events."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path

import grpc
import numpy as np
import pytest
from novacorrente.events.v1 import events_pb2 as epb
from novacorrente.forecast.v1 import forecast_pb2 as fpb
from novacorrente.forecast.v1 import forecast_pb2_grpc as fpb_grpc
from novacorrente.ingestion.v1 import records_pb2 as rpb

from services.forecast import features
from services.forecast.policy import quantile_atoms
from services.forecast.service import SeriesSpec
from services.ports.bus import OutgoingMessage, open_bus
from tests.conftest import bad_request_fields, bearer
from tests.forecast.conftest import WATERMARK

# Target service levels the README documents for a MEDIUM-criticality site, by material criticality.
EXPECTED_TARGET = {"high": 0.97, "medium": 0.95, "low": 0.90}


def _busiest(panel, n: int, with_leads: bool = True) -> list[tuple[str, str]]:
    keys = [k for k in panel.series if not with_leads or len(panel.lead_days.get(k[0], [])) >= 3]
    return sorted(keys, key=lambda k: (-int((panel.series[k][1] > 0).sum()), k))[:n]


def _quantile_function(levels: list[float], values: np.ndarray, u: np.ndarray) -> np.ndarray:
    """The README's reading of a forecast week: 0 at level 0, linear between levels, last slope to level 1."""
    top = values[-1] + (values[-1] - values[-2]) / (levels[-1] - levels[-2]) * (1 - levels[-1])
    return np.interp(u, [0.0, *levels, 1.0], [0.0, *values, top])


def _monte_carlo(levels, weeks: np.ndarray, lead: np.ndarray, target: float, n: int = 400_000):
    """Lead-time demand by simulation: independent of the FFT convolution in services.forecast.policy."""
    rng = np.random.default_rng(7)
    horizon = int(lead.max() // 7) + 1
    weekly = np.vstack([weeks, np.repeat(weeks[-1:], max(horizon - len(weeks), 0), axis=0)])[:horizon]
    draws = rng.random((n, horizon))
    x = np.column_stack([_quantile_function(levels, weekly[h], draws[:, h]) for h in range(horizon)])
    L = rng.choice(lead, size=n)
    full, frac = np.floor(L / 7).astype(int), (L / 7) - np.floor(L / 7)
    cols = np.arange(horizon)[None, :]
    total = (x * (cols < full[:, None])).sum(axis=1) + frac * x[np.arange(n), np.minimum(full, horizon - 1)]
    grid = np.linspace(0, 1, 20001)
    means = np.array(
        [np.trapezoid(_quantile_function(levels, weekly[h], grid), grid) for h in range(horizon)]
    )
    expected = float(
        np.mean([means[: int(v // 7)].sum() + (v / 7 - v // 7) * means[int(v // 7)] for v in lead])
    )
    return float(np.quantile(total, target)), expected


async def test_reorder_policy_hand_checked_for_three_real_materials(
    make_harness, trained_repo: Path, panel, token_for
):
    keys = _busiest(panel, 3)
    assert len({m for m, _ in keys}) == 3 or len(keys) == 3
    async with make_harness(trained_repo) as h:
        h.analytics.stock[keys[2]] = 10_000.0
        md = bearer(token_for("planner"))
        async with grpc.aio.insecure_channel(h.address) as channel:
            stub = fpb_grpc.ForecastServiceStub(channel)
            refs = [fpb.SeriesRef(material_code=m, site_code=s) for m, s in keys]
            forecasts = (await stub.Forecast(fpb.ForecastRequest(series=refs), metadata=md)).forecasts
            policies = (
                await stub.GetReorderPolicy(fpb.ReorderPolicyRequest(series=refs), metadata=md)
            ).policies
    today = dt.datetime.now(dt.UTC).date()
    for key, forecast, policy in zip(keys, forecasts, policies, strict=True):
        levels = [q.level for q in forecast.weeks[0].quantiles]
        weeks = np.array([[q.value for q in w.quantiles] for w in forecast.weeks])
        lead, scope = h.analytics.lead_sample(key[0])
        family = panel.series[key][0]
        target = EXPECTED_TARGET[features.criticality_for_family(family)]
        d = policy.decomposition
        assert d.service_target == target and d.service_target_source == "criticality"
        assert d.lead_time_observations == len(lead) and d.lead_time_scope == scope
        assert d.lead_time_mean_days == pytest.approx(np.mean(lead))
        assert d.lead_time_p90_days == pytest.approx(np.quantile(lead, 0.9))
        rop, expected = _monte_carlo(levels, weeks, np.asarray(lead), target)
        assert policy.reorder_point == pytest.approx(rop, rel=0.03, abs=0.5), key
        assert d.expected_lead_time_demand == pytest.approx(expected, rel=0.01, abs=0.01), key
        assert policy.safety_stock == pytest.approx(policy.reorder_point - d.expected_lead_time_demand)
        assert d.demand_part + d.lead_time_variability_part == pytest.approx(policy.safety_stock)
        assert (
            policy.provenance.model_version == "1" and policy.provenance.data_watermark == f"seq:{WATERMARK}"
        )
        daily = (
            float(
                np.mean(
                    [
                        np.trapezoid(
                            _quantile_function(levels, w, np.linspace(0, 1, 20001)), np.linspace(0, 1, 20001)
                        )
                        for w in weeks
                    ]
                )
            )
            / 7
        )
        if key == keys[2]:
            assert policy.stock_position_known and policy.stock_position_note
            assert policy.stock_position == 10_000.0 and policy.suggested_order_quantity == 0.0
            cover = min(10_000.0 / daily, 3650.0) if daily > 0 else 3650.0
            assert policy.days_of_cover == pytest.approx(cover, rel=0.01)
        else:
            # No stock records: the answer says the position is unknown rather than passing 0 off as real.
            assert not policy.stock_position_known and "taken as 0" in policy.stock_position_note
            assert policy.stock_position == 0.0 and policy.days_of_cover == 0.0
            assert policy.suggested_order_quantity == pytest.approx(policy.order_up_to)
            # Dated as of the data the numbers describe: the end of the history (the first forecast
            # week), or today when the history reaches the current week.
            first_week = forecast.weeks[0].week_start
            as_of = min(today, dt.date(first_week.year, first_week.month, first_week.day))
            order = policy.suggested_order_date
            assert dt.date(order.year, order.month, order.day) == as_of
            assert policy.order_up_to == pytest.approx(policy.reorder_point + 14 * daily, rel=0.02)


async def test_service_level_override_and_validation(
    make_harness, trained_repo: Path, panel, token_for
) -> None:
    key = _busiest(panel, 1)[0]
    async with make_harness(trained_repo) as h:
        async with grpc.aio.insecure_channel(h.address) as channel:
            stub = fpb_grpc.ForecastServiceStub(channel)
            md = bearer(token_for("viewer"))
            ref = fpb.SeriesRef(material_code=key[0], site_code=key[1])
            low = await stub.GetReorderPolicy(
                fpb.ReorderPolicyRequest(series=[ref], service_level=0.5), metadata=md
            )
            high = await stub.GetReorderPolicy(
                fpb.ReorderPolicyRequest(series=[ref], service_level=0.99), metadata=md
            )
            assert low.policies[0].decomposition.service_target_source == "request"
            assert low.policies[0].reorder_point <= high.policies[0].reorder_point
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await stub.GetReorderPolicy(
                    fpb.ReorderPolicyRequest(series=[ref], service_level=1.5), metadata=md
                )
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await stub.Forecast(fpb.ForecastRequest(series=[ref], horizon_weeks=99), metadata=md)
            assert (
                info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
                and "horizon_weeks" in info.value.details()
            )


async def test_fallback_is_flagged(make_harness, trained_repo: Path, panel, token_for) -> None:
    key = _busiest(panel, 1)[0]
    short = ("SHORT-1", key[1])
    md = bearer(token_for("viewer"))
    refs = [
        fpb.SeriesRef(material_code=key[0], site_code=key[1]),
        fpb.SeriesRef(material_code=short[0], site_code=short[1]),
        fpb.SeriesRef(material_code="NEVER-SEEN", site_code="NOWHERE"),
    ]
    async with make_harness(None) as h:  # no model at all
        async with grpc.aio.insecure_channel(h.address) as channel:
            out = await fpb_grpc.ForecastServiceStub(channel).Forecast(
                fpb.ForecastRequest(series=refs[:1]), metadata=md
            )
        f = out.forecasts[0]
        assert f.fallback and "no version of model 'demand_forecast' is loaded" in f.fallback_reason
        assert f.method == "tsb" and f.provenance.model_version == "" and len(f.weeks) == 8
        assert all(w.quantiles[-1].value > 0 for w in f.weeks)
    async with make_harness(trained_repo) as h:
        h.analytics.overrides[short] = np.array([0, 3, 0, 0, 2], dtype=float)
        async with grpc.aio.insecure_channel(h.address) as channel:
            out = await fpb_grpc.ForecastServiceStub(channel).Forecast(
                fpb.ForecastRequest(series=refs), metadata=md
            )
    main, short_answer, unknown = out.forecasts
    assert not main.fallback and main.provenance.model_version == "1"
    # Five weeks since its first demand, but counted from the training window's first week, as training
    # counted every series: no short history for the model.
    assert "fewer than" not in short_answer.fallback_reason
    assert (
        unknown.fallback
        and unknown.method == "zero"
        and all(q.value == 0 for q in unknown.weeks[0].quantiles)
    )
    weeks = panel.weeks.size
    async with make_harness(trained_repo, min_history_weeks=weeks + 1) as h:
        h.analytics.overrides[short] = np.array([0, 3, 0, 0, 2], dtype=float)
        async with grpc.aio.insecure_channel(h.address) as channel:
            out = await fpb_grpc.ForecastServiceStub(channel).Forecast(
                fpb.ForecastRequest(series=refs[1:2]), metadata=md
            )
    (fallback,) = out.forecasts
    assert (
        fallback.fallback and f"history has {weeks} weeks, fewer than {weeks + 1}" in fallback.fallback_reason
    )
    assert fallback.method == "tsb"


async def test_batch_event_invalidates_cache_and_publishes_forecasts(
    make_harness, trained_repo: Path, panel, token_for
) -> None:
    keys = _busiest(panel, 2)
    md = bearer(token_for("viewer"))
    async with make_harness(trained_repo) as h:
        bus = await open_bus(h.bus_url)
        received: asyncio.Queue[epb.ForecastsUpdated] = asyncio.Queue()

        async def on_update(delivery) -> None:  # type: ignore[no-untyped-def]
            assert delivery.type == "novacorrente.events.v1.ForecastsUpdated"
            await received.put(epb.ForecastsUpdated.FromString(delivery.body))

        sub = await bus.subscribe("test.forecasts", ["forecast.forecasts.updated"], on_update)
        ref = fpb.SeriesRef(material_code=keys[0][0], site_code=keys[0][1])
        async with grpc.aio.insecure_channel(h.address) as channel:
            stub = fpb_grpc.ForecastServiceStub(channel)
            first = await stub.Forecast(fpb.ForecastRequest(series=[ref]), metadata=md)
            again = await stub.Forecast(fpb.ForecastRequest(series=[ref]), metadata=md)
            assert h.analytics.calls["GetSeriesHistory"] == 1  # second answer from the cache
            assert [w.quantiles[0].value for w in first.forecasts[0].weeks] == [
                w.quantiles[0].value for w in again.forecasts[0].weeks
            ]
            batch = epb.BatchCommitted(
                event_id="evt-1", batch_id="b-1", sequence_from=1, sequence_to=WATERMARK
            )
            for i, (material, site) in enumerate(keys):
                batch.records.add(
                    sequence=i + 1,
                    record=rpb.Record(
                        consumption=rpb.Consumption(material_code=material, site_code=site, quantity=1)
                    ),
                )
            await bus.publish(
                [
                    OutgoingMessage(
                        "ingestion.batch.committed", batch.SerializeToString(), "BatchCommitted", "evt-1"
                    )
                ]
            )
            update = await asyncio.wait_for(received.get(), 20)
            assert update.trigger_batch_id == "b-1"
            assert [(f.series.material_code, f.series.site_code) for f in update.forecasts] == keys
            assert len(update.policies) == 2 and all(
                p.reorder_point >= p.safety_stock for p in update.policies
            )
            # The batch made the cached history stale: the re-forecast read both series again, in one call,
            # and left fresh entries that the next request uses.
            assert h.analytics.history_requests == [1, 2]
            await stub.Forecast(fpb.ForecastRequest(series=[ref]), metadata=md)
            assert h.analytics.history_requests == [1, 2]
        await sub.stop()
        await bus.close()


async def test_material_level_and_list_models(make_harness, trained_repo: Path, panel, token_for) -> None:
    material = _busiest(panel, 1)[0][0]
    md = bearer(token_for("viewer"))
    async with make_harness(trained_repo) as h:
        async with grpc.aio.insecure_channel(h.address) as channel:
            stub = fpb_grpc.ForecastServiceStub(channel)
            ref = fpb.SeriesRef(level=fpb.AGGREGATION_LEVEL_MATERIAL, material_code=material)
            out = await stub.Forecast(fpb.ForecastRequest(series=[ref], horizon_weeks=2), metadata=md)
            models = await stub.ListModels(fpb.ListModelsRequest(), metadata=md)
    f = out.forecasts[0]
    assert len(f.weeks) == 2 and f.unit == panel.units[material] and not f.fallback
    assert all(
        [q.value for q in w.quantiles] == sorted(q.value for q in w.quantiles) for w in f.weeks
    )  # non-crossing
    info = models.models[0]
    assert info.serving and info.state == "ready" and info.version == "1" and list(info.quantiles)
    assert info.feature_spec_version == features.FEATURE_SPEC_VERSION and info.metrics_json


async def test_days_of_cover_divide_by_the_methods_own_weekly_mean(make_harness, token_for) -> None:
    """An intermittent method's mean counts the rare lumps its top quantile level cuts off: cover and the
    order date use that mean (the one Forecast reports), not the mean read back from the quantiles."""
    key = ("LUMPY-1", "SITE-1")
    weekly = np.zeros(30)
    weekly[[2, 9, 15, 22, 27]] = [2, 3, 2, 40, 2]
    md = bearer(token_for("planner"))
    ref = fpb.SeriesRef(material_code=key[0], site_code=key[1])
    async with make_harness(None) as h:  # no model: the TSB fallback
        h.analytics.overrides[key] = weekly
        h.analytics.stock[key] = 20.0
        async with grpc.aio.insecure_channel(h.address) as channel:
            stub = fpb_grpc.ForecastServiceStub(channel)
            forecast = (await stub.Forecast(fpb.ForecastRequest(series=[ref]), metadata=md)).forecasts[0]
            policy = (
                await stub.GetReorderPolicy(fpb.ReorderPolicyRequest(series=[ref]), metadata=md)
            ).policies[0]
    assert forecast.method == "tsb"
    daily = float(np.mean([w.mean for w in forecast.weeks])) / 7
    levels = [q.level for q in forecast.weeks[0].quantiles]
    values = np.array([[q.value for q in w.quantiles] for w in forecast.weeks])
    # The lump lies above the top level: the mean read back from the quantiles is far lower.
    assert daily > 2 * quantile_atoms(levels, values).mean() / 7
    assert policy.stock_position == 20.0 and policy.days_of_cover == pytest.approx(20.0 / daily)
    assert policy.stock_position > policy.reorder_point
    first_week = forecast.weeks[0].week_start
    as_of = min(dt.datetime.now(dt.UTC).date(), dt.date(first_week.year, first_week.month, first_week.day))
    order = policy.suggested_order_date
    days = (policy.stock_position - policy.reorder_point) / daily
    assert dt.date(order.year, order.month, order.day) == as_of + dt.timedelta(days=int(days))


@pytest.mark.parametrize("days", [float("nan"), float("inf"), -float("inf"), -1.0, 365.5, 1e12])
async def test_review_period_must_be_finite_and_at_most_a_year(
    make_harness, panel, token_for, days: float
) -> None:
    key = _busiest(panel, 1)[0]
    ref = fpb.SeriesRef(material_code=key[0], site_code=key[1])
    async with make_harness(None) as h:
        async with grpc.aio.insecure_channel(h.address) as channel:
            stub = fpb_grpc.ForecastServiceStub(channel)
            request = fpb.ReorderPolicyRequest(series=[ref], review_period_days=days)
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await stub.GetReorderPolicy(request, metadata=bearer(token_for("viewer")))
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert bad_request_fields(info.value) == ["review_period_days"]
            # The longest accepted period is computed.
            request = fpb.ReorderPolicyRequest(series=[ref], review_period_days=365.0)
            policy = (await stub.GetReorderPolicy(request, metadata=bearer(token_for("viewer")))).policies[0]
            assert np.isfinite(policy.order_up_to)


async def test_aggregate_histories_end_at_the_last_complete_week(make_harness, trained_repo: Path, panel):
    """Analytics' weekly demand series runs into the week holding the last day of data; a material total is
    forecast from the same origin as its material x site series: the last complete week."""
    key = _busiest(panel, 1)[0]
    async with make_harness(trained_repo) as h:
        h.analytics.partial_week = 1000.0  # a week in progress, ending on a Wednesday
        total, site = await h.app.use_cases.forecast([SeriesSpec(2, key[0]), SeriesSpec(1, *key)], 2)
    last = panel.weeks[-1]
    assert total.history is not None and total.history.last_week == last
    np.testing.assert_array_equal(total.history.weekly, panel.materials[key[0]][1])
    assert total.week_starts == site.week_starts
    assert total.week_starts[0] == dt.date.fromisoformat(str(last)) + dt.timedelta(days=7)
