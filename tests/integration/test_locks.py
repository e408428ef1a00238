"""Both LockManager adapters against the real servers: exclusive, fail-fast,
owner-only release and extend, and expiry after the TTL."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest
import redis.asyncio as redis

from ledgerline.domain.ports import LockManager
from ledgerline.platform.locks import PostgresLockManager, RedisLockManager
from tests.conftest import require_redis


@pytest.fixture(params=["postgres", "redis"])
async def locks(
    request: pytest.FixtureRequest, pool: asyncpg.Pool, redis_url: str | None
) -> AsyncIterator[LockManager]:
    if request.param == "postgres":
        yield PostgresLockManager(pool)
        return
    client = redis.Redis.from_url(require_redis(redis_url))
    try:
        yield RedisLockManager(client)
    finally:
        await client.aclose()


def _key() -> str:
    return f"payment-lock-{uuid.uuid4()}"


async def test_second_acquire_fails_fast_until_release(locks: LockManager) -> None:
    key = _key()
    first = await locks.try_acquire(key, 5)
    assert first is not None
    assert await locks.try_acquire(key, 5) is None
    assert await first.release() is True
    again = await locks.try_acquire(key, 5)
    assert again is not None
    assert await again.release() is True


async def test_locks_on_different_keys_are_independent(locks: LockManager) -> None:
    a, b = await locks.try_acquire(_key(), 5), await locks.try_acquire(_key(), 5)
    assert a is not None
    assert b is not None
    assert await a.release()
    assert await b.release()


async def test_expired_lease_cannot_release_the_next_holder(locks: LockManager) -> None:
    key = _key()
    stale = await locks.try_acquire(key, 0.1)
    assert stale is not None
    await asyncio.sleep(0.3)
    current = await locks.try_acquire(key, 5)
    assert current is not None, "the lock did not expire after its TTL"
    assert await stale.release() is False
    assert await locks.try_acquire(key, 5) is None, "a stale release freed someone else's lock"
    assert await stale.extend(5) is False
    assert await current.release() is True


async def test_extend_keeps_the_lock_past_its_first_ttl(locks: LockManager) -> None:
    key = _key()
    lease = await locks.try_acquire(key, 0.3)
    assert lease is not None
    assert await lease.extend(5) is True
    await asyncio.sleep(0.5)
    assert await locks.try_acquire(key, 5) is None
    assert await lease.release() is True


async def test_many_contenders_one_winner(locks: LockManager) -> None:
    key = _key()
    leases = await asyncio.gather(*(locks.try_acquire(key, 5) for _ in range(20)))
    winners = [lease for lease in leases if lease is not None]
    assert len(winners) == 1
    assert await winners[0].release() is True
