"""Alert changes on the bus: the relay that publishes the store's outbox, and the hub that feeds WatchAlerts.

Every change of an alert (raise, acknowledge, resolve) is an audit row written in the same transaction as
the change; the relay publishes the rows not yet published as AlertRaised events (routing key
analytics.alert.raised) and marks them. Each replica consumes those events on its own queue and hands them to
its hub, which fans them out to the WatchAlerts streams it serves: a watcher connected to any replica sees
the alerts raised, and the acknowledgements made, on every replica. The relay may publish a row twice (a crash
between publish and mark, or two replicas relaying at once); the hub drops an event id it has already seen.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Sequence

from novacorrente.analytics.v1 import analytics_pb2

from services.analytics.alerts import AlertStore, Notification
from services.kit.errors import ResourceExhausted
from services.ports.bus import EventBus, OutgoingMessage
from services.ports.relay import OutboxRelay

__all__ = ["AlertHub", "alert_relay"]

log = logging.getLogger(__name__)

Predicate = Callable[[analytics_pb2.Alert], bool]


class _Watcher:
    def __init__(self, predicate: Predicate, size: int):
        self.predicate = predicate
        self.queue: asyncio.Queue[analytics_pb2.Alert | None] = asyncio.Queue(size)
        self.overflowed = False


class AlertHub:
    """In-process fan-out of alert events to watchers, deduplicated by event id."""

    def __init__(self, *, queue_size: int = 256, remember: int = 10_000):
        self._watchers: set[_Watcher] = set()
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._queue_size = queue_size
        self._remember = remember

    @property
    def watchers(self) -> int:
        return len(self._watchers)

    def publish(self, event_id: str, alert: analytics_pb2.Alert) -> bool:
        """Deliver to every matching watcher; False when the event was already delivered."""
        if event_id in self._seen:
            return False
        self._seen[event_id] = None
        while len(self._seen) > self._remember:
            self._seen.popitem(last=False)
        for watcher in list(self._watchers):
            if watcher.overflowed or not watcher.predicate(alert):
                continue
            try:
                watcher.queue.put_nowait(alert)
            except asyncio.QueueFull:
                # A client that does not read must not make the replica hold every alert for it: end its
                # stream; it reconnects and lists what it missed.
                watcher.overflowed = True
                with contextlib.suppress(asyncio.QueueEmpty):
                    watcher.queue.get_nowait()
                watcher.queue.put_nowait(None)
        return True

    async def watch(self, predicate: Predicate) -> AsyncIterator[analytics_pb2.Alert]:
        """Alerts matching ``predicate`` from now on, until the caller stops iterating."""
        watcher = _Watcher(predicate, self._queue_size)
        self._watchers.add(watcher)
        try:
            while True:
                alert = await watcher.queue.get()
                if alert is None:
                    raise ResourceExhausted("the alert stream fell too far behind; reconnect and list alerts")
                yield alert
        finally:
            self._watchers.discard(watcher)


def alert_relay(
    store: AlertStore,
    bus: EventBus,
    to_message: Callable[[Notification], OutgoingMessage],
    *,
    interval: float = 1.0,
    batch_size: int = 100,
) -> OutboxRelay[Notification]:
    """Publishes the alert store's unpublished changes; woken after each change, and polls as a fallback."""

    async def published(notifications: Sequence[Notification]) -> None:
        await store.mark_published([n.event_id for n in notifications])

    return OutboxRelay(
        "alerts",
        bus,
        pending=store.pending,
        published=published,
        to_message=to_message,
        batch_size=batch_size,
        poll_seconds=interval,
    )
