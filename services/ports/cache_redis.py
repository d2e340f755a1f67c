"""Redis cache (``redis://host:port/db``, ``rediss://...``) that degrades to "no cache" when Redis is down.

Every call is bounded by small socket timeouts and no client-side retries. On a connection failure a circuit
breaker opens: for ``breaker_cooldown`` seconds calls return at once (``get`` -> ``None``, ``set`` skipped)
instead of each waiting for a timeout, then one call probes Redis again; the outage is logged once when it
starts and once when it ends. Errors Redis itself replies with (e.g. OOM) are logged and also never reach the
caller.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar
from urllib.parse import urlsplit, urlunsplit

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from services.ports.cache import check_entry

__all__ = ["CircuitBreaker", "RedisCache"]

log = logging.getLogger(__name__)

T = TypeVar("T")

# Failures that mean "Redis is not reachable now" (as opposed to an error reply from a working server).
_UNREACHABLE = (RedisConnectionError, RedisTimeoutError, OSError, TimeoutError)


class CircuitBreaker:
    """Closed -(failure)-> open for ``cooldown`` s -> one probe call -> closed on success, open on failure."""

    def __init__(self, cooldown: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.cooldown = cooldown
        self._clock = clock
        self._open_until: float | None = None
        self._probing = False
        self.opened = 0
        """Times the breaker went from closed to open (outages seen)."""
        self.short_circuited = 0
        """Calls answered without touching Redis because the breaker was open."""
        self.probes = 0
        """Calls let through to test whether Redis is back."""

    @property
    def is_open(self) -> bool:
        return self._open_until is not None

    def allow(self) -> bool:
        if self._open_until is None:
            return True
        if not self._probing and self._clock() >= self._open_until:
            self._probing = True
            self.probes += 1
            return True
        self.short_circuited += 1
        return False

    def succeeded(self) -> bool:
        """Record a working call; True if that ended an outage."""
        was_open = self._open_until is not None
        self._open_until = None
        self._probing = False
        return was_open

    def failed(self) -> bool:
        """Record an unreachable Redis; True if that started an outage."""
        was_open = self._open_until is not None
        self._open_until = self._clock() + self.cooldown
        self._probing = False
        if not was_open:
            self.opened += 1
        return not was_open

    def abandon(self) -> None:
        """A call ended without a verdict (cancelled): let the next call probe instead."""
        self._probing = False


def _redact(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@", 1)))


class RedisCache:
    """A ``Cache`` on Redis; see the module docstring for how it behaves when Redis is down."""

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "",
        socket_timeout: float = 0.25,
        connect_timeout: float = 0.25,
        breaker_cooldown: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._url = _redact(url)
        self._prefix = prefix
        # One attempt per call: a retry would double the time a caller waits on a dead server, and the
        # breaker, not the client, decides when to try again.
        self._client = aioredis.Redis.from_url(
            url,
            socket_timeout=socket_timeout,
            socket_connect_timeout=connect_timeout,
            retry=Retry(NoBackoff(), 0),
        )
        # Backstop for anything the socket timeouts do not cover (e.g. name resolution).
        self._call_timeout = connect_timeout + socket_timeout + 0.25
        self.breaker = CircuitBreaker(breaker_cooldown, clock=clock)

    async def get(self, key: str) -> bytes | None:
        if not isinstance(key, str) or not key:
            raise ValueError("cache key must be a non-empty str")
        value = await self._call("GET", lambda: self._client.get(self._prefix + key))
        if value is None or isinstance(value, bytes):
            return value
        return str(value).encode()  # only if someone configured decode_responses; values are bytes

    async def set(self, key: str, value: bytes, ttl_seconds: float) -> None:
        check_entry(key, value, ttl_seconds)
        milliseconds = max(1, round(ttl_seconds * 1000))
        await self._call("SET", lambda: self._client.set(self._prefix + key, bytes(value), px=milliseconds))

    async def check(self) -> bool:
        # Health asks the server directly, even with the breaker open, and its answer updates the breaker.
        return await self._call("PING", self._client.ping, use_breaker=False) is not None

    async def close(self) -> None:
        await self._client.aclose()

    async def _call(
        self, what: str, command: Callable[[], Awaitable[T]], *, use_breaker: bool = True
    ) -> T | None:
        if use_breaker and not self.breaker.allow():
            return None
        try:
            async with asyncio.timeout(self._call_timeout):
                result = await command()
        except _UNREACHABLE as exc:
            if self.breaker.failed():
                log.warning(
                    "redis cache at %s unreachable (%r): serving without cache, retrying every %.1f s",
                    self._url,
                    exc,
                    self.breaker.cooldown,
                )
            return None
        except RedisError as exc:
            self.breaker.succeeded()  # the server answered: it is reachable, just refused this command
            log.warning("redis cache %s failed: %r", what, exc)
            return None
        except BaseException:
            self.breaker.abandon()  # cancelled: no verdict on Redis
            raise
        if self.breaker.succeeded():
            log.warning("redis cache at %s reachable again", self._url)
        return result
