"""What a repository runs its SQL on: the connection of a unit of work as it
is, or a pool (for single reads and writes outside one) through
PoolExecutor, so that those too take and hand back their connection under
the request deadline, as the unit of work does."""

from __future__ import annotations

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from ledgerline.platform.database import PoolExecutor

Executor = asyncpg.Pool | asyncpg.Connection | PoolConnectionProxy
Queries = asyncpg.Connection | PoolConnectionProxy | PoolExecutor


def queries(db: Executor) -> Queries:
    return PoolExecutor(db) if isinstance(db, asyncpg.Pool) else db
