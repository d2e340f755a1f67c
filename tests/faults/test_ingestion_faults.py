"""Ingestion under real outages: PostgreSQL restarted, RabbitMQ stopped during a load.

These tests stop the machine's servers and always restore them (see servers.py).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable

import asyncpg
import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from novacorrente.common.v1 import common_pb2
from novacorrente.events.v1 import events_pb2
from novacorrente.ingestion.v1 import ingestion_pb2 as pb
from novacorrente.ingestion.v1 import ingestion_pb2_grpc
from novacorrente.ingestion.v1 import records_pb2 as rec

from services.ingestion.app import build_app
from services.ingestion.settings import IngestionSettings
from services.ports.bus import Delivery, open_bus
from tests.conftest import bearer, fresh_pg_database
from tests.faults.servers import (
    postgres_restored,
    rabbitmq_restored,
    start_postgres,
    start_rabbitmq_app,
    stop_postgres,
    stop_rabbitmq_app,
)

pytestmark = [pytest.mark.integration, pytest.mark.fault]


def consumption(req: str, n: int) -> rec.Record:
    return rec.Record(
        consumption=rec.Consumption(
            requisition_id=req,
            line_key=f"010601#{n}",
            material_code="010601",
            site_code="ALMOX-BA",
            supplier_code="FORNECEDOR X",
            quantity=1 + n % 7,
            unit="UN",
            solicited_date=common_pb2.Date(year=2025, month=1 + n % 12, day=1 + n % 28),
        )
    )


@pytest.mark.timeout(240)
async def test_restarted_postgres_gives_unavailable_then_recovers_without_restart(
    jwt_key: bytes, token_for: Callable[..., str]
) -> None:
    async with fresh_pg_database() as url:
        settings = IngestionSettings(database_url=url, port=0, jwt_secret=jwt_key.hex())
        bus = await open_bus(f"memory://fault-{uuid.uuid4().hex}")
        app = await build_app(settings, bus=bus, jwt_key=jwt_key)
        await app.start()
        auth = bearer(token_for("ingestor"))
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{app.server.port}") as channel:
                stub = ingestion_pb2_grpc.IngestionServiceStub(channel)

                def batch(i: int) -> pb.SubmitBatchRequest:
                    return pb.SubmitBatchRequest(idempotency_key=f"pg-{i}", records=[consumption("PG", i)])

                assert (await stub.SubmitBatch(batch(0), metadata=auth, timeout=10)).counts.accepted == 1
                with postgres_restored():
                    await asyncio.to_thread(stop_postgres)
                    with pytest.raises(grpc.aio.AioRpcError) as err:
                        await stub.SubmitBatch(batch(1), metadata=auth, timeout=10)
                    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
                    status = rpc_status.from_call(err.value)
                    assert status is not None
                    assert any(d.Is(error_details_pb2.RetryInfo.DESCRIPTOR) for d in status.details)
                    await asyncio.to_thread(start_postgres)
                # The same service instance recovers: pooled connections are replaced.
                for _attempt in range(20):
                    try:
                        answer = await stub.SubmitBatch(batch(1), metadata=auth, timeout=10)
                        break
                    except grpc.aio.AioRpcError as exc:
                        assert exc.code() == grpc.StatusCode.UNAVAILABLE
                        await asyncio.sleep(0.5)
                else:
                    pytest.fail("ingestion did not recover after PostgreSQL came back")
                assert answer.counts.accepted == 1
        finally:
            await app.stop()
            await bus.close()


@pytest.mark.timeout(300)
async def test_broker_outage_during_a_load_delivers_every_event_once_to_the_inbox(
    jwt_key: bytes, token_for: Callable[..., str], amqp_url: str
) -> None:
    total, per_batch = 100_000, 5_000
    exchange = f"fault.{uuid.uuid4().hex[:8]}"
    async with fresh_pg_database() as url:
        inbox = await asyncpg.connect(url)
        poller = await asyncpg.connect(url)
        await inbox.execute(
            "CREATE TABLE inbox_events (event_id TEXT PRIMARY KEY);"
            "CREATE TABLE inbox_records (seq BIGINT PRIMARY KEY)"
        )
        deliveries = 0

        async def consume(d: Delivery) -> None:
            # An idempotent consumer: the event id and each record's sequence are applied once.
            nonlocal deliveries
            deliveries += 1
            event = events_pb2.BatchCommitted.FromString(d.body)
            async with inbox.transaction():
                fresh = await inbox.fetchval(
                    "INSERT INTO inbox_events VALUES ($1) ON CONFLICT DO NOTHING RETURNING 1", event.event_id
                )
                if fresh:
                    await inbox.copy_records_to_table(
                        "inbox_records", records=[(r.sequence,) for r in event.records]
                    )

        consumer_bus = await open_bus(amqp_url, exchange=exchange)
        subscription = await consumer_bus.subscribe(
            f"{exchange}.inbox", ["ingestion.batch.committed"], consume
        )
        publisher_bus = await open_bus(amqp_url, exchange=exchange)
        settings = IngestionSettings(database_url=url, port=0, jwt_secret=jwt_key.hex())
        app = await build_app(settings, bus=publisher_bus, jwt_key=jwt_key)
        await app.start()
        auth = bearer(token_for("ingestor"))
        try:
            with rabbitmq_restored():
                async with grpc.aio.insecure_channel(
                    f"127.0.0.1:{app.server.port}", options=[("grpc.max_send_message_length", 64 << 20)]
                ) as channel:
                    stub = ingestion_pb2_grpc.IngestionServiceStub(channel)
                    batches = total // per_batch
                    for b in range(batches):
                        if b == batches // 4:
                            await asyncio.to_thread(stop_rabbitmq_app)
                        if b == 3 * batches // 4:
                            assert await app.store.outbox_size() > 0, "the outbox should have filled"
                            await asyncio.to_thread(start_rabbitmq_app)
                        request = pb.SubmitBatchRequest(
                            idempotency_key=f"load-{b}",
                            records=[consumption(f"L{b}", n) for n in range(per_batch)],
                        )
                        answer = await stub.SubmitBatch(request, metadata=auth, timeout=60)
                        assert answer.counts.accepted == per_batch
            deadline = asyncio.get_running_loop().time() + 120
            while await poller.fetchval("SELECT count(*) FROM inbox_records") < total:
                assert asyncio.get_running_loop().time() < deadline, "events not all delivered after recovery"
                await asyncio.sleep(0.5)
            assert await poller.fetchval("SELECT count(*) FROM inbox_records") == total
            assert await poller.fetchval("SELECT min(seq), max(seq) FROM inbox_records") == 1
            assert await poller.fetchval("SELECT max(seq) FROM inbox_records") == total
            assert await app.store.outbox_size() == 0
            assert deliveries >= total // per_batch
        finally:
            await app.stop()
            await subscription.stop()
            await publisher_bus.close()
            await consumer_bus.close()
            await inbox.close()
            await poller.close()
