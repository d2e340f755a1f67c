"""Forecast cache: a hit is the computed answer itself; new data, external points or model versions miss."""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from pathlib import Path
from urllib.parse import urlsplit

import grpc
import pytest
from novacorrente.forecast.v1 import forecast_pb2 as fpb
from novacorrente.forecast.v1 import forecast_pb2_grpc as fpb_grpc
from novacorrente.ingestion.v1 import records_pb2 as rpb

from services.forecast.result_cache import ResultKey
from services.kit.errors import Unavailable
from services.ports.bus import DEFAULT_EXCHANGE, Delivery, OutgoingMessage
from services.ports.bus_memory import MemoryBus, _broker_for
from tests.conftest import bearer
from tests.forecast.conftest import WATERMARK
from tests.forecast.externals_data import batch_event, feed_records, points_by_series

MODEL_METHOD = "lightgbm-quantile"


def _busiest(panel, n: int) -> list[tuple[str, str]]:
    return sorted(panel.series, key=lambda k: (-int((panel.series[k][1] > 0).sum()), k))[:n]


def _request(keys: list[tuple[str, str]], **options: object) -> fpb.ForecastRequest:
    refs = [fpb.SeriesRef(material_code=m, site_code=s) for m, s in keys]
    return fpb.ForecastRequest(series=refs, **options)  # type: ignore[arg-type]


def _computed(forecast: fpb.SeriesForecast) -> bytes:
    """The answer as computed: a served copy differs only in ``from_cache``."""
    copy = fpb.SeriesForecast()
    copy.CopyFrom(forecast)
    copy.provenance.from_cache = False
    return copy.SerializeToString()


def test_every_dependency_is_in_the_key() -> None:
    base = ResultKey(("M", "S"), (1, "M", "S", "", ""), 8, ("m", "1", "ab"), "gen1", "ext1")
    variants = [
        ResultKey(("M", "S"), (1, "M", "S", "", ""), 8, ("m", "1", "ab"), "gen2", "ext1"),
        ResultKey(("M", "S"), (1, "M", "S", "", ""), 8, ("m", "1", "ab"), "gen1", "ext2"),
        ResultKey(("M", "S"), (1, "M", "S", "", ""), 8, ("m", "2", "ab"), "gen1", "ext1"),
        ResultKey(("M", "S"), (1, "M", "S", "", ""), 8, ("m", "1", "cd"), "gen1", "ext1"),
        ResultKey(("M", "S"), (1, "M", "S", "", ""), 4, ("m", "1", "ab"), "gen1", "ext1"),
        ResultKey(("M", "S"), (1, "M", "S", "F", ""), 8, ("m", "1", "ab"), "gen1", "ext1"),
        ResultKey(("M", "T"), (1, "M", "T", "", ""), 8, ("m", "1", "ab"), "gen1", "ext1"),
    ]
    texts = {key.text("settings") for key in [base, *variants]}
    assert len(texts) == len(variants) + 1
    assert base.text("settings") != base.text("other settings")
    assert base.text("settings") == ResultKey(*[getattr(base, f) for f in base.__slots__]).text("settings")


async def test_hit_is_the_computed_answer_and_reads_nothing(
    make_harness, trained_repo: Path, panel, token_for
) -> None:
    keys = _busiest(panel, 12)
    md = bearer(token_for("viewer"))
    async with make_harness(trained_repo) as h:
        h.analytics.external = points_by_series(feed_records())
        async with grpc.aio.insecure_channel(h.address) as channel:
            stub = fpb_grpc.ForecastServiceStub(channel)
            first = await stub.Forecast(_request(keys), metadata=md)
            calls = dict(h.analytics.calls)
            second = await stub.Forecast(_request(keys), metadata=md)
            third = await stub.Forecast(_request(keys[3:5]), metadata=md)
        assert h.analytics.calls == calls  # no history, no external points read again
    assert any(f.method == MODEL_METHOD for f in first.forecasts)
    assert not any(f.provenance.from_cache for f in first.forecasts)
    assert all(f.provenance.from_cache for f in [*second.forecasts, *third.forecasts])
    for computed, served in zip(first.forecasts, second.forecasts, strict=True):
        # Byte for byte the computed answer, its generated_at (when it was computed) included.
        assert _computed(served) == computed.SerializeToString()
        assert served.provenance.generated_at == computed.provenance.generated_at
        assert served.provenance.model_version == "1" and served.provenance.data_watermark
    assert [_computed(f) for f in third.forecasts] == [f.SerializeToString() for f in first.forecasts[3:5]]


async def test_new_history_generation_or_external_points_miss(
    make_harness, trained_repo: Path, panel, token_for
) -> None:
    keys = _busiest(panel, 12)
    md = bearer(token_for("viewer"))
    async with make_harness(trained_repo) as h:
        h.analytics.external = points_by_series(feed_records())
        async with grpc.aio.insecure_channel(h.address) as channel:
            stub = fpb_grpc.ForecastServiceStub(channel)
            first = await stub.Forecast(_request(keys), metadata=md)
            modelled = [k for k, f in zip(keys, first.forecasts, strict=True) if f.method == MODEL_METHOD]
            others = [k for k in keys if k not in modelled]
            assert modelled and others

            # A batch touched one series: that one is computed again from a fresh history, the rest hit.
            await h.app.reader.invalidate([keys[0]], "seq-next")
            again = await stub.Forecast(_request(keys), metadata=md)
            assert [f.provenance.from_cache for f in again.forecasts] == [False] + [True] * (len(keys) - 1)
            assert h.analytics.history_requests[-1] == 1

            # New external points: every series is computed again (any may be modelled), histories hit.
            reads = len(h.analytics.history_requests)
            externals = h.analytics.calls["GetExternalSeries"]
            await h.app.reader.invalidate_externals("ext-next")
            after = await stub.Forecast(_request(keys), metadata=md)
            assert not any(f.provenance.from_cache for f in after.forecasts)
            assert len(h.analytics.history_requests) == reads
            assert h.analytics.calls["GetExternalSeries"] == externals + 1
            # Same data, so the same numbers, computed anew.
            assert [f.weeks for f in after.forecasts] == [f.weeks for f in first.forecasts]

            # Other options are other answers.
            short = await stub.Forecast(_request(keys[:2], horizon_weeks=3), metadata=md)
            assert not any(f.provenance.from_cache for f in short.forecasts)
            assert all(len(f.weeks) == 3 for f in short.forecasts)
            named = _request(keys[1:2])
            named.series[0].family = "EPI"
            echoed = await stub.Forecast(named, metadata=md)
            assert not echoed.forecasts[0].provenance.from_cache
            assert echoed.forecasts[0].series.family == "EPI"


async def test_new_model_version_misses(
    make_harness, trained_repo: Path, panel, token_for, tmp_path: Path
) -> None:
    keys = _busiest(panel, 6)
    repo = tmp_path / "repo"
    shutil.copytree(trained_repo, repo)
    md = bearer(token_for("viewer"))
    async with make_harness(repo) as h:
        async with grpc.aio.insecure_channel(h.address) as channel:
            stub = fpb_grpc.ForecastServiceStub(channel)
            first = await stub.Forecast(_request(keys), metadata=md)
            cached = await stub.Forecast(_request(keys), metadata=md)
            assert all(f.provenance.from_cache for f in cached.forecasts)
            # The same artefact published as version 2: same numbers, but a version is part of the answer.
            staging = repo / "demand_forecast" / ".2-staging"
            shutil.copytree(repo / "demand_forecast" / "1", staging)
            sidecar = json.loads((staging / "model.json").read_text())
            (staging / "model.json").write_text(json.dumps({**sidecar, "version": "2"}))
            staging.rename(repo / "demand_forecast" / "2")
            await h.app.repository.reload()
            assert h.app.repository.serving("demand_forecast").version == "2"  # type: ignore[union-attr]
            second = await stub.Forecast(_request(keys), metadata=md)
    served = [f for f in second.forecasts if f.provenance.model_version]
    assert served and all(f.provenance.model_version == "2" for f in served)
    assert not any(f.provenance.from_cache for f in second.forecasts)
    assert [f.weeks for f in second.forecasts] == [f.weeks for f in first.forecasts]


async def test_reforecast_leaves_answers_for_the_next_call(
    make_harness, trained_repo: Path, panel, token_for
) -> None:
    keys = _busiest(panel, 4)
    md = bearer(token_for("viewer"))
    demand = [
        rpb.Record(consumption=rpb.Consumption(material_code=m, site_code=s, quantity=1)) for m, s in keys
    ]
    async with make_harness(trained_repo) as h:
        assert h.app.consumer is not None
        (update,) = await h.app.consumer.process(batch_event(demand, WATERMARK - len(demand) + 1))
        reads = list(h.analytics.history_requests)
        async with grpc.aio.insecure_channel(h.address) as channel:
            out = await fpb_grpc.ForecastServiceStub(channel).Forecast(_request(keys), metadata=md)
        assert h.analytics.history_requests == reads  # answered from what the re-forecast computed
    assert all(f.provenance.from_cache for f in out.forecasts)
    assert [_computed(f) for f in out.forecasts] == [f.SerializeToString() for f in update.forecasts]


async def test_a_batch_survives_a_spell_of_unavailable_analytics(
    make_harness, trained_repo: Path, panel
) -> None:
    """The bus dead-letters a message after a few quick failures; the consumer waits out a short outage of
    analytics within one delivery instead, and publishes the batch's forecasts once it answers again."""
    keys = _busiest(panel, 2)
    demand = [
        rpb.Record(consumption=rpb.Consumption(material_code=m, site_code=s, quantity=1)) for m, s in keys
    ]
    event = batch_event(demand, WATERMARK - len(demand) + 1)
    async with make_harness(trained_repo) as h:
        consumer = h.app.consumer
        assert consumer is not None
        consumer.retry_delays = (0.01, 0.01, 0.01)
        real, failures = consumer._use_cases.reforecast, [2]

        async def flaky(chunk):  # type: ignore[no-untyped-def]
            if failures[0]:
                failures[0] -= 1
                raise Unavailable("analytics ListInventoryStatus failed: DEADLINE_EXCEEDED")
            return await real(chunk)

        consumer._use_cases.reforecast = flaky  # type: ignore[method-assign]
        published = []
        original = consumer.process

        async def counting(e):  # type: ignore[no-untyped-def]
            out = await original(e)
            published.extend(out)
            return out

        consumer.process = counting  # type: ignore[method-assign]
        delivery = Delivery(
            routing_key="ingestion.batch.committed",
            body=event.SerializeToString(),
            type=event.DESCRIPTOR.full_name,
            message_id="m-1",
            headers={},
            redelivered=False,
            delivery_count=1,
        )
        await consumer.handle(delivery)  # no exception: the delivery is acknowledged
        assert failures == [0] and len(published) == 1
        assert {(f.series.material_code, f.series.site_code) for f in published[0].forecasts} == set(keys)

        failures[0] = 10  # an outage longer than the retries: the delivery fails, for the bus to redeliver
        with pytest.raises(Unavailable):
            await consumer.handle(delivery)


async def test_stopping_during_a_slow_reforecast_hands_the_batch_back_within_the_grace(
    make_harness, trained_repo: Path, panel
) -> None:
    """SIGTERM while a re-forecast runs: the consumer waits the grace, cancels the delivery and returns (a
    timeout used to escape from stop() and fail the shutdown step); the batch goes back to the queue."""
    keys = _busiest(panel, 1)
    demand = [
        rpb.Record(consumption=rpb.Consumption(material_code=m, site_code=s, quantity=1)) for m, s in keys
    ]
    event = batch_event(demand, WATERMARK)
    async with make_harness(trained_repo) as h:
        consumer = h.app.consumer
        assert consumer is not None
        started, never = asyncio.Event(), asyncio.Event()

        async def stuck(chunk):  # type: ignore[no-untyped-def]
            started.set()
            await never.wait()

        consumer._use_cases.reforecast = stuck  # type: ignore[method-assign]
        bus = MemoryBus(h.bus_url)
        message = OutgoingMessage(
            "ingestion.batch.committed", event.SerializeToString(), "BatchCommitted", event.event_id
        )
        await bus.publish([message])
        await asyncio.wait_for(started.wait(), 10)
        began = time.monotonic()
        await consumer.stop()  # grace_seconds=1 in the harness
        assert time.monotonic() - began < 3
        queue = _broker_for(urlsplit(h.bus_url).netloc, DEFAULT_EXCHANGE).queues[
            h.app.settings.reforecast_queue
        ]
        assert [e.message.message_id for e in queue.ready] == [event.event_id] and not queue.dead
        await bus.close()
