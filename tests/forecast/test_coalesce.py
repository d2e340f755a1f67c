"""Coalescer: reads needed while one is on the wire travel together; nobody waits for a timer."""

from __future__ import annotations

import asyncio

import pytest

from services.forecast.coalesce import Coalescer


class Peer:
    """A fetch that records its calls and answers when released."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []
        self.release = asyncio.Event()
        self.fail: Exception | None = None

    async def fetch(self, keys: list[str]) -> tuple[list[str], int]:
        self.calls.append(keys)
        await self.release.wait()
        if self.fail is not None:
            raise self.fail
        return [k.upper() for k in keys], len(self.calls)


async def test_a_lone_read_goes_at_once() -> None:
    peer = Peer()
    peer.release.set()
    coalesce = Coalescer(peer.fetch, max_in_flight=1, max_keys=10)
    assert await asyncio.wait_for(coalesce(["a", "b"]), 1) == (["A", "B"], 1)
    assert peer.calls == [["a", "b"]]


async def test_reads_waiting_behind_one_travel_together() -> None:
    peer = Peer()
    coalesce = Coalescer(peer.fetch, max_in_flight=1, max_keys=10)
    first = asyncio.create_task(coalesce(["a"]))
    await asyncio.sleep(0)
    waiting = [asyncio.create_task(coalesce(keys)) for keys in (["b", "c"], ["c"], ["d", "b"])]
    await asyncio.sleep(0)
    assert peer.calls == [["a"]]
    peer.release.set()
    assert await first == (["A"], 1)
    # One read for the three callers, each key once; each caller gets its own keys in its order.
    assert [await t for t in waiting] == [(["B", "C"], 2), (["C"], 2), (["D", "B"], 2)]
    assert peer.calls == [["a"], ["b", "c", "d"]]


async def test_max_keys_bounds_a_merged_read() -> None:
    peer = Peer()
    coalesce = Coalescer(peer.fetch, max_in_flight=1, max_keys=3)
    tasks = [asyncio.create_task(coalesce([k])) for k in "abcdefg"]
    await asyncio.sleep(0)
    peer.release.set()
    assert [(await t)[0] for t in tasks] == [[k.upper()] for k in "abcdefg"]
    assert all(len(call) <= 3 for call in peer.calls)
    assert sorted(k for call in peer.calls for k in call) == list("abcdefg")


async def test_a_failed_read_fails_every_caller_and_the_next_read_goes() -> None:
    peer = Peer()
    coalesce = Coalescer(peer.fetch, max_in_flight=1, max_keys=10)
    peer.fail = RuntimeError("analytics down")
    tasks = [asyncio.create_task(coalesce([k])) for k in "ab"]
    await asyncio.sleep(0)
    peer.release.set()
    for task in tasks:
        with pytest.raises(RuntimeError, match="analytics down"):
            await task
    peer.fail = None
    assert await coalesce(["c"]) == (["C"], 3)


async def test_a_cancelled_caller_does_not_cancel_the_shared_read() -> None:
    peer = Peer()
    coalesce = Coalescer(peer.fetch, max_in_flight=1, max_keys=10)
    first = asyncio.create_task(coalesce(["a"]))
    await asyncio.sleep(0)
    leaving, staying = asyncio.create_task(coalesce(["b"])), asyncio.create_task(coalesce(["c"]))
    await asyncio.sleep(0)
    leaving.cancel()
    peer.release.set()
    assert await first == (["A"], 1)
    assert await staying == (["C"], 2)
    assert leaving.cancelled()
