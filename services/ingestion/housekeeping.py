"""Periodic clean-up of what expires in the system of record: idempotency keys past their time to live.

Expiry itself needs no clean-up (a claim treats an expired key as absent); the deletion only keeps the table
from growing with keys that are never used again. A failed round (database down) is logged and the next one
tries again: nothing depends on a round succeeding.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from services.ingestion.store import IngestionStore

__all__ = ["Housekeeping"]

log = logging.getLogger(__name__)


class Housekeeping:
    def __init__(self, store: IngestionStore, interval_seconds: float):
        self._store = store
        self._interval = interval_seconds
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._interval > 0 and self._task is None:
            self._task = asyncio.create_task(self._run(), name="ingestion-housekeeping")

    async def run_once(self) -> int:
        """One round; returns how many keys were deleted."""
        forgotten = await self._store.forget_expired_keys()
        if forgotten:
            log.info("deleted %d expired idempotency keys", forgotten, extra={"keys": forgotten})
        return forgotten

    async def _run(self) -> None:
        while True:
            try:
                await self.run_once()
            except Exception as exc:
                log.warning("housekeeping round failed, next one in %.0f s: %s", self._interval, exc)
            await asyncio.sleep(self._interval)

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
