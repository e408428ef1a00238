"""The PostgreSQL idempotency store: records expire, expired keys may be
reused (by idempotency_remember(), the database function every settlement
stores its answer with), and the purge removes only what has expired."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from ledgerline.domain.idempotency import IdempotencyRecord
from ledgerline.repository.postgres.idempotency import PostgresIdempotencyStore, record_args

T0 = datetime(2026, 1, 1, tzinfo=UTC)
DAY = timedelta(hours=24)


class _Store(PostgresIdempotencyStore):
    """The store, and the settlements' way of saving a record."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        super().__init__(pool)
        self._pool = pool

    async def save(self, r: IdempotencyRecord) -> bool:
        saved = await self._pool.fetchval(
            "SELECT idempotency_remember($1, $2, $3, $4, $5::jsonb, $6, $7)", *record_args(r)
        )
        return bool(saved)


def record(caller: uuid.UUID, key: str, at: datetime, result: int = 1) -> IdempotencyRecord:
    return IdempotencyRecord(caller, key, f"fp-{result}", "pay", {"n": result}, at, at + DAY)


async def test_a_live_key_is_kept_and_an_expired_one_is_taken_over(pool: asyncpg.Pool) -> None:
    store, caller = _Store(pool), uuid.uuid4()
    assert await store.save(record(caller, "k", T0)) is True
    assert await store.save(record(caller, "k", T0 + timedelta(hours=1), result=2)) is False
    kept = await store.get(caller, "k", T0 + timedelta(hours=1))
    assert kept is not None
    assert kept.result == {"n": 1}
    assert await store.get(caller, "k", T0 + DAY) is None
    assert await store.save(record(caller, "k", T0 + DAY, result=3)) is True
    taken = await store.get(caller, "k", T0 + DAY)
    assert taken is not None
    assert taken.result == {"n": 3}


async def test_keys_belong_to_their_caller(pool: asyncpg.Pool) -> None:
    store = _Store(pool)
    alice, bob = uuid.uuid4(), uuid.uuid4()
    assert await store.save(record(alice, "shared", T0))
    assert await store.save(record(bob, "shared", T0, result=2))
    got = await store.get(bob, "shared", T0)
    assert got is not None
    assert got.result == {"n": 2}


@pytest.mark.parametrize(("batch", "purged"), [(10, 3), (2, 2)], ids=["all-expired", "batched"])
async def test_purge_removes_only_expired_records(
    pool: asyncpg.Pool, batch: int, purged: int
) -> None:
    store, caller = _Store(pool), uuid.uuid4()
    for i in range(3):
        await store.save(record(caller, f"old-{i}", T0))
    await store.save(record(caller, "fresh", T0 + DAY))
    assert await store.purge(T0 + DAY, batch) == purged
    left = await pool.fetchval("SELECT count(*) FROM idempotency_keys")
    assert left == 4 - purged
    assert await store.get(caller, "fresh", T0 + DAY) is not None
