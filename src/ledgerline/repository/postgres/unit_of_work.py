"""A unit of work is one transaction on one pooled connection. Repositories
are bound to that connection; only ``commit()`` makes their writes stick."""

from __future__ import annotations

from types import TracebackType
from typing import Self

import asyncpg
from asyncpg.pool import PoolConnectionProxy
from asyncpg.transaction import Transaction

from ledgerline.platform.deadline import remaining
from ledgerline.repository.postgres.errors import translated
from ledgerline.repository.postgres.idempotency import PostgresIdempotencyStore
from ledgerline.repository.postgres.ledger import PostgresLedgerRepository
from ledgerline.repository.postgres.orders import PostgresOrderRepository
from ledgerline.repository.postgres.users import PostgresUserRepository


class PostgresUnitOfWork:
    users: PostgresUserRepository
    orders: PostgresOrderRepository
    ledger: PostgresLedgerRepository
    idempotency: PostgresIdempotencyStore

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self._conn: PoolConnectionProxy | None = None
        self._tx: Transaction | None = None
        self._committed = False

    @translated
    async def __aenter__(self) -> Self:
        conn = await self._pool.acquire(timeout=remaining())
        try:
            tx = conn.transaction()
            await tx.start()
        except BaseException:
            await self._pool.release(conn)
            raise
        self._conn, self._tx = conn, tx
        self.users = PostgresUserRepository(conn)
        self.orders = PostgresOrderRepository(conn)
        self.ledger = PostgresLedgerRepository(conn)
        self.idempotency = PostgresIdempotencyStore(conn)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        conn, tx = self._conn, self._tx
        self._conn = self._tx = None
        if conn is None or tx is None:
            return
        try:
            if not self._committed:
                await tx.rollback()
        except Exception:
            # A failed (or cut-off) COMMIT leaves the transaction in an
            # error state where ROLLBACK raises too: the first error is the
            # one to report. Releasing the connection cleans it up.
            if exc is None:
                raise
        finally:
            await self._pool.release(conn)

    @translated
    async def commit(self) -> None:
        if self._tx is None:
            raise RuntimeError("commit() outside the unit of work's block")
        await self._tx.commit()
        self._committed = True


class PostgresUnitOfWorkFactory:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    def __call__(self) -> PostgresUnitOfWork:
        return PostgresUnitOfWork(self._pool)
