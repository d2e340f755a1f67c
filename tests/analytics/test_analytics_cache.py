"""The cache: answers identical with and without it, equivalent requests share an entry, Redis down is no
error, and a real Redis works under its own key prefix."""

from __future__ import annotations

import asyncio
import datetime as dt
import socket
import threading
import uuid
from typing import Any

import duckdb
import grpc
import pytest
import redis.asyncio as aioredis
from google.protobuf.message import Message
from novacorrente.analytics.v1 import analytics_pb2 as a
from novacorrente.common.v1 import common_pb2 as c

from services.analytics import kpis as kpi_mod
from services.analytics.engine import DuckEngine
from services.analytics.slices import Kind
from services.ports.cache import open_cache
from tests.analytics.analytics_data import (
    consumption_record,
    forecast_event,
    line,
    line_key_of,
    material,
    pair_with_one_lead_time,
    site,
    slow_lines_at_s2,
)
from tests.analytics.conftest import Replica, World, eventually
from tests.conftest import REDIS_URL


def _without_serving(message: Message) -> bytes:
    copy = type(message)()
    copy.CopyFrom(message)
    copy.provenance.from_cache = False  # type: ignore[attr-defined]
    return copy.SerializeToString(deterministic=True)


def _without_time(message: Message) -> bytes:
    copy = type(message)()
    copy.CopyFrom(message)
    copy.provenance.from_cache = False  # type: ignore[attr-defined]
    copy.provenance.ClearField("generated_at")  # type: ignore[attr-defined]
    return copy.SerializeToString(deterministic=True)


def _requests() -> list[tuple[str, Message]]:
    epi = c.Filter(families=["EPI", "MATERIAL CIVIL"])
    return [
        ("GetKpis", a.GetKpisRequest(filter=epi)),
        ("GetDemandSeries", a.GetDemandSeriesRequest(filter=epi, grain=c.TIME_GRAIN_MONTH)),
        (
            "GetSeriesHistory",
            a.GetSeriesHistoryRequest(series=[a.SeriesKey(material_code="010932", site_code="ALMOX-BA")]),
        ),
        ("GetLeadTimes", a.GetLeadTimesRequest(filter=c.Filter(material_codes=["010323"]))),
        ("ListInventoryStatus", a.ListInventoryStatusRequest()),
    ]


async def _ask(replica: Replica, method: str, request: Message) -> Message:
    return await getattr(replica.stub, method)(request, metadata=replica.md())


async def _writes_done(replica: Replica) -> None:
    """Wait until the write jobs a batch leads to are over (its apply, then the first batch's forecast
    replay), so that the next read starts with the write lock even and no write queued."""
    await eventually(lambda: not replica.app.service.model.forecast_replay_pending)
    await replica.app.engine.write(lambda job: None)  # runs after any write already queued
    assert replica.app.engine.writes % 2 == 0


def _answer_statements(engine: DuckEngine, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The first word of each statement that jobs computing answers (``AnalyticsService._cached``) execute
    from now on (not the alert evaluation's, which runs beside them)."""
    statements: list[str] = []
    answering = threading.local()
    run_job, open_cursor = engine._job, engine._cursor

    def job(running: Any, fn: Any, args: Any) -> Any:
        answering.on = fn.__qualname__.endswith("_cached.<locals>.job")
        try:
            return run_job(running, fn, args)
        finally:
            answering.on = False

    class Recording:
        def __init__(self, inner: Any):
            self._inner = inner

        def execute(self, sql: str, *args: Any) -> Any:
            if getattr(answering, "on", False):
                statements.append(sql.split(None, 1)[0].upper())
            self._inner.execute(sql, *args)
            return self

        def __getattr__(self, name: str) -> Any:
            return getattr(self._inner, name)

    monkeypatch.setattr(engine, "_job", job)
    monkeypatch.setattr(engine, "_cursor", lambda: Recording(open_cursor()))
    return statements


@pytest.mark.parametrize("quiet_seconds", [0.0, 3600.0], ids=["without-transaction", "in-transaction"])
async def test_cached_answers_are_byte_identical_to_fresh_ones(
    world: World, real_records, quiet_seconds: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    cached = await world.replica()
    uncached_cache = open_cache(f"memory://{uuid.uuid4().hex}", max_entries=1)  # effectively no cache
    fresh = await world.replica(cache=uncached_cache)
    await world.commit(real_records)
    for replica in (cached, fresh):  # either way of reading gives the same bytes
        await _writes_done(replica)
        replica.app.engine.quiet_seconds = quiet_seconds
    statements = _answer_statements(fresh.app.engine, monkeypatch)
    for method, request in _requests():
        first = await _ask(cached, method, request)
        second = await _ask(cached, method, request)
        assert not first.provenance.from_cache and second.provenance.from_cache  # type: ignore[attr-defined]
        assert _without_serving(first) == _without_serving(second)  # same bytes, same generated_at
        other = await _ask(fresh, method, request)
        assert _without_time(other) == _without_time(first)
    assert statements and ("BEGIN" in statements) == (quiet_seconds > 0)  # the way asked for was taken


async def test_equivalent_requests_share_one_entry(world: World, real_records) -> None:
    replica = await world.replica()
    await world.commit(real_records)
    one = a.GetKpisRequest(filter=c.Filter(families=["EPI", "FERRO E AÇO"], site_codes=["ALMOX-BA"]))
    same = a.GetKpisRequest(
        filter=c.Filter(families=["FERRO E AÇO", "EPI", "EPI"], site_codes=[" ALMOX-BA "])
    )
    assert not (await _ask(replica, "GetKpis", one)).provenance.from_cache  # type: ignore[attr-defined]
    assert (await _ask(replica, "GetKpis", same)).provenance.from_cache  # type: ignore[attr-defined]


async def test_inventory_status_by_site_follows_the_lead_times_of_other_sites(world: World) -> None:
    replica = await world.replica()
    await world.commit(pair_with_one_lead_time(dt.date(2024, 3, 1)))
    request = a.ListInventoryStatusRequest(filter=c.Filter(site_codes=["S1"]))
    before = await _ask(replica, "ListInventoryStatus", request)
    [row] = before.rows  # type: ignore[attr-defined]
    assert row.days_of_cover == pytest.approx(45.5) and row.status == a.STOCK_STATUS_NORMAL
    await world.commit(slow_lines_at_s2())  # M1 at S1 now falls back to 83.7 days, above its cover
    after = await _ask(replica, "ListInventoryStatus", request)
    assert not after.provenance.from_cache  # type: ignore[attr-defined]
    assert after.rows[0].status == a.STOCK_STATUS_CRITICAL  # type: ignore[attr-defined]


async def test_family_answers_follow_the_master_giving_a_material_a_family(world: World) -> None:
    replica = await world.replica()
    day = dt.date(2024, 3, 10)
    # M9 is not in the material master yet: its line counts under its own family F1.
    await world.commit(
        [
            material("M1", "F1"),
            site("S1"),
            line("R1", "M1", "S1", 5.0, day, family="F1"),
            line("R2", "M9", "S1", 100.0, day, family="F1"),
        ]
    )
    request = a.GetKpisRequest(filter=c.Filter(families=["F1"]), names=["total_demand"])
    assert (await _ask(replica, "GetKpis", request)).kpis[0].value == 105.0  # type: ignore[attr-defined]
    await world.commit([material("M9", "F2")])
    after = await _ask(replica, "GetKpis", request)
    assert not after.provenance.from_cache and after.kpis[0].value == 5.0  # type: ignore[attr-defined]
    # And back: a master record with no family puts M9's line under its own family again.
    await world.commit([material("M9", "")])
    again = await _ask(replica, "GetKpis", request)
    assert not again.provenance.from_cache and again.kpis[0].value == 105.0  # type: ignore[attr-defined]


async def test_accuracy_by_supplier_follows_a_correction_of_another_suppliers_line(world: World) -> None:
    replica = await world.replica()
    await world.commit(
        [
            material("M1", "F"),
            site("S1"),
            line("R1", "M1", "S1", 10.0, dt.date(2024, 3, 5), supplier="SA"),
            line("R2", "M1", "S1", 10.0, dt.date(2024, 3, 6), supplier="SB"),
            line("R3", "M1", "S1", 1.0, dt.date(2024, 3, 20), supplier="SA"),
        ]
    )
    await world.publish(
        forecast_event(
            "M1",
            "S1",
            [(dt.date(2024, 3, 4), 15, 20, 25)],
            generated_at=dt.datetime(2024, 3, 1, tzinfo=dt.UTC),
        )
    )
    await eventually(lambda: replica.app.service.model.watermarks.lookup()[1].get(Kind.FORECAST, 0) > 0)
    # The supplier picks the pairs (materials bought from SA); the actuals are all the pair's lines.
    request = a.GetKpisRequest(filter=c.Filter(suppliers=["SA"]), names=["forecast_wape"])
    assert (await _ask(replica, "GetKpis", request)).kpis[0].value == 0.0  # type: ignore[attr-defined]
    await world.commit([line("R2", "M1", "S1", 30.0, dt.date(2024, 3, 6), supplier="SB")], supersedes=True)
    after = await _ask(replica, "GetKpis", request)
    assert not after.provenance.from_cache  # type: ignore[attr-defined]
    # The week's actual is now 10 + 30 against a forecast of 20: |40 - 20| / 40.
    assert after.kpis[0].value == pytest.approx(50.0)  # type: ignore[attr-defined]


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_a_cold_read_looks_the_cache_up_once(world: World, real_records) -> None:
    """A repeated request whose answer is not cached (the data moved) is looked up once, by its remembered
    plan, not again on the way to computing it."""
    inner = open_cache(f"memory://{uuid.uuid4().hex}")
    keys: list[str] = []

    class Counting:
        async def get(self, key: str) -> bytes | None:
            keys.append(key)
            return await inner.get(key)

        def __getattr__(self, name: str) -> Any:
            return getattr(inner, name)

    replica = await world.replica(cache=Counting())  # type: ignore[arg-type]
    await world.commit(real_records[: len(real_records) // 2])
    request = a.GetKpisRequest(names=["total_demand"])
    first = await replica.stub.GetKpis(request, metadata=replica.md())
    assert len(keys) == 1 and not first.provenance.from_cache  # new request: looked up once, computed
    await world.commit(real_records[len(real_records) // 2 :])
    again = await replica.stub.GetKpis(request, metadata=replica.md())
    assert not again.provenance.from_cache and again.kpis[0].value != first.kpis[0].value
    assert len(keys) == 2 and keys[1] != keys[0]  # known request, new data: one lookup under the new key
    hit = await replica.stub.GetKpis(request, metadata=replica.md())
    assert hit.provenance.from_cache and len(keys) == 3 and keys[2] == keys[1]


async def test_redis_down_means_no_cache_not_errors(world: World, real_records) -> None:
    down = await world.replica(cache_url=f"redis://127.0.0.1:{_closed_port()}/0")
    reference = await world.replica()
    await world.commit(real_records)
    for _ in range(3):
        for method, request in _requests():
            answer = await _ask(down, method, request)
            assert not answer.provenance.from_cache  # type: ignore[attr-defined]
            assert _without_time(answer) == _without_time(await _ask(reference, method, request))


@pytest.mark.integration
async def test_real_redis_serves_hits_under_the_tests_own_prefix(world: World, real_records) -> None:
    prefix = f"analytics-test-{uuid.uuid4().hex[:10]}:"
    url = REDIS_URL.rsplit("/", 1)[0] + "/15"
    cache = open_cache(url, prefix=prefix)
    client = aioredis.from_url(url)
    try:
        replica = await world.replica(cache=cache)
        await world.commit(real_records)
        for method, request in _requests():
            first = await _ask(replica, method, request)
            second = await _ask(replica, method, request)
            assert second.provenance.from_cache  # type: ignore[attr-defined]
            assert _without_serving(first) == _without_serving(second)
        keys = [k async for k in client.scan_iter(match=f"{prefix}*")]
        assert len(keys) == len(_requests())
        assert all(k.decode().startswith(f"{prefix}analytics:v2:") for k in keys)
    finally:
        keys = [k async for k in client.scan_iter(match=f"{prefix}*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()
        await cache.close()


@pytest.mark.parametrize(
    ("quiet_seconds", "first", "version_reads"),
    [
        # Writes quiet: the read runs without a transaction, finds the lock moved and runs again in one,
        # with the versions the writer left in memory.
        (0.0, "SELECT", 2),
        # A write ended recently: a transaction from the start, and the versions are read from its snapshot.
        (3600.0, "BEGIN", 1),
    ],
    ids=["without-transaction", "in-transaction"],
)
async def test_a_batch_committed_as_an_answer_starts_is_not_stored_under_older_versions(
    world: World,
    rows,
    real_records,
    monkeypatch: pytest.MonkeyPatch,
    quiet_seconds: float,
    first: str,
    version_reads: int,
) -> None:
    """Answers are keyed by the writer's in-memory watermarks when no write job overlaps them. Here a
    correction commits after the read took those versions and before its first statement (DuckDB takes a
    transaction's snapshot there): the answer sees the correction, so it must be stored and labelled with its
    versions, whichever way the read ran."""
    replica = await world.replica()
    await world.commit(real_records)
    target = next(i for i, r in enumerate(rows) if r.material == "010323")
    request = a.GetKpisRequest(filter=c.Filter(material_codes=["010323"]), names=["total_demand"])
    before = await replica.stub.GetKpis(request, metadata=replica.md())
    old_watermark = before.provenance.data_watermark
    corrected = consumption_record(rows[target], line_key_of(rows, target))
    corrected.consumption.quantity = rows[target].quantity + 1000

    service = replica.app.service
    engine = replica.app.engine
    loop = asyncio.get_running_loop()
    known = service._known_versions
    reads = []

    def racing(plan):  # type: ignore[no-untyped-def]
        versions = known(plan)
        if not reads:  # the first read of the versions races the correction
            asyncio.run_coroutine_threadsafe(world.commit([corrected], supersedes=True), loop).result(60)
        reads.append(versions)
        return versions

    await _writes_done(replica)
    engine.quiet_seconds = quiet_seconds

    monkeypatch.setattr(service, "_known_versions", racing)
    statements = _answer_statements(engine, monkeypatch)
    other = a.GetKpisRequest(
        filter=c.Filter(material_codes=["010323"]), names=["total_demand", "demand_lines"]
    )
    raced = await replica.stub.GetKpis(other, metadata=replica.md())
    monkeypatch.undo()
    assert len(reads) == version_reads and reads[0] != reads[-1] if version_reads > 1 else len(reads) == 1
    assert statements[0] == first and statements.count("BEGIN") == 1 and statements[-1] == "COMMIT"

    assert raced.kpis[0].value == pytest.approx(before.kpis[0].value + 1000)  # the snapshot has it
    assert raced.provenance.data_watermark != old_watermark
    assert raced.provenance.data_watermark == f"seq:{world.sequencer.watermark}"
    again = await replica.stub.GetKpis(other, metadata=replica.md())
    assert again.provenance.from_cache
    assert _without_time(again) == _without_time(raced)


@pytest.mark.parametrize("overlapped", [True, False], ids=["write-overlapped", "no-write"])
async def test_a_read_without_transaction_that_fails_as_a_write_overlaps_it_runs_again_in_one(
    world: World, real_records, monkeypatch: pytest.MonkeyPatch, overlapped: bool
) -> None:
    """A write job can change the tables under a read that runs without a transaction (a reset drops them):
    the read runs again inside one. Without an overlapping write, the error is the answer."""
    replica = await world.replica()
    await world.commit(real_records)
    engine = replica.app.engine
    await _writes_done(replica)
    engine.quiet_seconds = 0.0
    loop = asyncio.get_running_loop()
    compute = kpi_mod.compute_kpis
    calls = []

    def failing_once(job, s, names):  # type: ignore[no-untyped-def]
        calls.append(names)
        if len(calls) == 1:
            if overlapped:
                asyncio.run_coroutine_threadsafe(engine.write(lambda job: None), loop).result(60)
            raise duckdb.CatalogException("Table with name consumption does not exist!")
        return compute(job, s, names)

    monkeypatch.setattr(kpi_mod, "compute_kpis", failing_once)
    request = a.GetKpisRequest(names=["total_demand"])
    if overlapped:
        answer = await replica.stub.GetKpis(request, metadata=replica.md())
        assert len(calls) == 2 and answer.kpis[0].available and answer.kpis[0].value > 0
    else:
        with pytest.raises(grpc.aio.AioRpcError):
            await replica.stub.GetKpis(request, metadata=replica.md())
        assert len(calls) == 1


async def test_a_failed_write_reloads_the_in_memory_state_or_keeps_the_lock_odd() -> None:
    """Cold reads trust the writer's in-memory watermarks only while ``DuckEngine.writes`` is even; a write
    job that fails may have left them behind the tables, so they are reloaded, and if that fails the lock
    stays odd (reads then read the tables)."""
    engine = DuckEngine(":memory:", read_workers=1)
    reloads = []
    engine.resync = lambda job: reloads.append(job.cursor.execute("SELECT 1").fetchall())
    try:

        def failing(job):  # type: ignore[no-untyped-def]
            raise ValueError("bad batch")

        await engine.write(lambda job: None)
        assert engine.writes == 2 and not reloads
        with pytest.raises(ValueError):
            await engine.write(failing)
        assert engine.writes == 4 and len(reloads) == 1

        def broken(job):  # type: ignore[no-untyped-def]
            raise OSError("disk gone")

        engine.resync = broken
        with pytest.raises(OSError):
            await engine.write(failing)
        assert engine.writes % 2 == 1
    finally:
        await engine.close()
