"""Stopping the real Redis under a query load gives zero errors: no cache, not failures."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from services.ports.cache import open_cache
from tests.analytics.conftest import World
from tests.analytics.test_analytics_cache import _ask, _requests
from tests.conftest import REDIS_URL
from tests.faults.servers import redis_restored, start_redis, stop_redis

pytestmark = [pytest.mark.integration, pytest.mark.fault]


@pytest.mark.timeout(120)
async def test_stopping_redis_under_load_gives_zero_errors(world: World, real_records) -> None:
    cache = open_cache(REDIS_URL.rsplit("/", 1)[0] + "/15", prefix=f"analytics-fault-{uuid.uuid4().hex[:8]}:")
    replica = await world.replica(cache=cache)
    await world.commit(real_records)
    answered, from_cache, errors = 0, 0, []
    stop = asyncio.Event()

    async def worker() -> None:
        nonlocal answered, from_cache
        while not stop.is_set():
            for method, request in _requests():
                try:
                    answer = await _ask(replica, method, request)
                except Exception as exc:  # any failure counts against the test
                    errors.append(f"{method}: {exc!r}")
                    continue
                answered += 1
                from_cache += bool(answer.provenance.from_cache)  # type: ignore[attr-defined]

    try:
        with redis_restored():
            workers = [asyncio.create_task(worker()) for _ in range(8)]
            await asyncio.sleep(1.5)
            before_outage = answered
            await asyncio.to_thread(stop_redis)
            await asyncio.sleep(2.0)
            during_outage = answered - before_outage
            await asyncio.to_thread(start_redis)
            await asyncio.sleep(1.5)
            stop.set()
            await asyncio.gather(*workers)
    finally:
        await cache.close()
    assert errors == [], errors[:5]
    assert before_outage > 0 and during_outage > 0, "queries must keep being answered while Redis is down"
    assert from_cache > 0
