"""The pool helpers keep the deadline on a server that does not answer: a
connection whose clean-up cannot finish in time is terminated, not waited
on, and one that can goes back to the pool as it was. The test's own
PostgreSQL is frozen (SIGSTOP) to make a server that does not answer."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import asyncpg
import pytest
from asyncpg.pool import PoolConnectionProxy

from ledgerline.platform.database import acquire, create_pool, release
from ledgerline.platform.deadline import deadline_scope, within
from tests.own_postgres import OwnPostgres

DEADLINE = 0.3
# Far beyond the deadline: what the driver would wait without the helpers.
COMMAND_TIMEOUT = 30.0
# What the clean-up may take past the deadline on a loaded machine; the
# driver alone would take COMMAND_TIMEOUT.
MARGIN = 1.0


@pytest.fixture
async def one_connection_pool(own_postgres: OwnPostgres) -> AsyncIterator[asyncpg.Pool]:
    """One connection, so the next checkout shows whether it was kept."""
    pool = await create_pool(
        own_postgres.url, min_size=1, max_size=1, command_timeout=COMMAND_TIMEOUT
    )
    try:
        yield pool
    finally:
        own_postgres.thaw()
        pool.terminate()


async def _session(pool: asyncpg.Pool) -> int:
    async with pool.acquire(timeout=10) as conn:
        return int(conn.get_server_pid())


async def _cut_by_the_deadline(conn: PoolConnectionProxy) -> None:
    """A query that the deadline cuts, as it cuts a request's."""
    with pytest.raises(TimeoutError):
        async with within(DEADLINE):
            await conn.execute("SELECT pg_sleep(60)")


@pytest.mark.parametrize(
    ("frozen", "cut", "kept"),
    [
        (False, False, True),
        (False, True, False),
        (True, False, False),
        (True, True, False),
    ],
    ids=[
        "answering-server-rollback-and-keep",
        "answering-server-past-the-deadline-terminate",
        "frozen-server-rollback-outlives-the-deadline-terminate",
        "frozen-server-past-the-deadline-terminate",
    ],
)
async def test_release_keeps_the_deadline_and_terminates_what_it_cannot_clean(
    own_postgres: OwnPostgres,
    one_connection_pool: asyncpg.Pool,
    frozen: bool,
    cut: bool,
    kept: bool,
) -> None:
    """Released as a unit of work releases it: with a ROLLBACK, under the
    request's deadline, after the deadline cut its last query or not."""
    pool = one_connection_pool
    before = await _session(pool)
    with deadline_scope(DEADLINE):
        conn = await acquire(pool)
        await conn.execute("BEGIN")
        await conn.execute("CREATE TEMPORARY TABLE scratch (n int)")
        if frozen:
            own_postgres.freeze()
        if cut:
            await _cut_by_the_deadline(conn)
        started = time.monotonic()
        await release(pool, conn, "ROLLBACK")
        took = time.monotonic() - started
    own_postgres.thaw()

    assert took < (0 if cut else DEADLINE) + MARGIN
    after = await _session(pool)
    assert (after == before) is kept
    # Whichever way it went, the transaction did not survive it.
    async with pool.acquire(timeout=10) as fresh:
        assert await fresh.fetchval("SELECT to_regclass('pg_temp.scratch')") is None


async def test_a_checkout_from_a_frozen_server_ends_at_the_deadline(
    own_postgres: OwnPostgres,
) -> None:
    """No connection to spare, and a new one is never answered."""
    pool = await create_pool(
        own_postgres.url, min_size=0, max_size=1, command_timeout=COMMAND_TIMEOUT
    )
    try:
        own_postgres.freeze()
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            async with within(DEADLINE):
                await acquire(pool)
        took = time.monotonic() - started
        assert took < DEADLINE + MARGIN
        own_postgres.thaw()
        assert await pool.fetchval("SELECT 1", timeout=10) == 1
    finally:
        own_postgres.thaw()
        await asyncio.wait_for(pool.close(), 10)
