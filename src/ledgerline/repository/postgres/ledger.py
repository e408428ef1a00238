"""LedgerRepository over asyncpg: balances and entries as their owner reads
them. Transfers are written by the settlement functions (settlements.py,
migration 0005): balances live on the account rows and move in the same
transaction as the entries; the database refuses a negative wallet
(ck_balances_non_negative) and a transfer that is not one balanced double
entry (a deferred constraint trigger, once per transfer)."""

from __future__ import annotations

from ledgerline.domain.ledger import (
    Balance,
    EntryPage,
    LedgerEntry,
    TransferKind,
    decode_cursor,
    encode_cursor,
)
from ledgerline.domain.user import UserId
from ledgerline.repository.postgres.executor import Database, Executor, database

_ENTRY_COLUMNS = (
    "seq, id, transfer_id, owner_id, kind, amount, currency, balance_after, order_id, created_at"
)


class PostgresLedgerRepository:
    def __init__(self, db: Executor | Database) -> None:
        self._db = database(db)

    async def balances(self, owner_id: UserId) -> list[Balance]:
        rows = await self._db.fetch(
            "SELECT currency, balance FROM accounts "
            "WHERE kind = 'wallet' AND owner_id = $1 ORDER BY currency",
            owner_id,
        )
        return [Balance(row["currency"], row["balance"]) for row in rows]

    async def entries(self, owner_id: UserId, limit: int, cursor: str | None) -> EntryPage:
        before = decode_cursor(cursor) if cursor is not None else None
        rows = await self._db.fetch(
            f"SELECT {_ENTRY_COLUMNS} FROM ledger_entries "  # noqa: S608
            "WHERE owner_id = $1 AND ($2::bigint IS NULL OR seq < $2) "
            "ORDER BY seq DESC LIMIT $3",
            owner_id,
            before,
            limit + 1,
        )
        page = rows[:limit]
        entries = tuple(
            LedgerEntry(
                id=row["id"],
                transfer_id=row["transfer_id"],
                owner_id=row["owner_id"],
                kind=TransferKind(row["kind"]),
                amount=row["amount"],
                currency=row["currency"],
                balance_after=row["balance_after"],
                order_id=row["order_id"],
                created_at=row["created_at"],
            )
            for row in page
        )
        next_cursor = encode_cursor(page[-1]["seq"]) if len(rows) > limit else None
        return EntryPage(entries, next_cursor)
