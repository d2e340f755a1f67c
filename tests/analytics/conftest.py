"""Fixtures for analytics-query: real replicas (grpc.aio on 127.0.0.1:0, real DuckDB) on an in-process bus,
an in-test ingestion peer serving ExportRecords over a list, and helpers to publish events and wait."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest
from novacorrente.analytics.v1 import analytics_pb2_grpc
from novacorrente.events.v1 import events_pb2
from novacorrente.ingestion.v1 import ingestion_pb2, ingestion_pb2_grpc, records_pb2

from services.analytics.app import AnalyticsApp, build_app
from services.analytics.settings import AnalyticsSettings
from services.kit.auth import Role, mint_token
from services.ports.bus import EventBus, OutgoingMessage, open_bus
from services.ports.cache import Cache
from tests.analytics.analytics_data import Sequencer, real_rows, records_from_rows


async def eventually(check: Callable[[], Awaitable[bool] | bool], within: float = 10.0) -> None:
    """Wait until ``check`` is true (events travel through the bus asynchronously)."""
    deadline = time.monotonic() + within
    while True:
        result = check()
        if isinstance(result, Awaitable):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.01)


class ExportDouble(ingestion_pb2_grpc.IngestionServiceServicer):
    """A stand-in for the ingestion peer: ExportRecords over a list of committed records."""

    def __init__(self, log: list[records_pb2.CommittedRecord]):
        self.log = log
        self.calls: list[int] = []

    async def ExportRecords(self, request, context):  # type: ignore[no-untyped-def]
        self.calls.append(request.since_sequence)
        until = self.log[-1].sequence if self.log else 0
        size = request.page_size or 1000
        pending = [r for r in self.log if request.since_sequence < r.sequence <= until]
        for start in range(0, len(pending), size):
            page = pending[start : start + size]
            yield ingestion_pb2.ExportRecordsResponse(
                records=page, last_sequence=page[-1].sequence, watermark=until
            )


@dataclass
class Replica:
    app: AnalyticsApp
    channel: grpc.aio.Channel
    stub: analytics_pb2_grpc.AnalyticsServiceStub
    key: bytes

    def md(self, role: str = "viewer", subject: str = "alice") -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {mint_token(self.key, subject, Role(role), 600)}"),)


@dataclass
class World:
    """One test's platform slice: a bus, the records ingestion committed, replicas of analytics."""

    jwt_key: bytes
    tmp_path: Any
    bus_url: str
    sequencer: Sequencer = field(default_factory=Sequencer)
    replicas: list[Replica] = field(default_factory=list)
    buses: list[EventBus] = field(default_factory=list)
    export: ExportDouble | None = None
    export_target: str = ""
    _servers: list[grpc.aio.Server] = field(default_factory=list)

    async def bus(self) -> EventBus:
        if not self.buses:
            self.buses.append(await open_bus(self.bus_url))
        return self.buses[0]

    async def start_export(self) -> str:
        """Serve ExportRecords over the sequencer's log on a real local port."""
        self.export = ExportDouble(self.sequencer.log)
        server = grpc.aio.server()
        ingestion_pb2_grpc.add_IngestionServiceServicer_to_server(self.export, server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        self._servers.append(server)
        self.export_target = f"127.0.0.1:{port}"
        return self.export_target

    def settings(self, **overrides: Any) -> AnalyticsSettings:
        values: dict[str, Any] = {
            "host": "127.0.0.1",
            "port": 0,
            "grace_seconds": 1.0,
            "health_poll_seconds": 0.1,
            "duckdb_path": ":memory:",
            "alerts_duckdb_path": ":memory:",
            "database_url": "duckdb:///unused",
            "broker_url": self.bus_url,
            "cache_url": f"memory://{uuid.uuid4().hex}",
            "replica_id": uuid.uuid4().hex[:8],
            "query_workers": 2,
            "alert_relay_interval_seconds": 0.05,
            "catchup_retry_seconds": 0.1,
            "jwt_secret": self.jwt_key.hex(),
        }
        values.update(overrides)
        return AnalyticsSettings(**values)

    async def replica(self, *, cache: Cache | None = None, wait: bool = True, **overrides: Any) -> Replica:
        settings = self.settings(**overrides)
        app = await build_app(settings, bus=await self.bus(), cache=cache, jwt_key=self.jwt_key)
        await app.start()
        if wait:
            await app.wait_ready()
        channel = grpc.aio.insecure_channel(app.address)
        replica = Replica(app, channel, analytics_pb2_grpc.AnalyticsServiceStub(channel), self.jwt_key)
        self.replicas.append(replica)
        return replica

    async def stop(self, replica: Replica) -> None:
        self.replicas.remove(replica)
        await replica.channel.close()
        await replica.app.stop()

    async def publish(self, *events: events_pb2.BatchCommitted | events_pb2.ForecastsUpdated) -> None:
        messages = []
        for event in events:
            key = (
                "ingestion.batch.committed"
                if isinstance(event, events_pb2.BatchCommitted)
                else "forecast.forecasts.updated"
            )
            messages.append(
                OutgoingMessage(
                    routing_key=key,
                    body=event.SerializeToString(),
                    type=event.DESCRIPTOR.full_name,
                    message_id=event.event_id,
                )
            )
        await (await self.bus()).publish(messages)

    async def commit(
        self, records: Sequence[records_pb2.Record], *, supersedes: bool = False
    ) -> events_pb2.BatchCommitted:
        """Commit records as ingestion would, publish the event, and wait for every replica to apply it."""
        event = self.sequencer.commit(records, supersedes=supersedes)
        await self.publish(event)
        await self.settled()
        return event

    async def settled(self) -> None:
        target = self.sequencer.watermark
        await eventually(lambda: all(r.app.service.model.applied_seq >= target for r in self.replicas))

    async def close(self) -> None:
        for replica in list(self.replicas):
            await self.stop(replica)
        for server in self._servers:
            await server.stop(0)
        for bus in self.buses:
            await bus.close()


@pytest.fixture
async def world(jwt_key: bytes, tmp_path: Any) -> AsyncIterator[World]:
    w = World(jwt_key=jwt_key, tmp_path=tmp_path, bus_url=f"memory://analytics-{uuid.uuid4().hex}")
    try:
        yield w
    finally:
        await w.close()


@pytest.fixture(scope="session")
def rows() -> tuple:  # type: ignore[type-arg]
    return real_rows()


@pytest.fixture(scope="session")
def real_records(rows: tuple) -> list[records_pb2.Record]:  # type: ignore[type-arg]
    return records_from_rows(rows)
