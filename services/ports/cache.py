"""The cache port: ``open_cache(url)`` for ``memory://[name]`` or ``redis://host:port/db``, ``rediss://``.

A cache is advisory: a miss and an unreachable cache look the same to the caller (``get`` returns ``None``,
``set`` does nothing), so the service keeps answering from its own store when Redis is down. Keys are text,
values bytes, every entry has a TTL; ``prefix`` namespaces the keys (one prefix per service and purpose, e.g.
``analytics:kpi:``), so two users of one Redis database never read each other's entries.

Entries are never invalidated explicitly: callers put the data version (e.g. the data watermark) in the key,
so new data means new keys and the old ones age out by TTL or LRU.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable
from urllib.parse import urlsplit

__all__ = ["Cache", "check_entry", "open_cache"]


@runtime_checkable
class Cache(Protocol):
    async def get(self, key: str) -> bytes | None:
        """The value stored under ``key``, or ``None`` on a miss, an expired entry or an unreachable cache."""
        ...

    async def set(self, key: str, value: bytes, ttl_seconds: float) -> None:
        """Store ``value`` for ``ttl_seconds``; silently skipped when the cache is unreachable."""
        ...

    async def check(self) -> bool:
        """Whether the cache answers now (for health reporting; never raises)."""
        ...

    async def close(self) -> None: ...


def open_cache(url: str, *, prefix: str = "", **opts: Any) -> Cache:
    """The cache adapter named by ``url``'s scheme; ``opts`` go to the adapter's constructor.

    No I/O happens here: an unreachable Redis at start-up only means no cache until it is reachable.
    """
    scheme = urlsplit(url).scheme.lower()
    if scheme == "memory":
        from services.ports.cache_memory import MemoryCache

        return MemoryCache(url, prefix=prefix, **opts)
    if scheme in ("redis", "rediss"):
        from services.ports.cache_redis import RedisCache

        return RedisCache(url, prefix=prefix, **opts)
    raise ValueError(f"unsupported cache URL scheme {scheme!r}: use memory:// or redis(s)://")


def check_entry(key: str, value: bytes, ttl_seconds: float) -> None:
    """Reject what no adapter can store: these are programming errors, raised even when Redis is down."""
    if not isinstance(key, str) or not key:
        raise ValueError("cache key must be a non-empty str")
    if not isinstance(value, bytes | bytearray | memoryview):
        raise TypeError(f"cache value must be bytes, got {type(value).__name__}")
    if not ttl_seconds > 0:
        raise ValueError(f"ttl_seconds must be > 0, got {ttl_seconds}")
