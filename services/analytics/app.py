"""Composition root of analytics-query: read model, cache, alert store, bus consumers, gRPC server.

``build_app(settings)`` opens the stores and wires everything; ``start()`` subscribes this replica's queues,
starts the background tasks and the server, and begins the catch-up from ingestion's export (health reports
NOT_SERVING until it has succeeded once); ``stop()`` shuts down in the kit's order (health, consumers, server
drain, then pools and files).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field

from novacorrente.analytics.v1 import analytics_pb2_grpc
from novacorrente.events.v1 import events_pb2
from prometheus_client import CollectorRegistry

from services.analytics.access import SERVICE_NAME, policy
from services.analytics.alert_stream import AlertHub, alert_relay
from services.analytics.alerts import AlertStore, Notification, open_alert_store
from services.analytics.consumer import (
    ALERT_RAISED,
    AlertConsumer,
    ReadModelConsumer,
    alert_queue,
    read_model_queue,
)
from services.analytics.converters import alert_proto
from services.analytics.engine import DuckEngine
from services.analytics.export_client import ExportSource, GrpcExportSource
from services.analytics.housekeeping import Housekeeping
from services.analytics.read_model import ReadModel
from services.analytics.service import AnalyticsService, Limits
from services.analytics.servicer import AnalyticsServicer
from services.analytics.settings import AnalyticsSettings
from services.kit.auth import Role, TokenSource
from services.kit.server import GrpcServer
from services.ports.bus import EventBus, OutgoingMessage, Subscription, open_bus
from services.ports.cache import Cache, open_cache
from services.ports.relay import OutboxRelay

__all__ = ["SERVICE_NAME", "AnalyticsApp", "alert_message", "build_app", "policy"]

log = logging.getLogger(__name__)


def alert_message(notification: Notification) -> OutgoingMessage:
    """The AlertRaised event of one alert change (its audit row's id is the event id)."""
    alert = alert_proto(notification.alert)
    event = events_pb2.AlertRaised(event_id=notification.event_id, alert=alert, provenance=alert.provenance)
    return OutgoingMessage(
        routing_key=ALERT_RAISED,
        body=event.SerializeToString(),
        type=events_pb2.AlertRaised.DESCRIPTOR.full_name,
        message_id=notification.event_id,
    )


@dataclass
class AnalyticsApp:
    """A running (or ready to run) analytics-query replica."""

    settings: AnalyticsSettings
    server: GrpcServer
    service: AnalyticsService
    engine: DuckEngine
    cache: Cache
    bus: EventBus
    alerts: AlertStore
    relay: OutboxRelay[Notification]
    housekeeping: Housekeeping
    subscriptions: list[Subscription] = field(default_factory=list)
    _catch_up: asyncio.Task[None] | None = None

    @property
    def read_model_queue(self) -> str:
        return read_model_queue(self.settings.replica_id)

    @property
    def alert_queue(self) -> str:
        return alert_queue(self.settings.replica_id)

    @property
    def address(self) -> str:
        return self.server.address

    async def start(self) -> None:
        expires = self.settings.queue_expires_seconds
        # Subscribe before catching up: events committed meanwhile wait in the queue, and the ones the
        # export already delivered are skipped by sequence.
        read_model = ReadModelConsumer(self.service)
        self.subscriptions.append(
            await self.bus.subscribe(
                self.read_model_queue,
                read_model.bindings,
                read_model.handle,
                prefetch=16,
                expires_after=expires,
            )
        )
        alerts = AlertConsumer(self.service)
        self.subscriptions.append(
            await self.bus.subscribe(self.alert_queue, alerts.bindings, alerts.handle, expires_after=expires)
        )
        self.service.start_background()
        self.relay.start()
        self.housekeeping.start()
        await self.server.start()
        if self.service.export is not None:
            self._catch_up = asyncio.create_task(self._initial_catch_up(), name="analytics-catch-up")

    async def _initial_catch_up(self) -> None:
        while True:
            try:
                applied = await self.service.catch_up()
                log.info(
                    "read model ready at seq %d (%d records caught up)",
                    self.service.model.applied_seq,
                    applied,
                )
                await self.server.check_health()
                return
            except Exception as exc:
                log.warning("catch-up from ingestion failed, retrying: %s", exc)
                await asyncio.sleep(self.settings.catchup_retry_seconds)

    async def wait_ready(self, within: float = 30.0) -> None:
        """Wait for the first catch-up (tests, composed demo)."""
        if self._catch_up is not None:
            await asyncio.wait_for(asyncio.shield(self._catch_up), within)

    async def stop(self) -> None:
        await self.server.stop()

    async def _stop_consumers(self) -> None:
        if self._catch_up is not None:
            self._catch_up.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._catch_up
        # Together, so that their handlers share one grace period (the shutdown budget counts one).
        await asyncio.gather(*(s.stop(self.settings.grace_seconds) for s in self.subscriptions))
        self.subscriptions.clear()
        await self.housekeeping.stop()
        await self.relay.stop()
        await self.service.stop_background()


async def build_app(
    settings: AnalyticsSettings,
    *,
    bus: EventBus | None = None,
    cache: Cache | None = None,
    export: ExportSource | None = None,
    jwt_key: bytes | None = None,
    registry: CollectorRegistry | None = None,
) -> AnalyticsApp:
    """Wire one replica. ``bus``, ``cache`` and ``export`` override the ones the settings name (a composed
    demo shares one in-process bus; tests pass a fake export); the app closes only what it opened."""
    key = jwt_key if jwt_key is not None else settings.jwt_key()
    engine = DuckEngine(
        settings.duckdb_path,
        read_workers=settings.query_workers,
        threads=settings.duckdb_threads,
        memory_limit=settings.duckdb_memory_limit,
    )
    model = ReadModel()
    engine.resync = model.reload
    owned: list[object] = []
    try:
        alerts = await open_alert_store(settings.database_url, settings.alerts_duckdb_path)
        owned.append(alerts)
        if bus is None:
            bus = await open_bus(settings.broker_url)
            owned.append(bus)
        if cache is None:
            cache = open_cache(settings.cache_url, prefix="")
            owned.append(cache)
        if export is None and settings.ingestion_target:
            tokens = TokenSource(key, f"analytics-{settings.replica_id}", Role(settings.ingestion_token_role))
            export = GrpcExportSource(settings.ingestion_target, tokens, tls=settings.tls_client_paths())
            owned.append(export)
    except BaseException:
        for resource in reversed(owned):
            with contextlib.suppress(Exception):
                await resource.close()  # type: ignore[attr-defined]
        await engine.close()
        raise
    hub = AlertHub()
    relay = alert_relay(alerts, bus, alert_message, interval=settings.alert_relay_interval_seconds)
    limits = Limits(
        query_timeout_seconds=settings.query_timeout_seconds,
        cache_ttl_seconds=settings.cache_ttl_seconds,
        max_range_days=settings.max_range_days,
        max_series_per_call=settings.max_series_per_call,
        export_page_size=settings.export_page_size,
        catchup_chunk_records=settings.catchup_chunk_records,
        catchup_timeout_seconds=settings.catchup_timeout_seconds,
    )
    service = AnalyticsService(
        engine=engine,
        model=model,
        cache=cache,
        alerts=alerts,
        hub=hub,
        relay=relay,
        export=export,
        limits=limits,
    )
    await service.open()
    server = GrpcServer(
        settings, policy=policy(), jwt_key=key, service_names=[SERVICE_NAME], registry=registry
    )
    server.add_servicer(analytics_pb2_grpc.add_AnalyticsServiceServicer_to_server, AnalyticsServicer(service))
    app = AnalyticsApp(
        settings=settings,
        server=server,
        service=service,
        engine=engine,
        cache=cache,
        bus=bus,
        alerts=alerts,
        relay=relay,
        housekeeping=Housekeeping(
            engine,
            model,
            alerts,
            interval_seconds=settings.housekeeping_interval_seconds,
            inbox_retention_seconds=settings.inbox_retention_days * 86400,
        ),
    )

    async def read_model_ready() -> bool:
        return service.caught_up

    # Readiness is the read model having caught up. The alert store is not a readiness dependency: without
    # it the KPIs, series and inventory still answer, and only the alert RPCs fail (UNAVAILABLE).
    server.add_health_check("read_model", read_model_ready)
    server.on_stop(app._stop_consumers)

    async def close() -> None:
        for resource in reversed(owned):
            try:
                await resource.close()  # type: ignore[attr-defined]
            except Exception:
                log.exception("closing %r failed", resource)
        await engine.close()

    server.on_close(close)
    return app
