"""Losing the read model (or starting a new replica) rebuilds it from ingestion's export, with the same
answers; every replica consumes every event on a queue of its own."""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from pathlib import Path
from typing import Any

import pytest
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2, health_pb2_grpc
from novacorrente.analytics.v1 import analytics_pb2 as a
from novacorrente.common.v1 import common_pb2 as c

from services.kit.errors import Unavailable
from services.ports.bus import open_bus
from tests.analytics.analytics_data import (
    Sequencer,
    consumption_record,
    forecast_event,
    line_key_of,
    snapshot,
)
from tests.analytics.conftest import Replica, World, eventually

ONE_SERIES = c.Filter(material_codes=["010932"], site_codes=["ALMOX-BA"])


def _stable(message: Message) -> bytes:
    """The answer without the parts that say when and how it was served."""
    copy = type(message)()
    copy.CopyFrom(message)
    if "provenance" in copy.DESCRIPTOR.fields_by_name:
        copy.provenance.ClearField("generated_at")  # type: ignore[attr-defined]
        copy.provenance.from_cache = False  # type: ignore[attr-defined]
    return copy.SerializeToString(deterministic=True)


async def _answers(replica: Replica) -> list[bytes]:
    md = replica.md()
    s = replica.stub
    family = c.Filter(families=["EPI"], date_range=c.DateRange(start=c.Date(year=2025, month=1, day=1)))
    calls = [
        s.GetKpis(a.GetKpisRequest(), metadata=md),
        s.GetKpis(a.GetKpisRequest(filter=family), metadata=md),
        s.GetDemandSeries(a.GetDemandSeriesRequest(filter=family, grain=c.TIME_GRAIN_DAY), metadata=md),
        s.GetSeriesHistory(
            a.GetSeriesHistoryRequest(
                series=[
                    a.SeriesKey(material_code="010932", site_code="ALMOX-BA"),
                    a.SeriesKey(material_code="010323", site_code="N/A"),
                ]
            ),
            metadata=md,
        ),
        s.GetDemandSeries(
            a.GetDemandSeriesRequest(filter=ONE_SERIES, grain=c.TIME_GRAIN_WEEK, include_forecast=True),
            metadata=md,
        ),
        s.ListInventoryStatus(a.ListInventoryStatusRequest(), metadata=md),
        s.GetLeadTimes(a.GetLeadTimesRequest(filter=c.Filter(material_codes=["010323"])), metadata=md),
        s.ListMaterials(a.ListMasterDataRequest(page=c.PageRequest(page_size=1000)), metadata=md),
        s.ListSuppliers(a.ListMasterDataRequest(query="a"), metadata=md),
        s.GetWatermark(a.GetWatermarkRequest(), metadata=md),
    ]
    return [_stable(await call) for call in calls]


def _forecast_version(replica: Replica) -> object:
    """The read model's watermark of forecasts: the newest generated_at applied, in microseconds."""
    return replica.app.service.model.watermarks.lookup()[1].get("forecast")


async def _feed(world: World, rows, real_records) -> None:  # type: ignore[no-untyped-def]
    await world.commit(real_records[:2500])
    await world.commit(real_records[2500:])
    target = next(i for i, r in enumerate(rows) if r.material == "010323")
    corrected = consumption_record(rows[target], line_key_of(rows, target))
    corrected.consumption.site_code = "ALMOX-BA"  # a correction that moves a line to another site
    await world.commit([corrected], supersedes=True)
    await world.commit(
        [snapshot("010932", "ALMOX-BA", v, dt.date(2025, 3, d)) for d, v in ((1, 9.0), (15, 2.0), (29, 0.0))]
    )


async def test_deleting_the_read_model_and_restarting_rebuilds_identical_answers(
    world: World, rows, real_records, tmp_path
) -> None:
    await world.start_export()
    path = tmp_path / "analytics.duckdb"
    # The alert store (alerts and the forecast journal) is not the read model: it survives the deletion.
    stores = {"duckdb_path": str(path), "alerts_duckdb_path": str(tmp_path / "alerts.duckdb")}
    first = await world.replica(ingestion_target=world.export_target, **stores)
    await _feed(world, rows, real_records)
    # Forecasts come from the bus only, not from the export: the rebuild replays them from the journal.
    weeks = [(dt.date(2025, 3, 3) + dt.timedelta(weeks=i), 0.0, 2.0 + i, 6.0 + i) for i in range(4)]
    for generated, shift in (
        (dt.datetime(2025, 3, 1, tzinfo=dt.UTC), 0.0),
        (dt.datetime(2025, 3, 8, tzinfo=dt.UTC), 1.0),
    ):
        event = forecast_event(
            "010932",
            "ALMOX-BA",
            [(w, lo, mid + shift, hi + shift) for w, lo, mid, hi in weeks],
            generated_at=generated,
            safety_stock=3.0 + shift,
            reorder_point=8.0 + shift,
            order_up_to=14.0,
            lead_time_mean_days=9.5,
        )
        await world.publish(event)
        stamp = int(generated.timestamp() * 1_000_000)
        await eventually(lambda v=stamp: _forecast_version(first) == v)
    before = await _answers(first)
    band = a.GetDemandSeriesResponse.FromString(before[4])
    assert any(p.forecast for p in band.points), "the series answer carries no forecast band"
    watermarks_before = first.app.service.model.watermarks.lookup()
    dims_before, kinds_before = dict(watermarks_before[0]), dict(watermarks_before[1])
    await world.stop(first)

    for leftover in tmp_path.glob("analytics.duckdb*"):
        leftover.unlink()
    rebuilt = await world.replica(ingestion_target=world.export_target, **stores)
    assert world.export is not None and world.export.calls[-1] == 0  # a full rebuild from the start
    assert not rebuilt.app.service.model.forecast_replay_pending
    assert rebuilt.app.service.model.applied_seq == world.sequencer.watermark
    assert await _answers(rebuilt) == before
    # Same records in the same order give the same cache-key watermarks: replicas share cache entries.
    dims_after, kinds_after = rebuilt.app.service.model.watermarks.lookup()
    assert dict(dims_after) == dims_before and dict(kinds_after) == kinds_before


async def test_a_restarted_replica_catches_up_only_what_it_missed(
    world: World, real_records, tmp_path
) -> None:
    await world.start_export()
    path = tmp_path / "analytics.duckdb"
    first = await world.replica(duckdb_path=str(path), ingestion_target=world.export_target)
    await world.commit(real_records[:3000])
    await world.stop(first)
    world.sequencer.commit(real_records[3000:])  # committed while the replica was down
    again = await world.replica(duckdb_path=str(path), ingestion_target=world.export_target)
    assert world.export is not None and world.export.calls[-1] == 3000
    assert again.app.service.model.applied_seq == world.sequencer.watermark


async def test_a_new_replica_is_not_ready_until_it_caught_up(world: World, real_records) -> None:
    world.sequencer.commit(real_records)
    replica = await world.replica(ingestion_target="127.0.0.1:1", wait=False)  # ingestion unreachable
    health = health_pb2_grpc.HealthStub(replica.channel)
    answer = await health.Check(health_pb2.HealthCheckRequest(service=""))
    assert answer.status == health_pb2.HealthCheckResponse.NOT_SERVING
    assert not replica.app.service.caught_up


async def test_every_replica_consumes_every_event_on_its_own_queue(world: World, real_records) -> None:
    one = await world.replica(replica_id="pod-a")
    two = await world.replica(replica_id="pod-b")
    assert one.app.read_model_queue == "analytics.readmodel.pod-a"
    assert two.app.read_model_queue == "analytics.readmodel.pod-b"
    await world.commit(real_records[:1500])
    await world.commit(real_records[1500:])
    assert one.app.service.model.applied_seq == two.app.service.model.applied_seq == world.sequencer.watermark
    assert await _answers(one) == await _answers(two)


@pytest.mark.integration
async def test_replicas_on_rabbitmq_each_get_every_event(jwt_key, tmp_path, amqp_url, real_records) -> None:  # type: ignore[no-untyped-def]
    world = World(jwt_key=jwt_key, tmp_path=tmp_path, bus_url=amqp_url)
    world.buses.append(await open_bus(amqp_url, exchange=f"analytics-test-{uuid.uuid4().hex[:8]}"))
    try:
        one = await world.replica()
        two = await world.replica()
        await world.commit(real_records[:2000])
        await world.commit(real_records[2000:])
        await world.publish(world.sequencer.commit(real_records[:1]))
        await eventually(lambda: one.app.service.model.applied_seq == two.app.service.model.applied_seq)
        await world.settled()
        forecast = forecast_event(
            "010932", "ALMOX-BA", [(dt.date(2025, 11, 3), 1, 2, 3)], generated_at=dt.datetime.now(dt.UTC)
        )
        await world.publish(forecast)
        await eventually(
            lambda: all(r.app.service.model.watermarks.lookup()[1].get("forecast") for r in (one, two))
        )
    finally:
        await world.close()


async def test_a_replaced_ingestion_log_is_detected_and_rebuilt_from(
    world: World, real_records, tmp_path
) -> None:
    """Sequence numbers restart when ingestion's database is replaced: the read model notices (the record
    with sequence 1 belongs to another batch) and rebuilds, and no answer of the old log is served."""
    from tests.analytics.analytics_data import Sequencer

    await world.start_export()
    path = tmp_path / "analytics.duckdb"
    replica = await world.replica(duckdb_path=str(path), ingestion_target=world.export_target)
    await world.commit(real_records)
    request = a.GetKpisRequest(names=["demand_lines"])
    assert (await replica.stub.GetKpis(request, metadata=replica.md())).kpis[0].value == 4188

    world.sequencer = Sequencer()  # a new, empty ingestion database...
    assert world.export is not None
    world.export.log = world.sequencer.log
    await world.publish(world.sequencer.commit(real_records[:1000]))  # ...that starts numbering at 1 again
    await eventually(lambda: replica.app.service.model.applied_seq == world.sequencer.watermark)
    lines = sum(1 for r in real_records[:1000] if r.HasField("consumption"))
    answer = await replica.stub.GetKpis(request, metadata=replica.md())
    assert answer.kpis[0].value == lines and not answer.provenance.from_cache

    await world.stop(replica)
    world.sequencer = Sequencer()  # replaced again while the replica was down
    world.export.log = world.sequencer.log
    world.sequencer.commit(real_records[:500])
    again = await world.replica(duckdb_path=str(path), ingestion_target=world.export_target)
    answer = await again.stub.GetKpis(request, metadata=again.md())
    assert answer.kpis[0].value == sum(1 for r in real_records[:500] if r.HasField("consumption"))


async def test_forecasts_are_applied_while_the_journal_is_down_and_journaled_after(world: World) -> None:
    """A journal outage must not fail the delivery: after the bus's delivery limit that would dead-letter
    the forecast. It is applied at once and journaled when the store answers again."""
    replica = await world.replica()
    service = replica.app.service
    service.limits = dataclasses.replace(service.limits, journal_retry_seconds=0.01)
    keep = service.alerts.keep_forecasts
    outage = {"left": 5}

    async def flaky(event_id: str, body: bytes) -> None:
        if outage["left"]:
            outage["left"] -= 1
            raise Unavailable("alert store unavailable: ConnectionRefusedError")
        await keep(event_id, body)

    service.alerts.keep_forecasts = flaky  # type: ignore[method-assign]
    generated = dt.datetime(2025, 3, 1, tzinfo=dt.UTC)
    event = forecast_event(
        "010932", "ALMOX-BA", [(dt.date(2025, 3, 3), 0.0, 2.0, 5.0)], generated_at=generated
    )
    await world.publish(event)
    await eventually(lambda: _forecast_version(replica) == int(generated.timestamp() * 1_000_000))
    await eventually(lambda: not outage["left"] and not service._unjournaled)
    assert [body async for body in service.alerts.kept_forecasts()] == [event.SerializeToString()]


async def _journaled_forecast_then_lost_read_model(
    world: World, real_records: list[Any], tmp_path: Path
) -> tuple[dict[str, str], int]:
    """A replica with no export applies records and one forecast (journaled), stops, and loses its read
    model file; returns the stores to start the next replica with and the forecast's version."""
    stores = {"duckdb_path": str(tmp_path / "analytics.duckdb"), "alerts_duckdb_path": str(tmp_path / "a.db")}
    first = await world.replica(**stores)
    await world.commit(real_records[:500])
    generated = dt.datetime(2025, 3, 1, tzinfo=dt.UTC)
    week = (dt.date(2025, 3, 3), 0.0, 2.0, 5.0)
    await world.publish(forecast_event("010932", "ALMOX-BA", [week], generated_at=generated))
    stamp = int(generated.timestamp() * 1_000_000)
    await eventually(lambda: _forecast_version(first) == stamp)
    await world.stop(first)
    (tmp_path / "analytics.duckdb").unlink()
    return stores, stamp


async def test_without_an_export_a_new_read_model_replays_the_journal_at_its_first_batch(
    world: World, real_records, tmp_path
) -> None:
    stores, stamp = await _journaled_forecast_then_lost_read_model(world, real_records, tmp_path)

    again = await world.replica(**stores)  # no export: nothing to catch up from
    assert again.app.service.model.forecast_replay_pending
    world.sequencer = Sequencer()  # the embedded profile's ingestion starts over with its own new file
    await world.commit(real_records[:100])  # settled once the records are in; the replay follows them
    model = again.app.service.model
    await eventually(lambda: _forecast_version(again) == stamp and not model.forecast_replay_pending)


async def test_the_replay_waits_for_materials_and_for_the_journal_without_failing_a_batch(
    world: World, real_records, tmp_path
) -> None:
    stores, stamp = await _journaled_forecast_then_lost_read_model(world, real_records, tmp_path)

    again = await world.replica(**stores)
    service, model = again.app.service, again.app.service.model
    world.sequencer = Sequencer()
    lines_only = [r for r in real_records if r.HasField("consumption")][:50]
    await world.commit(lines_only)  # no material yet: nothing to file the forecasts under
    assert model.forecast_replay_pending and _forecast_version(again) is None

    kept = service.alerts.kept_forecasts

    def unreachable(page_size: int = 200) -> Any:
        raise Unavailable("alert store unavailable: ConnectionRefusedError")

    service.alerts.kept_forecasts = unreachable  # type: ignore[method-assign]
    await world.commit(real_records[:300])  # applied even though the journal cannot be read
    assert model.applied_seq == world.sequencer.watermark and model.forecast_replay_pending

    service.alerts.kept_forecasts = kept  # type: ignore[method-assign]
    await world.commit(real_records[300:400])
    await eventually(lambda: _forecast_version(again) == stamp and not model.forecast_replay_pending)
