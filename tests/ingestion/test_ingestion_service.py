"""The ingestion service over real gRPC, on both system-of-record adapters (DuckDB and PostgreSQL)."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import math
import socket
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import grpc
import pytest
from novacorrente.common.v1 import common_pb2
from novacorrente.events.v1 import events_pb2
from novacorrente.ingestion.v1 import ingestion_pb2 as pb
from novacorrente.ingestion.v1 import ingestion_pb2_grpc
from novacorrente.ingestion.v1 import records_pb2 as rec

from services.ingestion.app import IngestionApp, build_app
from services.ingestion.settings import IngestionSettings
from services.ports.bus import Delivery, EventBus, open_bus
from tests.conftest import bad_request_fields, bearer, fresh_pg_database


@dataclass
class Running:
    app: IngestionApp
    stub: ingestion_pb2_grpc.IngestionServiceStub
    bus: EventBus
    events: list[events_pb2.BatchCommitted]
    token: str


@pytest.fixture(params=["duckdb", pytest.param("postgresql", marks=pytest.mark.integration)])
async def running(
    request: pytest.FixtureRequest, tmp_path: Path, jwt_key: bytes, token_for: Callable[..., str]
) -> AsyncIterator[Running]:
    async with contextlib.AsyncExitStack() as stack:
        if request.param == "duckdb":
            url = f"duckdb:///{tmp_path}/sor.duckdb"
        else:
            url = await stack.enter_async_context(fresh_pg_database())
        async for running in _serve(url, jwt_key, token_for("ingestor")):
            yield running


async def _serve(url: str, jwt_key: bytes, token: str) -> AsyncIterator[Running]:
    bus = await open_bus(f"memory://ingestion-{uuid.uuid4().hex}")
    events: list[events_pb2.BatchCommitted] = []

    async def collect(d: Delivery) -> None:
        events.append(events_pb2.BatchCommitted.FromString(d.body))

    sub = await bus.subscribe("test.batches", ["ingestion.batch.committed"], collect)
    settings = IngestionSettings(database_url=url, port=0, jwt_secret=jwt_key.hex())
    app = await build_app(settings, bus=bus, jwt_key=jwt_key)
    await app.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{app.server.port}")
    try:
        yield Running(app, ingestion_pb2_grpc.IngestionServiceStub(channel), bus, events, token)
    finally:
        await channel.close()
        await app.stop()
        await sub.stop()
        await bus.close()


def line(req: str, n: int = 1, qty: float = 2.0, unit: str = "UN", material: str = "010601") -> rec.Record:
    return rec.Record(
        consumption=rec.Consumption(
            requisition_id=req,
            line_key=f"{material}#{n}",
            material_code=material,
            site_code="ALMOX-BA",
            supplier_code="FORNECEDOR X",
            quantity=qty,
            unit=unit,
            solicited_date=common_pb2.Date(year=2025, month=3, day=10),
            purchase_date=common_pb2.Date(year=2025, month=3, day=17),
            family="EPI",
        )
    )


async def submit(
    r: Running, records: list[rec.Record], key: str | None = None, **kw: object
) -> pb.SubmitBatchResponse:
    request = pb.SubmitBatchRequest(idempotency_key=key or uuid.uuid4().hex, records=records, **kw)
    return await r.stub.SubmitBatch(request, metadata=bearer(r.token), timeout=10)


async def wait_for(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


async def test_batch_commits_and_publishes_its_records(running: Running) -> None:
    answer = await submit(running, [line("R1", 1), line("R1", 2, qty=5)])
    assert [v.verdict for v in answer.verdicts] == [pb.VERDICT_ACCEPTED, pb.VERDICT_ACCEPTED]
    assert [v.sequence for v in answer.verdicts] == [1, 2]
    assert answer.data_watermark == "seq:2"
    await wait_for(lambda: len(running.events) == 1)
    event = running.events[0]
    assert event.batch_id == answer.batch_id
    assert [c.sequence for c in event.records] == [1, 2]
    assert event.records[1].record.consumption.quantity == 5


async def test_replayed_batch_returns_the_first_answer_and_adds_nothing(running: Running) -> None:
    first = await submit(running, [line("R2")], key="k-replay")
    again = await submit(running, [line("R2")], key="k-replay")
    assert again.replayed and not first.replayed
    assert again.batch_id == first.batch_id and list(again.verdicts) == list(first.verdicts)
    wm = await running.stub.GetWatermark(pb.GetWatermarkRequest(), metadata=bearer(running.token))
    assert wm.sequence == 1
    await asyncio.sleep(0.2)
    assert len(running.events) == 1


async def test_expired_idempotency_keys_are_deleted_and_live_ones_kept(running: Running) -> None:
    first = await submit(running, [line("R9")], key="k-expiring")
    live = await submit(running, [line("R10")], key="k-live")
    assert await running.app.housekeeping.run_once() == 0  # nothing has expired yet
    async with running.app.store.db.transaction() as s:  # one key reaches the end of its time to live
        await s.execute(
            "UPDATE support.idempotency_keys SET expires_at = $1 WHERE key = 'k-expiring'",
            dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1),
        )
    assert await running.app.housekeeping.run_once() == 1
    again = await submit(running, [line("R10")], key="k-live")
    assert again.replayed and again.batch_id == live.batch_id  # the live key still answers
    fresh = await submit(running, [line("R9")], key="k-expiring")
    assert not fresh.replayed and fresh.batch_id != first.batch_id  # a new call: its key was forgotten
    assert [v.verdict for v in fresh.verdicts] == [pb.VERDICT_DUPLICATE]


async def test_same_key_with_another_payload_is_failed_precondition(running: Running) -> None:
    await submit(running, [line("R3")], key="k-conflict")
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await submit(running, [line("R3", qty=9)], key="k-conflict")
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION


async def test_duplicates_and_corrections(running: Running) -> None:
    await submit(running, [line("R4", 1), line("R4", 2)])
    answer = await submit(running, [line("R4", 1), line("R4", 2, qty=7)])
    assert [v.verdict for v in answer.verdicts] == [pb.VERDICT_DUPLICATE, pb.VERDICT_SUPERSEDED]
    assert answer.counts.duplicate == 1 and answer.counts.superseded == 1
    await wait_for(lambda: len(running.events) == 2)
    assert running.events[1].records[0].supersedes


async def test_bad_records_are_named_and_the_good_ones_commit(running: Running) -> None:
    bad_qty = line("R5", 2, qty=math.nan)
    bad_unit = line("R5", 3, unit="PARSECS")
    answer = await submit(running, [line("R5", 1), bad_qty, bad_unit, rec.Record()])
    verdicts = {v.index: v for v in answer.verdicts}
    assert verdicts[0].verdict == pb.VERDICT_ACCEPTED
    assert verdicts[1].verdict == pb.VERDICT_REJECTED
    assert [v.field for v in verdicts[1].violations] == ["records[1].consumption.quantity"]
    assert verdicts[2].verdict == pb.VERDICT_REJECTED
    assert "records[2].consumption.unit" in [v.field for v in verdicts[2].violations]
    assert verdicts[2].violations[0].reason == "UNKNOWN_UNIT"
    assert [v.field for v in verdicts[3].violations] == ["records[3].kind"]
    assert answer.counts.accepted == 1 and answer.counts.rejected == 3
    quarantine = await running.stub.ListQuarantine(pb.ListQuarantineRequest(), metadata=bearer(running.token))
    assert len(quarantine.records) == 3
    assert quarantine.records[0].record.consumption.requisition_id == "R5"


async def test_all_or_nothing_rejects_the_batch_with_field_details(running: Running) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await submit(running, [line("R6", 1), line("R6", 2, qty=-1)], all_or_nothing=True)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    fields = bad_request_fields(err.value)
    assert fields == ["records[1].consumption.quantity"]
    wm = await running.stub.GetWatermark(pb.GetWatermarkRequest(), metadata=bearer(running.token))
    assert wm.sequence == 0


async def test_oversized_batch_is_resource_exhausted(running: Running) -> None:
    records = [line("R7", n) for n in range(running.app.cases._limits.max_batch_records + 1)]
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await submit(running, records)
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


async def test_export_streams_every_committed_record_in_order(running: Running) -> None:
    for batch in range(3):
        await submit(running, [line(f"E{batch}", n) for n in range(1, 5)])
    seqs = []
    async for page in running.stub.ExportRecords(
        pb.ExportRecordsRequest(since_sequence=2, page_size=3), metadata=bearer(running.token)
    ):
        seqs += [c.sequence for c in page.records]
    assert seqs == list(range(3, 13))


async def test_tokens_and_roles(running: Running, token_for: Callable[..., str]) -> None:
    request = pb.SubmitBatchRequest(idempotency_key="k", records=[line("R8")])
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await running.stub.SubmitBatch(request, timeout=5)
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await running.stub.SubmitBatch(request, metadata=bearer(token_for("viewer")), timeout=5)
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_quarantined_records_are_fixed_and_replayed(running: Running) -> None:
    await submit(running, [line("Q1", 1, qty=-3), line("Q1", 2, unit="PARSECS"), line("Q1", 3)])
    listed = await running.stub.ListQuarantine(pb.ListQuarantineRequest(), metadata=bearer(running.token))
    assert len(listed.records) == 2
    negative, unknown_unit = listed.records
    fixed = rec.Record()
    fixed.CopyFrom(unknown_unit.record)
    fixed.consumption.unit = "UN"
    replay = pb.ReplayQuarantineRequest(
        idempotency_key="replay-1", ids=[negative.id], corrections={unknown_unit.id: fixed}
    )
    answer = await running.stub.ReplayQuarantine(replay, metadata=bearer(running.token))
    # The negative quantity is still wrong and stays in quarantine; the corrected line is committed.
    assert [v.verdict for v in answer.verdicts] == [pb.VERDICT_REJECTED, pb.VERDICT_ACCEPTED]
    left = await running.stub.ListQuarantine(pb.ListQuarantineRequest(), metadata=bearer(running.token))
    assert [r.id for r in left.records] == [negative.id]
    again = await running.stub.ReplayQuarantine(replay, metadata=bearer(running.token))
    assert again.replayed and list(again.verdicts) == list(answer.verdicts)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await running.stub.ReplayQuarantine(
            pb.ReplayQuarantineRequest(idempotency_key="replay-2", ids=[unknown_unit.id]),
            metadata=bearer(running.token),
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT  # already replayed


def material(cost: float | None = None, name: str = "MASCARA DESCARTAVEL") -> rec.Record:
    m = rec.Material(code="010601", name=name, family="EPI", unit="CX", stocked=True)
    if cost is not None:
        m.unit_cost_brl = cost
    return rec.Record(material=m)


async def test_a_material_unit_cost_is_content_stored_and_streamed(running: Running) -> None:
    steps = [
        (material(), pb.VERDICT_ACCEPTED),
        (material(), pb.VERDICT_DUPLICATE),  # no cost, as before the field existed
        (material(12.5), pb.VERDICT_SUPERSEDED),  # a cost supplied later corrects the material
        (material(12.5), pb.VERDICT_DUPLICATE),
        (material(13.0), pb.VERDICT_SUPERSEDED),
        (material(0.0), pb.VERDICT_SUPERSEDED),  # zero is a known cost, not the absent one
        (material(), pb.VERDICT_SUPERSEDED),  # back to unknown
    ]
    for record, expected in steps:
        answer = await submit(running, [record])
        assert [v.verdict for v in answer.verdicts] == [expected]
    committed = []
    async for page in running.stub.ExportRecords(pb.ExportRecordsRequest(), metadata=bearer(running.token)):
        committed += list(page.records)
    costs = [
        c.record.material.unit_cost_brl if c.record.material.HasField("unit_cost_brl") else None
        for c in committed
    ]
    assert costs == [None, 12.5, 13.0, 0.0, None]
    assert [c.supersedes for c in committed] == [False, True, True, True, True]
    await wait_for(lambda: len(running.events) == 5)
    streamed = [e.records[0].record.material for e in running.events]
    assert [m.unit_cost_brl if m.HasField("unit_cost_brl") else None for m in streamed] == costs


async def test_a_bad_unit_cost_is_rejected_naming_the_field(running: Running) -> None:
    answer = await submit(running, [material(), material(-1.0), material(math.nan), material(math.inf)])
    assert [v.verdict for v in answer.verdicts][1:] == [pb.VERDICT_REJECTED] * 3
    for v in answer.verdicts[1:]:
        assert [(x.field, x.reason) for x in v.violations] == [
            (f"records[{v.index}].material.unit_cost_brl", "OUT_OF_RANGE")
        ]
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await submit(running, [material(1.0), material(-0.5)], all_or_nothing=True)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    fields = bad_request_fields(err.value)
    assert fields == ["records[1].material.unit_cost_brl"]


async def test_concurrent_claims_of_one_new_key_give_it_to_one_call(running: Running) -> None:
    store = running.app.store
    claims = await asyncio.gather(
        *(store.claim("me", "raced", "h", ttl_seconds=60, lease_seconds=60) for _ in range(6))
    )
    # One call owns the key; the others find it running (ABORTED to their callers), never a key
    # violation (INTERNAL).
    assert sorted(c.state.name for c in claims) == ["IN_PROGRESS"] * 5 + ["NEW"]


async def _upload(
    r: Running, path: Path, key: str, record_type: str = "", all_or_nothing: bool = False
) -> pb.UploadFileResponse:
    header = pb.UploadHeader(
        filename=path.name, idempotency_key=key, record_type=record_type, all_or_nothing=all_or_nothing
    )
    parts = [pb.UploadFileRequest(header=header), pb.UploadFileRequest(chunk=path.read_bytes())]
    return await r.stub.UploadFile(iter(parts), metadata=bearer(r.token), timeout=30)


_MATERIALS_CSV = "code,name,family,unit\nM1,PARAFUSO,FERRAGENS,UN\nM2,PORCA,FERRAGENS,UN\n"


async def test_an_upload_key_reused_for_another_record_type_is_failed_precondition(
    running: Running, tmp_path: Path
) -> None:
    path = tmp_path / "codes.csv"
    path.write_text(_MATERIALS_CSV)
    first = await _upload(running, path, "file-1", record_type="material")
    assert first.counts.accepted == 2
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await _upload(running, path, "file-1", record_type="supplier")
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    again = await _upload(running, path, "file-1", record_type="material")
    assert again.replayed and again.counts.accepted == 2


async def test_an_all_or_nothing_upload_names_each_bad_line_once(running: Running, tmp_path: Path) -> None:
    path = tmp_path / "materials.csv"
    path.write_text(_MATERIALS_CSV.replace("PORCA,FERRAGENS,UN", "PORCA,FERRAGENS,PARSECS"))
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await _upload(running, path, "file-2", record_type="material", all_or_nothing=True)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert bad_request_fields(err.value) == ["line[2].material.unit"]


async def test_a_large_resent_file_lists_the_first_exceptions_and_counts_the_rest(
    running: Running, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from services.ingestion import service

    monkeypatch.setattr(service, "MAX_UPLOAD_EXCEPTIONS", 3)
    path = tmp_path / "many.csv"
    path.write_text("code,name,family,unit\n" + "".join(f"M{i},ITEM {i},FERRAGENS,UN\n" for i in range(10)))
    assert (await _upload(running, path, "many-1", record_type="material")).counts.accepted == 10
    resent = await _upload(running, path, "many-2", record_type="material")
    assert resent.counts.duplicate == 10
    assert [v.index for v in resent.exceptions] == [1, 2, 3]
    assert resent.exceptions_omitted == 7


async def test_a_correction_for_an_entry_not_in_quarantine_is_refused_and_named(running: Running) -> None:
    replay = pb.ReplayQuarantineRequest(idempotency_key="replay-x", corrections={"424242": line("Q9")})
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await running.stub.ReplayQuarantine(replay, metadata=bearer(running.token))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert bad_request_fields(err.value) == ['corrections["424242"]']
    watermark = await running.stub.GetWatermark(pb.GetWatermarkRequest(), metadata=bearer(running.token))
    assert watermark.sequence == 0  # nothing was committed
    bad_key = pb.ReplayQuarantineRequest(
        idempotency_key="replay-y", ids=["1"], corrections={"abc": line("Q9")}
    )
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await running.stub.ReplayQuarantine(bad_key, metadata=bearer(running.token))
    assert bad_request_fields(err.value) == ['corrections["abc"]']


async def test_starts_and_accepts_into_the_outbox_while_the_broker_is_away(
    tmp_path: Path, jwt_key: bytes, token_for: Callable[..., str]
) -> None:
    with socket.socket() as probe:  # a loopback port nothing listens on
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    settings = IngestionSettings(
        database_url=f"duckdb:///{tmp_path}/sor.duckdb",
        broker_url=f"amqp://guest:guest@127.0.0.1:{closed_port}/",
        port=0,
        jwt_secret=jwt_key.hex(),
    )
    app = await build_app(settings, jwt_key=jwt_key)
    await app.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{app.server.port}")
    try:
        stub = ingestion_pb2_grpc.IngestionServiceStub(channel)
        answer = await stub.SubmitBatch(
            pb.SubmitBatchRequest(idempotency_key="k", records=[line("B1")]),
            metadata=bearer(token_for("ingestor")),
            timeout=10,
        )
        assert answer.counts.accepted == 1
        assert len(await app.store.outbox_pending(10)) == 1  # kept for the relay, which retries
        assert app.relay.published == 0
    finally:
        await channel.close()
        await app.stop()


@pytest.mark.integration
async def test_claims_stay_exact_on_a_database_whose_default_isolation_is_stricter(pg_url: str) -> None:
    from services.ingestion.sql import PostgresDatabase
    from services.ingestion.store import IngestionStore

    admin = await asyncpg.connect(pg_url)
    try:
        name = pg_url.rsplit("/", 1)[1]
        await admin.execute(
            f"ALTER DATABASE \"{name}\" SET default_transaction_isolation = 'repeatable read'"
        )
    finally:
        await admin.close()
    db = await PostgresDatabase.connect(pg_url)
    try:
        await db.migrate()
        store = IngestionStore(db)
        claims = await asyncio.gather(
            *(store.claim("me", "raced", "h", ttl_seconds=60, lease_seconds=60) for _ in range(6))
        )
        assert sorted(c.state.name for c in claims) == ["IN_PROGRESS"] * 5 + ["NEW"]
    finally:
        await db.close()
