"""Time-ordered ids (UUIDv7): the version and variant RFC 9562 sets, the
millisecond they were made in, and an order that follows time."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime

import pytest

from ledgerline.domain.events import UserRegistered
from ledgerline.domain.ids import uuid7, uuid7_int


@pytest.mark.parametrize(
    ("unix_ms", "random_bits", "expected"),
    [
        (0, 0, "00000000-0000-7000-8000-000000000000"),
        (1, 0, "00000000-0001-7000-8000-000000000000"),
        (0, (1 << 74) - 1, "00000000-0000-7fff-bfff-ffffffffffff"),
        (0x0123456789AB, 0, "01234567-89ab-7000-8000-000000000000"),
    ],
    ids=["zero", "one-millisecond", "all-random-bits-set", "timestamp-in-front"],
)
def test_layout(unix_ms: int, random_bits: int, expected: str) -> None:
    assert str(uuid.UUID(int=uuid7_int(unix_ms, random_bits))) == expected


def test_an_id_names_the_millisecond_it_was_made_in_and_later_ones_sort_after() -> None:
    before = time.time_ns() // 1_000_000
    first = uuid7()
    time.sleep(0.002)
    second = uuid7()
    after = time.time_ns() // 1_000_000

    assert (first.version, first.variant) == (7, uuid.RFC_4122)
    assert before <= first.int >> 80 <= after
    assert first < second
    assert len({uuid7() for _ in range(10_000)}) == 10_000


def test_events_get_time_ordered_ids() -> None:
    event = UserRegistered(
        occurred_at=datetime.now(UTC), user_id=uuid.uuid4(), email="a@b.c", name="A", is_admin=False
    )
    assert event.id.version == 7
