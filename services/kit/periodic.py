"""A round of work repeated at an interval for the life of a service (housekeeping, retention).

A failed round (a database down) is logged and the next one tries again: nothing may depend on a round
succeeding. An interval of 0 turns the rounds off.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

__all__ = ["Periodic"]

log = logging.getLogger(__name__)


class Periodic:
    def __init__(
        self,
        name: str,
        round_: Callable[[], Awaitable[object]],
        interval_seconds: float,
        *,
        first_after_interval: bool = False,
    ):
        """``first_after_interval``: wait one interval before the first round instead of starting with it
        (when start-up work, such as a read model catching up, should come first)."""
        self._name = name
        self._round = round_
        self._interval = interval_seconds
        self._first_after_interval = first_after_interval
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._interval > 0 and self._task is None:
            self._task = asyncio.create_task(self._run(), name=self._name)

    async def _run(self) -> None:
        if self._first_after_interval:
            await asyncio.sleep(self._interval)
        while True:
            try:
                await self._round()
            except Exception as exc:
                log.warning("%s round failed, next one in %.0f s: %s", self._name, self._interval, exc)
            await asyncio.sleep(self._interval)

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
