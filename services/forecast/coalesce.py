"""One batched read for the reads that concurrent calls need while earlier reads are still on the wire.

Under load many Forecast calls of one series each are in flight, and each would read its history from
analytics with its own gRPC call, although the API takes hundreds of series per call and a call costs far
more than one series in it. ``Coalescer`` lets at most ``max_in_flight`` reads run at once; keys asked for
while that many are running wait for the first of them to finish and then travel together in one read. A
lone call never waits (no timer, no window), and the busier the service the larger the reads: batching that
follows the load. Every caller gets its own keys' values, in its order, and the read's shared second result
(its provenance). A merged read runs in a task of its own, in the context of the call that sent it, so the
peer sees that call's request id for all the calls it serves.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable, Sequence
from typing import Generic, TypeVar

__all__ = ["Coalescer"]

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")
P = TypeVar("P")


class Coalescer(Generic[K, V, P]):
    """Merges concurrent ``fetch(keys) -> (values in key order, shared)`` calls (see the module docstring).

    ``max_keys`` bounds a merged read; a single caller asking for more is still sent in one ``fetch``."""

    def __init__(
        self,
        fetch: Callable[[list[K]], Awaitable[tuple[list[V], P]]],
        *,
        max_in_flight: int,
        max_keys: int,
    ):
        if max_in_flight < 1:
            raise ValueError("max_in_flight must be >= 1")
        self._fetch = fetch
        self._max_in_flight = max_in_flight
        self._max_keys = max_keys
        self._in_flight = 0
        self._waiting: list[tuple[list[K], asyncio.Future[tuple[list[V], P]]]] = []
        self._keys: dict[K, None] = {}
        self._running: set[asyncio.Task[None]] = set()  # referenced until done

    async def __call__(self, keys: Sequence[K]) -> tuple[list[V], P]:
        future: asyncio.Future[tuple[list[V], P]] = asyncio.get_running_loop().create_future()
        wanted = list(keys)
        if self._keys and len(self._keys) + len(wanted) > self._max_keys:
            self._send()  # what waits already is a full read: it goes now, on its own
        self._waiting.append((wanted, future))
        self._keys.update(dict.fromkeys(wanted))
        if self._in_flight < self._max_in_flight or len(self._keys) >= self._max_keys:
            self._send()
        return await future

    def _send(self) -> None:
        if not self._waiting:
            return
        waiting, keys = self._waiting, list(self._keys)
        self._waiting, self._keys = [], {}
        self._in_flight += 1
        # A task of its own, so that a cancelled caller does not cancel the read the others wait for.
        task = asyncio.get_running_loop().create_task(self._run(keys, waiting))
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    async def _run(
        self, keys: list[K], waiting: list[tuple[list[K], asyncio.Future[tuple[list[V], P]]]]
    ) -> None:
        try:
            values, shared = await self._fetch(keys)
        except asyncio.CancelledError:
            for _, future in waiting:
                future.cancel()
            raise
        except Exception as exc:  # every caller sees the failure of the read it shared
            for _, future in waiting:
                if not future.done():
                    future.set_exception(exc)
            return
        finally:
            self._in_flight -= 1
            if self._waiting and self._in_flight < self._max_in_flight:
                self._send()  # what queued up behind this read
        found = dict(zip(keys, values, strict=True))
        for wanted, future in waiting:
            if not future.done():
                future.set_result(([found[k] for k in wanted], shared))
