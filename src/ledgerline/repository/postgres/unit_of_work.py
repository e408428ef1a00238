"""A unit of work is one transaction on one pooled connection. Repositories
are bound to that connection; only ``commit()`` makes their writes stick.

Every step keeps the request deadline: the checkout, BEGIN and COMMIT get
what remains of it, and the way out (ROLLBACK, the hand-back) goes through
platform.database.release, which terminates a connection rather than wait
for it past the deadline."""

from __future__ import annotations

from types import TracebackType
from typing import Self

import asyncpg
from asyncpg.pool import PoolConnectionProxy
from opentelemetry.trace import Tracer

from ledgerline.platform.database import acquire, release
from ledgerline.repository.postgres.errors import translated
from ledgerline.repository.postgres.executor import Database
from ledgerline.repository.postgres.orders import PostgresOrderRepository
from ledgerline.repository.postgres.outbox import PostgresOutbox
from ledgerline.repository.postgres.users import PostgresUserRepository


class PostgresUnitOfWork:
    users: PostgresUserRepository
    orders: PostgresOrderRepository
    outbox: PostgresOutbox

    def __init__(self, pool: asyncpg.Pool, db: Database) -> None:
        self._pool = pool
        self._db = db
        self._conn: PoolConnectionProxy | None = None
        self._tx: Database | None = None
        self._committed = False

    @translated
    async def __aenter__(self) -> Self:
        conn = await acquire(self._pool)
        try:
            # Plain statements rather than asyncpg's Transaction, whose
            # BEGIN, COMMIT and ROLLBACK take no timeout (they would wait the
            # pool's command_timeout instead of the deadline).
            tx = self._db.on(conn)
            await tx.execute("BEGIN")
        except BaseException:
            await release(self._pool, conn)
            raise
        self._conn, self._tx = conn, tx
        self.users = PostgresUserRepository(tx)
        self.orders = PostgresOrderRepository(tx)
        self.outbox = PostgresOutbox(tx)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        conn, self._conn, self._tx = self._conn, None, None
        if conn is None:
            return
        # Not committed: rolled back, or, if the ROLLBACK fails or the
        # deadline has passed, the connection is terminated and the server
        # rolls back. Either way nothing is raised here: the error the block
        # raised (a failed COMMIT, say) is the one to report.
        await release(self._pool, conn, None if self._committed else "ROLLBACK")

    async def commit(self) -> None:
        if self._tx is None:
            raise RuntimeError("commit() outside the unit of work's block")
        await self._tx.execute("COMMIT")
        self._committed = True


class PostgresUnitOfWorkFactory:
    def __init__(self, pool: asyncpg.Pool, tracer: Tracer | None = None) -> None:
        self._pool = pool
        self._db = Database(pool, tracer)

    def __call__(self) -> PostgresUnitOfWork:
        return PostgresUnitOfWork(self._pool, self._db)
