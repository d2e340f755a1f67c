"""Protobuf wire-format pieces, for the few hot messages whose bytes ingestion writes directly.

Every uploaded line is serialized once as a Record and once more inside its BatchCommitted event;
writing those bytes around cached parts costs a fraction of building message objects. Each user
is checked in the tests against the generated classes' SerializeToString.
"""

from __future__ import annotations

__all__ = ["length_delimited", "varint"]


def varint(n: int) -> bytes:
    """Base-128 varint of a non-negative integer."""
    # Lengths and sequence numbers are mostly below 2**21: those without a loop.
    if n < 0x80:
        return bytes((n,))
    if n < 0x4000:
        return bytes((n & 0x7F | 0x80, n >> 7))
    if n < 0x200000:
        return bytes((n & 0x7F | 0x80, n >> 7 & 0x7F | 0x80, n >> 14))
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def length_delimited(tag: int, data: bytes) -> bytes:
    """A length-delimited field (string, bytes, message) whose tag fits in one byte (fields 1-15)."""
    n = len(data)
    if n < 0x80:  # the usual short text: a one-byte length
        return bytes((tag, n)) + data
    if n < 0x4000:
        return bytes((tag, n & 0x7F | 0x80, n >> 7)) + data
    return bytes((tag,)) + varint(n) + data
