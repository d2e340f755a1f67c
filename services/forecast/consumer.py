"""Bus adapter: re-forecast the series a committed batch touched and publish ``ForecastsUpdated``.

The subscription is a *competing-consumer* queue (``forecast.reforecast``, one name shared by every replica):
a batch needs re-forecasting once, not once per replica, and the results travel as events that every
interested reader (analytics' read model, the gateway) receives on its own queue. A per-replica queue would
multiply the same work and the same events by the replica count. The only per-replica state is the history
cache, which is shared through the cache port and invalidated by generation (see ``history``), so the replica
that did not see the batch still stops serving the stale histories.

Idempotency: a redelivered batch produces the same ``ForecastsUpdated`` event ids (derived from the trigger
event id and the chunk number), so downstream inboxes drop the duplicates.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Iterable, Sequence

from google.protobuf.message import DecodeError
from novacorrente.events.v1 import events_pb2 as epb

from services.forecast import converters
from services.forecast.history import AnalyticsReader, SeriesKey
from services.forecast.metrics import ForecastMetrics
from services.forecast.service import ForecastUseCases
from services.forecast.settings import ForecastSettings
from services.kit.errors import Unavailable
from services.kit.logging import request_id_var
from services.ports.bus import Delivery, EventBus, OutgoingMessage, PoisonMessage, Subscription

__all__ = [
    "BATCH_COMMITTED",
    "FORECASTS_UPDATED",
    "ReforecastConsumer",
    "carries_externals",
    "touched_series",
]

log = logging.getLogger(__name__)

BATCH_COMMITTED = "ingestion.batch.committed"
FORECASTS_UPDATED = "forecast.forecasts.updated"
_EVENT_NAMESPACE = uuid.UUID("6f1c3a52-1d0e-4c55-9b7e-3f6f0f9a2c11")
_READ_MODEL_WAIT_SECONDS = 15.0
_TRANSIENT_RETRY_DELAYS = (1.0, 2.0, 4.0)
"""Pauses between attempts of one delivery when analytics is unavailable or slow (a busy start, a restart):
the bus redelivers a failed message at once and dead-letters it after a few failures, which a spell of
overload would exhaust in a moment. Re-forecasting a batch is idempotent (event ids derive from the batch)."""


def touched_series(event: epb.BatchCommitted) -> list[SeriesKey]:
    """Material x site series whose demand or stock a batch changed, in first-seen order."""
    keys: dict[SeriesKey, None] = {}
    for committed in event.records:
        record = committed.record
        kind = record.WhichOneof("kind")
        if kind == "consumption":
            c = record.consumption
            if "service" not in c.flags:
                keys[(c.material_code, c.site_code)] = None
        elif kind == "stock_snapshot":
            keys[(record.stock_snapshot.material_code, record.stock_snapshot.site_code)] = None
        elif kind == "stock_movement":
            m = record.stock_movement
            keys[(m.material_code, m.site_code)] = None
            if m.to_site_code:
                keys[(m.material_code, m.to_site_code)] = None
        elif kind == "purchase_order":
            keys[(record.purchase_order.material_code, record.purchase_order.site_code)] = None
    return [k for k in keys if k[0] and k[1]]


def carries_externals(event: epb.BatchCommitted) -> bool:
    """Whether a batch holds external observations (weather, PTAX, SELIC, IPCA)."""
    return any(c.record.WhichOneof("kind") == "external_observation" for c in event.records)


def _chunks(items: Sequence[SeriesKey], size: int) -> Iterable[Sequence[SeriesKey]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class ReforecastConsumer:
    def __init__(
        self,
        bus: EventBus,
        use_cases: ForecastUseCases,
        reader: AnalyticsReader,
        settings: ForecastSettings,
        metrics: ForecastMetrics | None = None,
    ):
        self._bus = bus
        self._use_cases = use_cases
        self._reader = reader
        self._settings = settings
        self._metrics = metrics
        self._subscription: Subscription | None = None
        self.retry_delays = _TRANSIENT_RETRY_DELAYS

    async def start(self) -> None:
        self._subscription = await self._bus.subscribe(
            self._settings.reforecast_queue,
            [BATCH_COMMITTED],
            self.handle,
            prefetch=max(2, self._settings.reforecast_concurrency * 2),
            concurrency=self._settings.reforecast_concurrency,
        )

    async def stop(self) -> None:
        if self._subscription is not None:
            # The subscription waits the grace for deliveries in progress, then cancels them: a cancelled
            # delivery goes back to the queue unacknowledged, for the next replica or the next start.
            await self._subscription.stop(self._settings.grace_seconds)
            self._subscription = None

    async def _wait_for_read_model(self, sequence: int) -> None:
        """Histories must reflect the batch: wait until analytics applied it (it consumes the same event)."""
        deadline = time.monotonic() + _READ_MODEL_WAIT_SECONDS
        delay = 0.05
        while True:
            applied = await self._reader.watermark()
            if applied is None or applied >= sequence:
                return
            if time.monotonic() > deadline:
                # Raising hands the message back to the bus, which redelivers it later.
                raise TimeoutError(f"analytics read model at sequence {applied}, batch ends at {sequence}")
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.5)

    async def handle(self, delivery: Delivery) -> None:
        try:
            event = epb.BatchCommitted.FromString(delivery.body)
        except DecodeError as exc:
            raise PoisonMessage(f"body is not a BatchCommitted: {exc}") from exc
        token = request_id_var.set(f"batch-{event.batch_id or delivery.message_id}")
        try:
            for delay in (*self.retry_delays, None):
                try:
                    await self.process(event)
                    return
                except Unavailable as exc:
                    # Not the read-model wait's TimeoutError: that wait is long already, and the bus
                    # redelivers the batch after it.
                    if delay is None:
                        raise  # the bus redelivers it, and dead-letters it after its delivery limit
                    log.warning(
                        "re-forecast of batch %s failed (%s); retrying in %g s", event.batch_id, exc, delay
                    )
                    await asyncio.sleep(delay)
        finally:
            request_id_var.reset(token)

    async def process(self, event: epb.BatchCommitted) -> list[epb.ForecastsUpdated]:
        """Re-forecast and publish; returns the published events."""
        keys = touched_series(event)
        externals = carries_externals(event)
        if not keys and not externals:
            return []
        if event.sequence_to:
            await self._wait_for_read_model(event.sequence_to)
        generation = f"seq{event.sequence_to or event.event_id}"
        if externals:
            # New weather/market points change the features of every series: the next forecast of any
            # series reads them. Series are re-forecast here only when the batch touched their own data.
            await self._reader.invalidate_externals(generation)
        if not keys:
            return []
        await self._reader.invalidate(keys, generation)
        return await self.reforecast(keys, trigger=event.event_id, batch_id=event.batch_id)

    async def reforecast(
        self, keys: Sequence[SeriesKey], *, trigger: str, batch_id: str = ""
    ) -> list[epb.ForecastsUpdated]:
        """Re-forecast ``keys`` and publish the results, in chunks; returns the published events. Event
        ids derive from ``trigger``: a redelivered batch publishes the same ids, which inboxes drop."""
        published: list[epb.ForecastsUpdated] = []
        messages: list[OutgoingMessage] = []
        for number, chunk in enumerate(_chunks(keys, self._settings.reforecast_batch_size)):
            forecasts, policies = await self._use_cases.reforecast(chunk)
            event_id = str(uuid.uuid5(_EVENT_NAMESPACE, f"{trigger}:{number}"))
            answers = [converters.forecast_pb(f) for f in forecasts]
            update = epb.ForecastsUpdated(
                event_id=event_id,
                forecasts=answers,
                policies=[converters.policy_pb(p) for p in policies],
                trigger_batch_id=batch_id,
            )
            # The next Forecast call for these series is answered with exactly what was published.
            await self._use_cases.remember(forecasts, [a.SerializeToString() for a in answers])
            published.append(update)
            messages.append(
                OutgoingMessage(
                    routing_key=FORECASTS_UPDATED,
                    body=update.SerializeToString(),
                    type=update.DESCRIPTOR.full_name,
                    message_id=event_id,
                )
            )
            if self._metrics is not None:
                self._metrics.reforecast_series.inc(len(chunk))
        await self._bus.publish(messages)
        log.info(
            "re-forecast %d series of %s into %d events",
            len(keys),
            f"batch {batch_id}" if batch_id else trigger,
            len(messages),
            extra={"batch_id": batch_id, "trigger": trigger, "series": len(keys), "events": len(messages)},
        )
        return published
