"""Bus adapter: decodes events/v1 messages and hands each to one use case.

The read-model queue (one per replica, so every replica sees every event) carries BatchCommitted and
ForecastsUpdated; the alert queue (also per replica) carries AlertRaised for the WatchAlerts streams.
A body that cannot be decoded can never succeed: it is dead-lettered at once.
"""

from __future__ import annotations

from google.protobuf.message import DecodeError
from novacorrente.events.v1 import events_pb2

from services.analytics.service import AnalyticsService
from services.ports.bus import Delivery, PoisonMessage

__all__ = [
    "ALERT_RAISED",
    "BATCH_COMMITTED",
    "FORECASTS_UPDATED",
    "AlertConsumer",
    "ReadModelConsumer",
    "alert_queue",
    "read_model_queue",
]

BATCH_COMMITTED = "ingestion.batch.committed"
FORECASTS_UPDATED = "forecast.forecasts.updated"
ALERT_RAISED = "analytics.alert.raised"


def read_model_queue(replica_id: str) -> str:
    return f"analytics.readmodel.{replica_id}"


def alert_queue(replica_id: str) -> str:
    return f"analytics.alerts.{replica_id}"


def _decode(delivery: Delivery, message_type: type) -> object:
    try:
        return message_type.FromString(delivery.body)  # type: ignore[attr-defined]
    except DecodeError as exc:
        raise PoisonMessage(f"undecodable {message_type.DESCRIPTOR.full_name}: {exc}") from exc  # type: ignore[attr-defined]


def _is(delivery: Delivery, message_type: type, routing_key: str) -> bool:
    full_name = message_type.DESCRIPTOR.full_name  # type: ignore[attr-defined]
    return delivery.type == full_name or (not delivery.type and delivery.routing_key == routing_key)


class ReadModelConsumer:
    bindings = (BATCH_COMMITTED, FORECASTS_UPDATED)

    def __init__(self, service: AnalyticsService):
        self._service = service

    async def handle(self, delivery: Delivery) -> None:
        if _is(delivery, events_pb2.BatchCommitted, BATCH_COMMITTED):
            await self._service.apply_batch(_decode(delivery, events_pb2.BatchCommitted))  # type: ignore[arg-type]
        elif _is(delivery, events_pb2.ForecastsUpdated, FORECASTS_UPDATED):
            await self._service.apply_forecasts(_decode(delivery, events_pb2.ForecastsUpdated))  # type: ignore[arg-type]
        else:
            raise PoisonMessage(f"unexpected message type {delivery.type!r} on {delivery.routing_key}")


class AlertConsumer:
    bindings = (ALERT_RAISED,)

    def __init__(self, service: AnalyticsService):
        self._service = service

    async def handle(self, delivery: Delivery) -> None:
        if not _is(delivery, events_pb2.AlertRaised, ALERT_RAISED):
            raise PoisonMessage(f"unexpected message type {delivery.type!r} on {delivery.routing_key}")
        self._service.on_alert_event(_decode(delivery, events_pb2.AlertRaised))  # type: ignore[arg-type]
