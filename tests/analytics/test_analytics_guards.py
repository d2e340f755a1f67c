"""Guards: paging and range caps, argument errors naming the field, roles, deadlines that interrupt DuckDB."""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest
from novacorrente.analytics.v1 import analytics_pb2 as a
from novacorrente.common.v1 import common_pb2 as c

from services.analytics.engine import DuckEngine, QueryCancelled
from services.kit.errors import DeadlineExceeded
from tests.analytics.conftest import Replica, World
from tests.conftest import bad_request_fields


async def _invalid(call) -> list[str]:  # type: ignore[no-untyped-def]
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    return bad_request_fields(caught.value)


@pytest.fixture
async def replica(world: World, real_records) -> Replica:  # type: ignore[no-untyped-def]
    replica = await world.replica(max_range_days=400, max_series_per_call=3)
    await world.commit(real_records[:800])
    return replica


async def test_page_size_above_the_maximum_is_refused(replica: Replica) -> None:
    md = replica.md()
    big = c.PageRequest(page_size=1001)
    assert await _invalid(replica.stub.ListMaterials(a.ListMasterDataRequest(page=big), metadata=md)) == [
        "page.page_size"
    ]
    assert await _invalid(
        replica.stub.ListInventoryStatus(a.ListInventoryStatusRequest(page=big), metadata=md)
    )
    assert await _invalid(replica.stub.ListAlerts(a.ListAlertsRequest(page=big), metadata=md))
    ok = await replica.stub.ListMaterials(
        a.ListMasterDataRequest(page=c.PageRequest(page_size=1000)), metadata=md
    )
    assert len(ok.materials) <= 1000


async def test_page_tokens_belong_to_their_request(replica: Replica) -> None:
    md = replica.md()
    first = await replica.stub.ListMaterials(
        a.ListMasterDataRequest(page=c.PageRequest(page_size=10)), metadata=md
    )
    token = first.page.next_page_token
    assert token
    fields = await _invalid(
        replica.stub.ListMaterials(
            a.ListMasterDataRequest(query="cabo", page=c.PageRequest(page_size=10, page_token=token)),
            metadata=md,
        )
    )
    assert fields == ["page.page_token"]
    assert await _invalid(
        replica.stub.ListMaterials(
            a.ListMasterDataRequest(page=c.PageRequest(page_token="garbage!")), metadata=md
        )
    ) == ["page.page_token"]


async def test_date_ranges_are_checked_and_capped(replica: Replica) -> None:
    md = replica.md()
    long = c.Filter(
        date_range=c.DateRange(start=c.Date(year=2020, month=1, day=1), end=c.Date(year=2025, month=1, day=1))
    )
    assert await _invalid(replica.stub.GetKpis(a.GetKpisRequest(filter=long), metadata=md)) == [
        "filter.date_range"
    ]
    backwards = c.Filter(
        date_range=c.DateRange(start=c.Date(year=2025, month=2, day=1), end=c.Date(year=2025, month=1, day=1))
    )
    assert await _invalid(
        replica.stub.GetDemandSeries(a.GetDemandSeriesRequest(filter=backwards), metadata=md)
    )
    bad_day = c.Filter(date_range=c.DateRange(start=c.Date(year=2025, month=2, day=30)))
    assert await _invalid(
        replica.stub.GetDemandSeries(a.GetDemandSeriesRequest(filter=bad_day), metadata=md)
    ) == ["filter.date_range.start"]
    # An open-ended range is capped once resolved against the data.
    open_ended = c.Filter(date_range=c.DateRange(start=c.Date(year=2019, month=1, day=1)))
    assert await _invalid(
        replica.stub.GetDemandSeries(
            a.GetDemandSeriesRequest(filter=open_ended, grain=c.TIME_GRAIN_DAY), metadata=md
        )
    ) == ["filter.date_range"]


async def test_other_arguments_name_their_field(replica: Replica) -> None:
    md = replica.md()
    assert await _invalid(
        replica.stub.GetKpis(a.GetKpisRequest(names=["total_demand", "happiness"]), metadata=md)
    ) == ["names[1]"]
    keys = [a.SeriesKey(material_code="m", site_code="s")] * 4
    assert await _invalid(
        replica.stub.GetSeriesHistory(a.GetSeriesHistoryRequest(series=keys), metadata=md)
    ) == ["series"]
    assert await _invalid(
        replica.stub.GetSeriesHistory(
            a.GetSeriesHistoryRequest(series=[a.SeriesKey(material_code="m")]), metadata=md
        )
    ) == ["series[0].site_code"]
    assert await _invalid(
        replica.stub.AcknowledgeAlert(a.AlertActionRequest(), metadata=replica.md("planner"))
    ) == ["alert_id"]
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await replica.stub.ResolveAlert(a.AlertActionRequest(alert_id="nope"), metadata=replica.md("planner"))
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as unknown_series:
        await replica.stub.GetExternalSeries(a.GetExternalSeriesRequest(series_ids=["nope"]), metadata=md)
    assert unknown_series.value.code() == grpc.StatusCode.NOT_FOUND


async def test_roles(replica: Replica) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as anonymous:
        await replica.stub.GetWatermark(a.GetWatermarkRequest())
    assert anonymous.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.aio.AioRpcError) as ingestor:
        await replica.stub.GetKpis(a.GetKpisRequest(), metadata=replica.md("ingestor"))
    assert ingestor.value.code() == grpc.StatusCode.PERMISSION_DENIED
    for role in ("viewer", "planner", "admin"):
        answer = await replica.stub.GetWatermark(a.GetWatermarkRequest(), metadata=replica.md(role))
        assert answer.data_watermark == f"seq:{answer.sequence}" and answer.sequence > 0


SLOW = "SELECT count(*) FROM range(100000000000) t(x) WHERE x % 7 = 3"


async def test_a_cancelled_query_is_interrupted_and_frees_its_thread() -> None:
    engine = DuckEngine(":memory:", read_workers=1)
    try:

        def slow(job):  # type: ignore[no-untyped-def]
            return job.cursor.execute(SLOW).fetchall()

        started = time.perf_counter()
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(engine.read(slow), 0.2)
        # The single read thread is free again at once: the query was interrupted, not abandoned.
        answer = await asyncio.wait_for(
            engine.read(lambda job: job.cursor.execute("SELECT 42").fetchall()), 2.0
        )
        assert answer == [(42,)]
        assert time.perf_counter() - started < 2.0

        task = asyncio.create_task(engine.read(slow))
        await asyncio.sleep(0.1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await asyncio.wait_for(engine.read(lambda job: job.cursor.execute("SELECT 1").fetchall()), 2.0)
        with pytest.raises(QueryCancelled):
            engine.run_sync(lambda job: (job._running.cancel(), job.check()))  # cancelled between statements
    finally:
        await engine.close()


async def test_the_callers_deadline_bounds_the_query(replica: Replica) -> None:
    service = replica.app.service

    def slow(job):  # type: ignore[no-untyped-def]
        return job.cursor.execute(SLOW).fetchall()

    started = time.perf_counter()
    with pytest.raises(DeadlineExceeded):
        await service._run(slow, 0.2)
    assert time.perf_counter() - started < 1.5
    with pytest.raises(grpc.aio.AioRpcError) as late:
        await replica.stub.GetKpis(a.GetKpisRequest(), metadata=replica.md(), timeout=0.001)
    assert late.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    # The replica serves normally afterwards.
    assert (await replica.stub.GetKpis(a.GetKpisRequest(names=["demand_lines"]), metadata=replica.md())).kpis


async def test_a_call_whose_deadline_passes_interrupts_its_query(
    world: World, real_records, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    replica = await world.replica(
        query_workers=1
    )  # one read thread: a query left running would block the next
    await world.commit(real_records[:500])
    from services.analytics import queries

    original = queries.demand_series

    def slow_series(job, s, grain):  # type: ignore[no-untyped-def]
        if s.materials == ("slow",):
            job.cursor.execute(SLOW).fetchall()
        return original(job, s, grain)

    monkeypatch.setattr(queries, "demand_series", slow_series)
    started = time.perf_counter()
    with pytest.raises(grpc.aio.AioRpcError) as late:
        await replica.stub.GetDemandSeries(
            a.GetDemandSeriesRequest(filter=c.Filter(material_codes=["slow"])),
            metadata=replica.md(),
            timeout=0.3,
        )
    assert late.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    answer = await replica.stub.GetDemandSeries(
        a.GetDemandSeriesRequest(filter=c.Filter(material_codes=["010323"])), metadata=replica.md(), timeout=5
    )
    assert answer.points and time.perf_counter() - started < 3.0
