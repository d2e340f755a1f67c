"""One contract for the cache, run against the in-process LRU and against Redis; then each adapter's own."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from services.ports.cache import open_cache
from services.ports.cache_memory import MemoryCache
from services.ports.cache_redis import CircuitBreaker, RedisCache
from tests.ports.conftest import REDIS_URL, CacheFactory


async def test_get_returns_what_was_set(open_test_cache: CacheFactory) -> None:
    cache = open_test_cache()
    assert await cache.get("kpi:w42") is None
    await cache.set("kpi:w42", b"\x00payload\xff", ttl_seconds=30)
    assert await cache.get("kpi:w42") == b"\x00payload\xff"
    await cache.set("kpi:w42", b"newer", ttl_seconds=30)
    assert await cache.get("kpi:w42") == b"newer"


async def test_entry_expires_after_its_ttl(open_test_cache: CacheFactory) -> None:
    cache = open_test_cache()
    await cache.set("short", b"v", ttl_seconds=0.2)
    await cache.set("long", b"v", ttl_seconds=30)
    assert await cache.get("short") == b"v"
    await asyncio.sleep(0.35)
    assert await cache.get("short") is None
    assert await cache.get("long") == b"v"


async def test_prefixes_isolate_users_of_one_backend(open_test_cache: CacheFactory) -> None:
    analytics, forecast = open_test_cache("analytics:"), open_test_cache("forecast:")
    await analytics.set("series:1", b"from analytics", ttl_seconds=30)
    assert await forecast.get("series:1") is None
    await forecast.set("series:1", b"from forecast", ttl_seconds=30)
    assert await analytics.get("series:1") == b"from analytics"
    assert await forecast.get("series:1") == b"from forecast"
    # The same prefix on another handle sees the same entries: the prefix is the namespace.
    assert await open_test_cache("analytics:").get("series:1") == b"from analytics"


async def test_check_reports_a_reachable_cache(open_test_cache: CacheFactory) -> None:
    assert await open_test_cache().check() is True


async def test_invalid_entries_are_refused(open_test_cache: CacheFactory) -> None:
    cache = open_test_cache()
    with pytest.raises(ValueError, match="ttl"):
        await cache.set("k", b"v", ttl_seconds=0)
    with pytest.raises(TypeError, match="bytes"):
        await cache.set("k", "text", ttl_seconds=1)  # type: ignore[arg-type]


def test_unknown_scheme_is_rejected() -> None:
    with pytest.raises(ValueError, match="memcached"):
        open_cache("memcached://127.0.0.1:11211")


# -- memory adapter ----------------------------------------------------------------------------------------


async def test_memory_cache_evicts_the_least_recently_used(unique: str) -> None:
    cache = MemoryCache(f"memory://{unique}", max_entries=3)
    for key in ("a", "b", "c"):
        await cache.set(key, key.encode(), ttl_seconds=30)
    assert await cache.get("a") == b"a"  # now "b" is the least recently used
    await cache.set("d", b"d", ttl_seconds=30)
    assert [await cache.get(k) for k in ("a", "b", "c", "d")] == [b"a", None, b"c", b"d"]
    assert len(cache) == 3


async def test_memory_cache_ttl_follows_its_clock(unique: str) -> None:
    now = [100.0]
    cache = MemoryCache(f"memory://{unique}", clock=lambda: now[0])
    await cache.set("k", b"v", ttl_seconds=10)
    now[0] = 109.9
    assert await cache.get("k") == b"v"
    now[0] = 110.0
    assert await cache.get("k") is None
    assert len(cache) == 0


# -- redis adapter when Redis is not there -----------------------------------------------------------------


@pytest.fixture
async def dead_redis_cache() -> AsyncIterator[RedisCache]:
    cache = RedisCache("redis://127.0.0.1:1/0", prefix="x:", breaker_cooldown=30)
    yield cache
    await cache.close()


async def test_unreachable_redis_means_no_cache_not_an_error(
    dead_redis_cache: RedisCache, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="services.ports.cache_redis")
    for n in range(20):
        started = time.monotonic()
        assert await dead_redis_cache.get(f"k{n}") is None
        await dead_redis_cache.set(f"k{n}", b"v", ttl_seconds=5)
        assert time.monotonic() - started < 1.0
    breaker = dead_redis_cache.breaker
    # One real attempt opened the breaker; the other 39 calls never touched the network.
    assert (breaker.opened, breaker.probes, breaker.short_circuited) == (1, 0, 39)
    assert len(caplog.records) == 1, "an outage is logged once, not once per call"
    assert "unreachable" in caplog.records[0].getMessage()
    assert await dead_redis_cache.check() is False


async def test_breaker_probes_again_after_the_cooldown(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="services.ports.cache_redis")
    now = [0.0]
    cache = RedisCache("redis://127.0.0.1:1/0", breaker_cooldown=5, clock=lambda: now[0])
    try:
        assert await cache.get("k") is None  # fails for real: opens
        assert await cache.get("k") is None  # short-circuited
        now[0] = 5.0
        assert await cache.get("k") is None  # the probe: fails for real, stays open
        assert await cache.get("k") is None  # short-circuited again
        assert (cache.breaker.opened, cache.breaker.probes, cache.breaker.short_circuited) == (1, 1, 2)
        assert len(caplog.records) == 1
    finally:
        await cache.close()


async def test_a_redis_that_never_answers_times_out_quickly(caplog: pytest.LogCaptureFixture) -> None:
    # Accepts connections and never replies: only the socket timeout can end the call.
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    cache = RedisCache(f"redis://127.0.0.1:{port}/0", socket_timeout=0.1, connect_timeout=0.1)
    try:
        started = time.monotonic()
        assert await cache.get("k") is None
        assert time.monotonic() - started < 1.0
        assert cache.breaker.is_open
        await cache.set("k", b"v", ttl_seconds=5)
        assert cache.breaker.short_circuited == 1  # no second wait for a timeout
    finally:
        await cache.close()
        server.close()
        await server.wait_closed()


def test_circuit_breaker_states() -> None:
    now = [0.0]
    breaker = CircuitBreaker(cooldown=2, clock=lambda: now[0])
    assert breaker.allow() and not breaker.is_open
    assert breaker.failed() is True  # outage starts
    assert breaker.allow() is False
    now[0] = 2.0
    assert breaker.allow() is True  # one probe...
    assert breaker.allow() is False  # ...at a time
    assert breaker.failed() is False  # still the same outage
    now[0] = 4.0
    assert breaker.allow() is True
    breaker.abandon()  # the probe was cancelled: the next call probes instead
    assert breaker.allow() is True
    assert breaker.succeeded() is True  # outage over
    assert breaker.allow() and not breaker.is_open
    assert (breaker.opened, breaker.probes) == (1, 3)


@pytest.mark.integration
async def test_redis_cache_recovers_when_redis_is_back(unique: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="services.ports.cache_redis")
    now = [0.0]
    cache = RedisCache(REDIS_URL, prefix=f"nova-test:{unique}:", breaker_cooldown=5, clock=lambda: now[0])
    try:
        cache.breaker.failed()  # as if an outage had just been seen
        await cache.set("k", b"v", ttl_seconds=5)  # skipped while open
        now[0] = 5.0
        assert await cache.get("k") is None  # the probe reaches Redis: a miss, since the set was skipped
        assert not cache.breaker.is_open
        await cache.set("k", b"v", ttl_seconds=5)
        assert await cache.get("k") == b"v"
        assert [r.getMessage() for r in caplog.records if "reachable again" in r.getMessage()]
    finally:
        await cache.close()
        client = aioredis.Redis.from_url(REDIS_URL)
        await client.delete(f"nova-test:{unique}:k")
        await client.aclose()
