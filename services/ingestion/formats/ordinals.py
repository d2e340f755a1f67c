"""How many times each (requisition, material) pair has occurred so far, in little memory.

A reader numbers repeated lines of a requisition ("010825#1", "010825#2"), so it must remember every
pair it has seen, and nearly every pair of an export occurs once: in a Counter, a million-line file
keeps ~90 MB of dict entries and int objects (more while the dict resizes). Here a pair seen once
costs 8 bytes in a sorted numpy array (plus a bit of a fixed 4 MB filter); only pairs seen twice or
more, the few, have a dict entry. The counts are exactly those of a Counter of the same keys.
"""

from __future__ import annotations

import numpy as np

__all__ = ["Ordinals"]

_FILTER_BITS = 1 << 25  # 4 MB; at a million pairs ~3% of new pairs need the exact lookup
_FLUSH = 1 << 16  # pairs kept in a set before they join the sorted array


class Ordinals:
    """``next(key)`` is 1 the first time a 64-bit key is given, then 2, 3..."""

    def __init__(self) -> None:
        self._filter = bytearray(_FILTER_BITS // 8)  # a bit per key hash: clear means "never seen"
        self._recent: set[int] = set()  # seen once, not yet in _once
        self._once = np.empty(0, dtype=np.uint64)  # seen once, sorted
        self._many: dict[int, int] = {}  # seen more than once: count so far

    def next(self, key: int) -> int:
        count = self._many.get(key)
        if count is not None:
            self._many[key] = count + 1
            return count + 1
        bit = key % _FILTER_BITS
        mask = 1 << (bit & 7)
        if self._filter[bit >> 3] & mask and (key in self._recent or self._in_once(key)):
            self._many[key] = 2
            return 2
        self._filter[bit >> 3] |= mask
        self._recent.add(key)
        if len(self._recent) >= _FLUSH:
            self._flush()
        return 1

    def _in_once(self, key: int) -> bool:
        at = int(self._once.searchsorted(np.uint64(key)))
        return at < len(self._once) and int(self._once[at]) == key

    def _flush(self) -> None:
        added = np.fromiter(self._recent, dtype=np.uint64, count=len(self._recent))
        added.sort()
        self._once = np.insert(self._once, self._once.searchsorted(added), added)
        self._recent.clear()
