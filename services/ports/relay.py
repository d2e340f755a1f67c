"""Outbox relay: publishes a store's unpublished entries to the bus, in order, with confirms.

A service writes its rows and an outbox entry in one transaction, so an event exists exactly when
its rows do. The relay marks an entry published only after the broker confirmed it; a crash in
between publishes it again, and consumers drop the copy by event id (at-least-once plus idempotent
consumers). During a broker outage the outbox fills and the service keeps working; the relay
drains it when the broker is back, backing off meanwhile. Ingestion's record outbox and analytics'
alert changes both go through it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

from services.ports.bus import BusError, EventBus, OutgoingMessage

__all__ = ["OutboxRelay"]

log = logging.getLogger(__name__)

Entry = TypeVar("Entry")


class OutboxRelay(Generic[Entry]):
    """`pending(limit)` reads the oldest unpublished entries; `published(entries)` marks (or deletes)
    them once the broker confirmed them; `to_message` turns an entry into the message to publish."""

    def __init__(
        self,
        name: str,
        bus: EventBus,
        *,
        pending: Callable[[int], Awaitable[Sequence[Entry]]],
        published: Callable[[Sequence[Entry]], Awaitable[None]],
        to_message: Callable[[Entry], OutgoingMessage],
        batch_size: int = 200,
        poll_seconds: float = 1.0,
        max_backoff_seconds: float = 10.0,
    ) -> None:
        self._name = name
        self._bus = bus
        self._pending = pending
        self._published = published
        self._to_message = to_message
        self._batch_size = batch_size
        self._poll = poll_seconds
        self._max_backoff = max_backoff_seconds
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.published = 0

    def notify(self) -> None:
        """Entries were written: publish now rather than at the next poll."""
        self._wake.set()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"{self._name}-relay")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def drain(self) -> int:
        """Publish everything pending now; returns how many entries were published."""
        total = 0
        while True:
            entries = await self._pending(self._batch_size)
            if not entries:
                return total
            await self._bus.publish([self._to_message(e) for e in entries])
            await self._published(entries)
            total += len(entries)
            self.published += len(entries)

    async def _run(self) -> None:
        backoff = self._poll
        while True:
            try:
                await self.drain()
                backoff = self._poll
            except asyncio.CancelledError:
                raise
            except BusError as exc:
                log.warning("%s relay: broker unavailable (%s); retrying in %.1fs", self._name, exc, backoff)
                backoff = min(backoff * 2, self._max_backoff)
            except Exception:
                # A database outage: the entries stay in the outbox; try again later.
                log.exception("%s relay: publishing failed; retrying in %.1fs", self._name, backoff)
                backoff = min(backoff * 2, self._max_backoff)
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=backoff)
