"""Composition root of the ingestion service: store, bus, relay, use cases, gRPC server."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
from collections.abc import Sequence
from dataclasses import dataclass

from novacorrente.ingestion.v1 import ingestion_pb2_grpc

from services.ingestion.access import SERVICE_NAME, policy
from services.ingestion.housekeeping import Housekeeping
from services.ingestion.reading import ReadingPool
from services.ingestion.service import IngestionUseCases, Limits
from services.ingestion.servicer import IngestionServicer
from services.ingestion.settings import IngestionSettings
from services.ingestion.sql import open_database
from services.ingestion.store import IngestionStore, OutboxEntry
from services.kit.server import GrpcServer
from services.ports.bus import BusUnavailable, DeferredBus, EventBus, OutgoingMessage
from services.ports.relay import OutboxRelay

__all__ = ["SERVICE_NAME", "IngestionApp", "build_app", "policy"]

log = logging.getLogger(__name__)


def _message(entry: OutboxEntry) -> OutgoingMessage:
    m = entry.message
    return OutgoingMessage(routing_key=m.routing_key, body=m.body, type=m.event_type, message_id=m.event_id)


@dataclass
class IngestionApp:
    server: GrpcServer
    store: IngestionStore
    relay: OutboxRelay[OutboxEntry]
    bus: EventBus
    cases: IngestionUseCases
    housekeeping: Housekeeping
    reading: ReadingPool | None = None

    async def start(self) -> None:
        self.relay.start()
        self.housekeeping.start()
        if self.reading is not None:
            self.reading.warm()  # the worker starts while the server does, not at the first big upload
        await self.server.start()

    async def stop(self) -> None:
        await self.server.stop()


async def build_app(
    settings: IngestionSettings, *, bus: EventBus | None = None, jwt_key: bytes | None = None
) -> IngestionApp:
    """Everything wired and migrated, not started. A given `bus` is shared and not closed here."""
    db = await open_database(settings.database_url)
    await db.migrate()
    store = IngestionStore(db)
    own_bus = bus is None
    if bus is None:
        # The broker is not needed to accept data (it goes to the outbox), so not needed to start either.
        bus = DeferredBus(settings.broker_url)
        try:
            await bus.opened()
        except BusUnavailable as exc:
            log.warning("starting without the broker, the outbox relay publishes once it answers: %s", exc)

    async def published(entries: Sequence[OutboxEntry]) -> None:
        await store.outbox_published([e.id for e in entries])

    relay = OutboxRelay(
        "outbox",
        bus,
        pending=store.outbox_pending,
        published=published,
        to_message=_message,
        batch_size=settings.relay_batch_size,
    )
    executor = concurrent.futures.ThreadPoolExecutor(
        settings.parse_workers, thread_name_prefix="ingestion-parse"
    )
    limits = Limits(
        max_batch_records=settings.max_batch_records,
        max_upload_bytes=settings.max_upload_bytes,
        upload_commit_records=settings.upload_commit_records,
        idempotency_ttl_seconds=settings.idempotency_ttl_seconds,
        idempotency_lease_seconds=settings.idempotency_lease_seconds,
        process_read_min_bytes=settings.process_read_min_bytes,
    )
    reading = ReadingPool(settings.read_processes) if settings.read_processes > 0 else None
    cases = IngestionUseCases(store, limits, executor, on_commit=relay.notify, reading=reading)
    server = GrpcServer(settings, policy=policy(), jwt_key=jwt_key, service_names=[SERVICE_NAME])
    server.add_servicer(
        ingestion_pb2_grpc.add_IngestionServiceServicer_to_server,
        IngestionServicer(cases, max_upload_bytes=settings.max_upload_bytes, spool_dir=settings.spool_dir),
    )
    # The broker is not a readiness dependency: ingestion keeps accepting into the outbox while it
    # is down. The database is: without it nothing can be accepted.
    server.add_health_check("database", db.check)
    server.on_stop(relay.stop)
    housekeeping = Housekeeping(store, settings.housekeeping_interval_seconds)
    server.on_stop(housekeeping.stop)

    async def close() -> None:
        executor.shutdown(wait=True)
        if reading is not None:
            await asyncio.to_thread(reading.shutdown)
        if own_bus:
            await bus.close()
        await db.close()

    server.on_close(close)
    return IngestionApp(
        server=server,
        store=store,
        relay=relay,
        bus=bus,
        cases=cases,
        housekeeping=housekeeping,
        reading=reading,
    )
