"""Periodic retention of what would otherwise grow for ever: old forecast versions, inbox entries and the
forecast journal.

One round, in this order:

1. the read model drops the forecast rows no answer reads (``ReadModel.compact_forecasts``: neither the
   latest origin of its series and week nor its series' newest version), so no answer changes;
2. the journal forgets the events a rebuilt read model no longer needs (``ReadModel.journal_prunable``:
   applied here, and every row they gave the tables has given way to a newer one); replaying what is left
   rebuilds the same tables;
3. the inbox forgets entries older than the retention, except those of events the tables or the journal
   still hold.

Every step is safe to run on any replica at any time and to repeat; a failed round (journal store down) is
logged and the next one tries again.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from services.analytics.alerts import AlertStore
from services.analytics.engine import DuckEngine
from services.analytics.read_model import ReadModel
from services.kit.periodic import Periodic

__all__ = ["Housekeeping", "HousekeepingRound"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class HousekeepingRound:
    """What one round deleted."""

    forecast_rows: int
    journal_events: int
    inbox_entries: int


class Housekeeping:
    def __init__(
        self,
        engine: DuckEngine,
        model: ReadModel,
        journal: AlertStore,
        *,
        interval_seconds: float,
        inbox_retention_seconds: float,
    ):
        self._engine = engine
        self._model = model
        self._journal = journal
        self._inbox_retention = inbox_retention_seconds
        # Not at start-up: the read model may still be catching up.
        self._rounds = Periodic(
            "analytics-housekeeping", self.run_once, interval_seconds, first_after_interval=True
        )

    def start(self) -> None:
        self._rounds.start()

    async def stop(self) -> None:
        await self._rounds.stop()

    async def run_once(self) -> HousekeepingRound:
        compacted = await self._engine.write(self._model.compact_forecasts)
        journaled = await self._journal.kept_forecast_ids()
        prunable = await self._engine.read(self._model.journal_prunable, journaled)
        pruned = await self._journal.forget_kept_forecasts(sorted(prunable))
        inbox = await self._engine.write(
            self._model.forget_inbox, self._inbox_retention, journaled - prunable
        )
        done = HousekeepingRound(compacted, pruned, inbox)
        if compacted or pruned or inbox:
            log.info(
                "retention: %d superseded forecast rows, %d journaled events, %d inbox entries deleted",
                compacted,
                pruned,
                inbox,
                extra={"forecast_rows": compacted, "journal_events": pruned, "inbox_entries": inbox},
            )
        return done
