"""OrderRepository over asyncpg, plain SQL."""

from __future__ import annotations

from datetime import datetime

import asyncpg

from ledgerline.domain.money import Money
from ledgerline.domain.order import Order, OrderId, OrderStatus
from ledgerline.repository.postgres.executor import Database, Executor, database

ORDER_COLUMNS = (
    "id, payer_id, payee_id, amount, currency, description, status, created_at, updated_at, paid_at"
)


def to_order(row: asyncpg.Record) -> Order:
    return Order(
        id=row["id"],
        payer_id=row["payer_id"],
        payee_id=row["payee_id"],
        money=Money(row["amount"], row["currency"]),
        description=row["description"],
        status=OrderStatus(row["status"]),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        paid_at=row["paid_at"],
    )


class PostgresOrderRepository:
    def __init__(self, db: Executor | Database) -> None:
        self._db = database(db)

    async def add(self, order: Order) -> None:
        await self._db.execute(
            f"INSERT INTO orders ({ORDER_COLUMNS}) "  # noqa: S608
            "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
            order.id,
            order.payer_id,
            order.payee_id,
            order.money.amount,
            order.money.currency,
            order.description,
            str(order.status),
            order.created_at,
            order.updated_at,
            order.paid_at,
        )

    async def get(self, order_id: OrderId) -> Order | None:
        row = await self._db.fetchrow(
            f"SELECT {ORDER_COLUMNS} FROM orders WHERE id = $1",  # noqa: S608
            order_id,
        )
        return None if row is None else to_order(row)

    async def lock_pending_created_before(self, cutoff: datetime, limit: int) -> list[Order]:
        rows = await self._db.fetch(
            f"SELECT {ORDER_COLUMNS} FROM orders "  # noqa: S608
            "WHERE status = 'pending' AND created_at < $1 "
            "ORDER BY created_at LIMIT $2 FOR UPDATE SKIP LOCKED",
            cutoff,
            limit,
        )
        return [to_order(row) for row in rows]

    async def update(self, order: Order) -> None:
        await self._db.execute(
            "UPDATE orders SET status = $2, updated_at = $3, paid_at = $4 WHERE id = $1",
            order.id,
            str(order.status),
            order.updated_at,
            order.paid_at,
        )
