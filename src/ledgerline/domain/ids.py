"""Identifiers that grow with time (UUIDv7, RFC 9562): a millisecond Unix
timestamp, then 74 random bits. Rows keyed by them go in at the end of
their primary key's index instead of all over it, which keeps inserting
cheap as a table grows (the outbox, imported users)."""

from __future__ import annotations

import os
import time
import uuid

_VERSION_7 = 0x7 << 76
_VARIANT = 0b10 << 62
_LOW_62_BITS = (1 << 62) - 1


def uuid7_int(unix_ms: int, random_bits: int) -> int:
    """The 128 bits of the UUIDv7 for ``unix_ms`` and 74 of ``random_bits``."""
    return (
        (unix_ms << 80)
        | _VERSION_7
        | ((random_bits >> 62) & 0xFFF) << 64
        | _VARIANT
        | (random_bits & _LOW_62_BITS)
    )


def uuid7() -> uuid.UUID:
    return uuid.UUID(int=uuid7_int(time.time_ns() // 1_000_000, int.from_bytes(os.urandom(10))))
