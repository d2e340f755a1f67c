"""Periodic clean-up of what expires in the system of record: idempotency keys past their time to live.

Expiry itself needs no clean-up (a claim treats an expired key as absent); the deletion only keeps the table
from growing with keys that are never used again. A failed round (database down) is logged and the next one
tries again: nothing depends on a round succeeding.
"""

from __future__ import annotations

import logging

from services.ingestion.store import IngestionStore
from services.kit.periodic import Periodic

__all__ = ["Housekeeping"]

log = logging.getLogger(__name__)


class Housekeeping:
    def __init__(self, store: IngestionStore, interval_seconds: float):
        self._store = store
        self._rounds = Periodic("ingestion-housekeeping", self.run_once, interval_seconds)

    def start(self) -> None:
        self._rounds.start()

    async def stop(self) -> None:
        await self._rounds.stop()

    async def run_once(self) -> int:
        """One round; returns how many keys were deleted."""
        forgotten = await self._store.forget_expired_keys()
        if forgotten:
            log.info("deleted %d expired idempotency keys", forgotten, extra={"keys": forgotten})
        return forgotten
