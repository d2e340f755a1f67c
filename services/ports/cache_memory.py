"""In-process cache (``memory://[name]``): LRU with a maximum number of entries and a TTL per entry.

Caches opened with the same URL name share one store while any of them is open, the way several clients share
one Redis database, so key prefixes isolate users here exactly as they do on Redis; the store's size is set
by the first one opened (``max_entries``). Expired entries are dropped when read, or evicted as the least
recently used when the store is full.
"""

from __future__ import annotations

import time
import weakref
from collections import OrderedDict
from collections.abc import Callable
from urllib.parse import urlsplit

from services.ports.cache import check_entry

__all__ = ["DEFAULT_MAX_ENTRIES", "MemoryCache"]

DEFAULT_MAX_ENTRIES = 10_000


class _Store:
    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        # key -> (value, expires at on the monotonic clock); order = recency of use, oldest first.
        self.entries: OrderedDict[str, tuple[bytes, float]] = OrderedDict()


_stores: weakref.WeakValueDictionary[str, _Store] = weakref.WeakValueDictionary()


class MemoryCache:
    """A ``Cache`` held in this process."""

    def __init__(
        self,
        url: str = "memory://",
        *,
        prefix: str = "",
        max_entries: int = DEFAULT_MAX_ENTRIES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme != "memory":
            raise ValueError(f"not a memory:// URL: {url!r}")
        if max_entries < 1:
            raise ValueError(f"max_entries must be >= 1, got {max_entries}")
        name = parts.netloc + parts.path
        store = _stores.get(name)
        if store is None:
            store = _stores[name] = _Store(max_entries)
        self._store = store
        self._prefix = prefix
        self._clock = clock

    async def get(self, key: str) -> bytes | None:
        full_key = self._prefix + key
        entry = self._store.entries.get(full_key)
        if entry is None:
            return None
        value, expires_at = entry
        if self._clock() >= expires_at:
            del self._store.entries[full_key]
            return None
        self._store.entries.move_to_end(full_key)
        return value

    async def set(self, key: str, value: bytes, ttl_seconds: float) -> None:
        check_entry(key, value, ttl_seconds)
        entries = self._store.entries
        full_key = self._prefix + key
        entries[full_key] = (bytes(value), self._clock() + ttl_seconds)
        entries.move_to_end(full_key)
        while len(entries) > self._store.max_entries:
            entries.popitem(last=False)

    async def check(self) -> bool:
        return True

    async def close(self) -> None:
        # The store is shared with other caches of the same name; it goes when the last of them is dropped.
        return None

    def __len__(self) -> int:
        """Entries in the shared store (any prefix), expired ones not yet evicted included."""
        return len(self._store.entries)
