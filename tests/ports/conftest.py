"""Fixtures for the port contract tests: every test runs against each adapter of its port.

Isolation, so that parallel runs never see each other's data:
- RabbitMQ: the session's own vhost (``amqp_url`` in ``tests/conftest.py``, deleted at the end), plus unique
  exchange and queue names per test.
- Redis: a unique key prefix per test in database 15 of the ``NOVA_TEST_REDIS_URL`` server, keys deleted
  after.
- memory: a uniquely named in-process broker / store per test.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

import pytest
import redis.asyncio as aioredis

from services.ports.bus import EventBus, open_bus
from services.ports.cache import Cache, open_cache

# The Redis server the other tests use, but database 15, so these tests never share a keyspace with them.
REDIS_URL = (
    urlsplit(os.environ.get("NOVA_TEST_REDIS_URL", "redis://127.0.0.1:6379/0"))._replace(path="/15").geturl()
)


@pytest.fixture
def unique() -> str:
    """A name fragment unique to this test, for exchanges, queues, brokers and key prefixes."""
    return f"t{uuid.uuid4().hex[:10]}"


BusFactory = Callable[..., Awaitable[EventBus]]


@pytest.fixture(params=["memory", pytest.param("rabbitmq", marks=pytest.mark.integration)])
def bus_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def open_test_bus(
    bus_kind: str, unique: str, request: pytest.FixtureRequest
) -> AsyncIterator[BusFactory]:
    """Opens buses on this test's own broker (memory) or exchange (RabbitMQ); all closed at teardown.

    Buses opened by one test share the broker and exchange, like the replicas of a service do.
    """
    url = f"memory://{unique}" if bus_kind == "memory" else request.getfixturevalue("amqp_url")
    opened: list[EventBus] = []

    async def factory(**opts: Any) -> EventBus:
        bus = await open_bus(url, exchange=f"{unique}.events", **opts)
        opened.append(bus)
        return bus

    yield factory
    for bus in opened:
        await bus.close()


@pytest.fixture
async def bus(open_test_bus: BusFactory) -> EventBus:
    return await open_test_bus()


CacheFactory = Callable[..., Cache]


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.integration)])
async def open_test_cache(request: pytest.FixtureRequest, unique: str) -> AsyncIterator[CacheFactory]:
    """Opens caches on one backend; ``prefix`` extends this test's unique prefix. Keys deleted after."""
    base = f"nova-test:{unique}:"
    url = f"memory://{unique}" if request.param == "memory" else REDIS_URL
    opened: list[Cache] = []

    def factory(prefix: str = "", **opts: Any) -> Cache:
        cache = open_cache(url, prefix=base + prefix, **opts)
        opened.append(cache)
        return cache

    yield factory
    for cache in opened:
        await cache.close()
    if request.param == "redis":
        client = aioredis.Redis.from_url(REDIS_URL)
        try:
            keys = [key async for key in client.scan_iter(match=f"{base}*")]
            if keys:
                await client.delete(*keys)
        finally:
            await client.aclose()
