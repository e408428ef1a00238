"""Both LockManager adapters against the real servers: exclusive, fail-fast,
owner-only release and extend, and expiry after the TTL."""

from __future__ import annotations

import asyncio
import signal
import sys
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest
import redis.asyncio as redis

from ledgerline.domain.errors import UnavailableError
from ledgerline.domain.ports import LockManager
from ledgerline.platform.deadline import within
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


# --------------------------------------------------------------------------
# The PostgreSQL adapter's failure modes


async def test_a_lock_pool_that_cannot_connect_is_unavailable(database_url: str) -> None:
    closed = await asyncpg.create_pool(database_url, min_size=0, max_size=1)
    await closed.close()
    with pytest.raises(UnavailableError):
        await PostgresLockManager(closed).try_acquire(_key(), 5)


async def test_a_lock_pool_with_no_free_connection_before_the_deadline(
    database_url: str,
) -> None:
    small = await asyncpg.create_pool(database_url, min_size=0, max_size=1)
    try:
        async with small.acquire():  # the only connection is taken
            # The request's timeout ends the wait (as it does in the service).
            with pytest.raises(TimeoutError):
                async with within(0.2):
                    await PostgresLockManager(small).try_acquire(_key(), 5)
    finally:
        await small.close()


async def test_release_after_the_lock_connection_was_cut_does_not_raise(
    pool: asyncpg.Pool, database_url: str
) -> None:
    locks = PostgresLockManager(pool)
    key = _key()
    lease = await locks.try_acquire(key, 5)
    assert lease is not None
    holder = await pool.fetchval(
        "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted "
        "AND objid = (hashtextextended($1, 0) & 4294967295)::oid",
        key,
    )
    assert isinstance(holder, int)
    assert await pool.fetchval("SELECT pg_terminate_backend($1)", holder)

    await lease.release()  # no exception: the work under the lock is done

    again = await locks.try_acquire(key, 5)
    assert again is not None
    assert await again.release()


_HOLDER = """
import asyncio, sys
import asyncpg
from ledgerline.platform.locks import PostgresLockManager

async def main() -> None:
    pool = await asyncpg.create_pool(sys.argv[1], min_size=0, max_size=1)
    lease = await PostgresLockManager(pool).try_acquire(sys.argv[2], float(sys.argv[3]))
    print("locked" if lease else "busy", flush=True)
    await asyncio.sleep(3600)

asyncio.run(main())
"""


async def test_a_frozen_holder_loses_the_lock_at_its_ttl(
    pool: asyncpg.Pool, database_url: str
) -> None:
    """The holder's own timer cannot run while its process is stopped: the
    server ends the idle session, and the lock with it."""
    key, ttl = _key(), 1.0
    holder = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _HOLDER, database_url, key, str(ttl),
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        assert holder.stdout is not None
        assert (await asyncio.wait_for(holder.stdout.readline(), 30)).strip() == b"locked"
        holder.send_signal(signal.SIGSTOP)
        locks = PostgresLockManager(pool)
        assert await locks.try_acquire(key, 5) is None
        lease = None
        for _ in range(100):  # the server checks idle sessions at the timeout
            await asyncio.sleep(0.1)
            lease = await locks.try_acquire(key, 5)
            if lease is not None:
                break
        assert lease is not None, "the frozen holder kept the lock past its TTL"
        assert await lease.release()
    finally:
        holder.kill()
        await holder.wait()


class _ReplyLostRedis:
    """Sends SET to the real Redis, then is cancelled before the reply is
    read, as a request deadline would do."""

    def __init__(self, inner: redis.Redis) -> None:
        self._inner = inner

    def register_script(self, script: str) -> object:
        return self._inner.register_script(script)

    async def set(self, *args: object, **kwargs: object) -> object:
        await self._inner.set(*args, **kwargs)  # type: ignore[arg-type]
        raise asyncio.CancelledError


async def test_a_redis_lock_whose_reply_was_lost_to_a_cancellation_is_undone(
    redis_url: str | None,
) -> None:
    client = redis.Redis.from_url(require_redis(redis_url))
    try:
        locks = RedisLockManager(_ReplyLostRedis(client))  # type: ignore[arg-type]
        key = _key()
        with pytest.raises(asyncio.CancelledError):
            await locks.try_acquire(key, 30)
        for _ in range(50):  # the undo runs in the background
            if not await client.exists(key):
                break
            await asyncio.sleep(0.02)
        assert not await client.exists(key), "the lock stayed held until its TTL"
        again = await RedisLockManager(client).try_acquire(key, 5)
        assert again is not None
        assert await again.release()
    finally:
        await client.aclose()
