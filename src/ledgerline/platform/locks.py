"""LockManager adapters. Redis (SET NX PX, owner-token release and extend
in Lua) when Redis is configured; PostgreSQL advisory locks otherwise. Every
lock has a TTL that the lock service enforces: a holder that stalls loses
it, which the payment transaction tolerates (it re-reads the order under a
row lock)."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import Iterator

import asyncpg
import redis.asyncio as redis
from redis.commands.core import AsyncScript
from redis.exceptions import RedisError

from ledgerline.domain.errors import DeadlineExceededError, UnavailableError
from ledgerline.platform.database import acquire, release
from ledgerline.platform.deadline import cleanup_budget, remaining
from ledgerline.platform.logging import get_logger

_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then
    return redis.call('del', KEYS[1])
end
return 0
"""
_EXTEND = """
if redis.call('get', KEYS[1]) == ARGV[1] then
    return redis.call('pexpire', KEYS[1], ARGV[2])
end
return 0
"""


# Every lock command is bounded by an asyncio timeout: the request's
# deadline, or this outside one (a background undo, a command-line run). The
# client itself runs without a socket timeout, which would wrap every read
# of every command in a task of its own.
COMMAND_TIMEOUT_SECONDS = 2.0


def _millis(seconds: float) -> int:
    return max(1, round(seconds * 1000))


class RedisLease:
    def __init__(self, manager: RedisLockManager, key: str, token: str) -> None:
        self._manager = manager
        self.key = key
        self.token = token

    async def extend(self, ttl_seconds: float) -> bool:
        result = await self._manager.run(
            self._manager.extend_script,
            self.key,
            self.token,
            _millis(ttl_seconds),
            within=remaining(),
        )
        return result == 1

    async def release(self) -> bool:
        """Within the request's clean-up budget: its deadline, plus a short
        grace when the release comes after it (a request cut by a frozen
        database still hands its lock back to a Redis that answers)."""
        return await self.release_within(cleanup_budget())

    async def release_within(self, seconds: float | None) -> bool:
        try:
            script = self._manager.release_script
            return await self._manager.run(script, self.key, self.token, within=seconds) == 1
        except (UnavailableError, DeadlineExceededError):
            # The work under the lock is done (and maybe committed): a failed
            # release must not turn it into an error. The TTL frees the key.
            get_logger("ledgerline.locks").warning("lock release failed", key=self.key)
            return False


class RedisLockManager:
    def __init__(self, client: redis.Redis) -> None:
        self._client = client
        self._undoing: set[asyncio.Task[bool]] = set()
        self.release_script = client.register_script(_RELEASE)
        self.extend_script = client.register_script(_EXTEND)

    async def try_acquire(self, key: str, ttl_seconds: float) -> RedisLease | None:
        token = secrets.token_hex(16)
        try:
            # The client's own timeouts (socket timeout, retries) may add up
            # to more than the deadline.
            async with asyncio.timeout(remaining(COMMAND_TIMEOUT_SECONDS)):
                acquired = await self._client.set(key, token, nx=True, px=_millis(ttl_seconds))
        except RedisError as exc:
            raise UnavailableError("the lock service is unavailable") from exc
        except (asyncio.CancelledError, TimeoutError) as exc:
            # Cancelled (a deadline) after sending: Redis may have set the
            # key with nobody left to release it. Undo it with the token,
            # which can only delete our own key.
            self._undo(RedisLease(self, key, token))
            if isinstance(exc, TimeoutError):
                raise DeadlineExceededError() from exc
            raise
        return RedisLease(self, key, token) if acquired else None

    def _undo(self, lease: RedisLease) -> None:
        # In the background, past the request: bounded by the command
        # timeout, not by the deadline that cut the SET.
        task = asyncio.get_running_loop().create_task(lease.release_within(None))
        self._undoing.add(task)
        task.add_done_callback(self._undoing.discard)

    async def run(
        self, script: AsyncScript, key: str, *args: str | int, within: float | None
    ) -> int:
        """Runs a lock script, given up after ``within`` seconds (a
        DeadlineExceededError); None: after COMMAND_TIMEOUT_SECONDS."""
        try:
            async with asyncio.timeout(COMMAND_TIMEOUT_SECONDS if within is None else within):
                result = await script(keys=[key], args=list(args))
        except RedisError as exc:
            raise UnavailableError("the lock service is unavailable") from exc
        except TimeoutError as exc:
            raise DeadlineExceededError() from exc
        return int(result)


# Errors of the lock pool's connections: the lock service is unavailable.
# (TimeoutError is an OSError: it is caught before these, as a deadline.)
_PG_UNAVAILABLE = (
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
    OSError,
)


@contextlib.contextmanager
def _lock_pool_errors() -> Iterator[None]:
    """The lock pool's errors in the domain's terms."""
    try:
        yield
    except TimeoutError as exc:
        raise DeadlineExceededError() from exc
    except _PG_UNAVAILABLE as exc:
        raise UnavailableError("the lock service is unavailable") from exc


# Takes the lock and has the server enforce its TTL: a session that stays
# idle past idle_session_timeout is ended by the server, which frees the lock
# even if this process is frozen or cut off. (The pool's full reset on
# release puts the setting back.)
_TRY_LOCK = (
    "SELECT pg_try_advisory_lock(hashtextextended($1, 0)) "
    "FROM (SELECT set_config('idle_session_timeout', $2, false)) AS ttl"
)
_SET_TTL = "SELECT set_config('idle_session_timeout', $1, false)"
_UNLOCK = "SELECT pg_advisory_unlock(hashtextextended($1, 0))"


class PostgresLease:
    """A session-level advisory lock on a connection of its own. Its TTL is
    kept twice: by the server (the idle session is ended) and by the holder
    (a timer unlocks it), as a Redis key would expire."""

    def __init__(
        self, pool: asyncpg.Pool, conn: asyncpg.pool.PoolConnectionProxy, key: str, ttl: float
    ) -> None:
        self._pool = pool
        self._conn: asyncpg.pool.PoolConnectionProxy | None = conn
        self.key = key
        self._timer = asyncio.get_running_loop().call_later(ttl, self._expire)
        self._expiry: asyncio.Task[bool] | None = None

    def _expire(self) -> None:
        get_logger("ledgerline.locks").warning("lock expired before release", key=self.key)
        self._expiry = asyncio.get_running_loop().create_task(self._unlock())

    async def _unlock(self) -> bool:
        """Never raises: the work under the lock is done (and may have
        committed), so a failed unlock must not turn it into an error. Past
        the deadline, or when the unlock fails, the connection is
        terminated instead, and the server's end of its session frees the
        lock (see platform.database.release)."""
        conn, self._conn = self._conn, None
        if conn is None:
            return False
        await release(self._pool, conn, _UNLOCK, self.key)
        return True

    async def extend(self, ttl_seconds: float) -> bool:
        conn = self._conn
        if conn is None:
            return False
        try:
            await conn.fetchval(_SET_TTL, f"{_millis(ttl_seconds)}ms", timeout=remaining(5))
        except Exception:  # noqa: BLE001 - the session is gone, and the lock with it
            get_logger("ledgerline.locks").warning("lock extend failed", key=self.key)
            return False
        self._timer.cancel()
        self._timer = asyncio.get_running_loop().call_later(ttl_seconds, self._expire)
        return True

    async def release(self) -> bool:
        self._timer.cancel()
        return await self._unlock()


class PostgresLockManager:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def try_acquire(self, key: str, ttl_seconds: float) -> PostgresLease | None:
        with _lock_pool_errors():
            conn = await acquire(self._pool)
        try:
            with _lock_pool_errors():
                acquired = await conn.fetchval(
                    _TRY_LOCK, key, f"{_millis(ttl_seconds)}ms", timeout=remaining()
                )
        except BaseException:
            await release(self._pool, conn)  # and whatever the cut query did, with it
            raise
        if not acquired:
            await release(self._pool, conn)
            return None
        return PostgresLease(self._pool, conn, key, ttl_seconds)
