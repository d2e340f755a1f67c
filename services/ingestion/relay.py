"""Outbox relay: publishes committed events to the bus, in commit order, with confirms.

Rows and their outbox entry commit together, so an event exists exactly when its rows do. The
relay deletes an entry only after the broker confirmed it; a crash in between re-publishes it,
and consumers drop the copy by event id (at-least-once plus idempotent consumers). During a
broker outage the outbox fills and ingestion keeps accepting; the relay drains it on return.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from services.ingestion.store import IngestionStore
from services.ports.bus import BusError, EventBus, OutgoingMessage

__all__ = ["OutboxRelay"]

log = logging.getLogger(__name__)


class OutboxRelay:
    def __init__(
        self,
        store: IngestionStore,
        bus: EventBus,
        *,
        batch_size: int = 200,
        poll_seconds: float = 1.0,
        max_backoff_seconds: float = 10.0,
    ) -> None:
        self._store = store
        self._bus = bus
        self._batch_size = batch_size
        self._poll = poll_seconds
        self._max_backoff = max_backoff_seconds
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.published = 0

    def notify(self) -> None:
        """A commit wrote outbox entries: publish now rather than at the next poll."""
        self._wake.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="outbox-relay")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def drain_once(self) -> int:
        """Publish everything pending now; returns how many entries were published."""
        total = 0
        while True:
            entries = await self._store.outbox_pending(self._batch_size)
            if not entries:
                return total
            await self._bus.publish(
                [
                    OutgoingMessage(
                        routing_key=e.message.routing_key,
                        body=e.message.body,
                        type=e.message.event_type,
                        message_id=e.message.event_id,
                    )
                    for e in entries
                ]
            )
            await self._store.outbox_published([e.id for e in entries])
            total += len(entries)
            self.published += len(entries)

    async def _run(self) -> None:
        backoff = self._poll
        while True:
            try:
                await self.drain_once()
                backoff = self._poll
            except asyncio.CancelledError:
                raise
            except BusError as exc:
                log.warning("outbox relay: broker unavailable (%s); retrying in %.1fs", exc, backoff)
                backoff = min(backoff * 2, self._max_backoff)
            except Exception:
                # A database outage: the entries stay in the outbox; try again later.
                log.exception("outbox relay: publishing failed; retrying in %.1fs", backoff)
                backoff = min(backoff * 2, self._max_backoff)
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=backoff)
