"""LedgerRepository over asyncpg: double-entry transfers between accounts.

Balances live on the account rows and move in the same transaction as the
entries; the database refuses a negative wallet (ck_balances_non_negative)
and a transfer whose entries do not sum to zero (a deferred constraint
trigger). Two transfers lock their accounts in one global order (issuance
first, then wallets by owner id), so they never deadlock."""

from __future__ import annotations

import uuid
from datetime import datetime

from ledgerline.domain.errors import InsufficientFundsError
from ledgerline.domain.ledger import (
    Balance,
    EntryPage,
    LedgerEntry,
    Transfer,
    TransferKind,
    decode_cursor,
    encode_cursor,
)
from ledgerline.domain.user import UserId
from ledgerline.platform.deadline import remaining
from ledgerline.repository.postgres.errors import translated
from ledgerline.repository.postgres.executor import Executor, queries

_MOVE_WALLET = """
    UPDATE accounts SET balance = balance + $3, updated_at = $4
    WHERE kind = 'wallet' AND owner_id = $1 AND currency = $2 AND balance + $3 >= 0
    RETURNING id, balance
"""
_MOVE_ISSUANCE = """
    UPDATE accounts SET balance = balance + $3, updated_at = $4
    WHERE kind = 'issuance' AND currency = $2 AND $1::uuid IS NULL
    RETURNING id, balance
"""
_OPEN_WALLET = """
    INSERT INTO accounts (id, owner_id, kind, currency, balance, created_at, updated_at)
    VALUES ($1, $2, 'wallet', $3, 0, $4, $4)
    ON CONFLICT (owner_id, currency) WHERE kind = 'wallet' DO NOTHING
"""
_OPEN_ISSUANCE = """
    INSERT INTO accounts (id, owner_id, kind, currency, balance, created_at, updated_at)
    VALUES ($1, NULL, 'issuance', $2, 0, $3, $3)
    ON CONFLICT (currency) WHERE kind = 'issuance' DO NOTHING
"""
_WRITE_ENTRIES = """
    WITH transfer AS (
        INSERT INTO transfers (id, kind, order_id, currency, amount, created_at)
        VALUES ($1, $2, $3, $4, $5, $6)
    )
    INSERT INTO ledger_entries (id, transfer_id, account_id, owner_id, kind, amount,
                                currency, balance_after, order_id, created_at)
    VALUES ($7, $1, $8, $9, $2, -$5::bigint, $4, $10, $3, $6),
           ($11, $1, $12, $13, $2, $5, $4, $14, $3, $6)
    RETURNING seq
"""
_ENTRY_COLUMNS = (
    "seq, id, transfer_id, owner_id, kind, amount, currency, balance_after, order_id, created_at"
)


class PostgresLedgerRepository:
    def __init__(self, db: Executor) -> None:
        self._db = queries(db)

    @translated
    async def apply(self, transfer: Transfer) -> tuple[LedgerEntry, LedgerEntry]:
        amount, at = transfer.money.amount, transfer.created_at
        legs = {transfer.source: -amount, transfer.destination: amount}
        lock_order = sorted(legs, key=lambda owner: (owner is not None, str(owner)))
        moved: dict[UserId | None, tuple[uuid.UUID, int]] = {}
        for owner in lock_order:
            moved[owner] = await self._move(owner, transfer.money.currency, legs[owner], at)
        (src_account, src_balance) = moved[transfer.source]
        (dst_account, dst_balance) = moved[transfer.destination]
        src_entry, dst_entry = uuid.uuid4(), uuid.uuid4()
        await self._db.execute(
            _WRITE_ENTRIES,
            transfer.id,
            str(transfer.kind),
            transfer.order_id,
            transfer.money.currency,
            amount,
            at,
            src_entry,
            src_account,
            transfer.source,
            src_balance,
            dst_entry,
            dst_account,
            transfer.destination,
            dst_balance,
            timeout=remaining(),
        )

        def entry(
            entry_id: uuid.UUID, owner: UserId | None, signed: int, balance: int
        ) -> LedgerEntry:
            return LedgerEntry(
                id=entry_id,
                transfer_id=transfer.id,
                owner_id=owner,
                kind=transfer.kind,
                amount=signed,
                currency=transfer.money.currency,
                balance_after=balance,
                order_id=transfer.order_id,
                created_at=at,
            )

        return (
            entry(src_entry, transfer.source, -amount, src_balance),
            entry(dst_entry, transfer.destination, amount, dst_balance),
        )

    async def _move(
        self, owner: UserId | None, currency: str, delta: int, at: datetime
    ) -> tuple[uuid.UUID, int]:
        move = _MOVE_ISSUANCE if owner is None else _MOVE_WALLET
        row = await self._db.fetchrow(move, owner, currency, delta, at, timeout=remaining())
        if row is None:
            if delta < 0 and owner is not None:
                raise InsufficientFundsError("the wallet does not hold enough money")
            # First money in this currency for this account: open it, then move.
            if owner is None:
                await self._db.execute(
                    _OPEN_ISSUANCE, uuid.uuid4(), currency, at, timeout=remaining()
                )
            else:
                await self._db.execute(
                    _OPEN_WALLET, uuid.uuid4(), owner, currency, at, timeout=remaining()
                )
            row = await self._db.fetchrow(move, owner, currency, delta, at, timeout=remaining())
            if row is None:
                raise InsufficientFundsError("the wallet does not hold enough money")
        return row["id"], row["balance"]

    @translated
    async def balances(self, owner_id: UserId) -> list[Balance]:
        rows = await self._db.fetch(
            "SELECT currency, balance FROM accounts "
            "WHERE kind = 'wallet' AND owner_id = $1 ORDER BY currency",
            owner_id,
            timeout=remaining(),
        )
        return [Balance(row["currency"], row["balance"]) for row in rows]

    @translated
    async def entries(self, owner_id: UserId, limit: int, cursor: str | None) -> EntryPage:
        before = decode_cursor(cursor) if cursor is not None else None
        rows = await self._db.fetch(
            f"SELECT {_ENTRY_COLUMNS} FROM ledger_entries "  # noqa: S608
            "WHERE owner_id = $1 AND ($2::bigint IS NULL OR seq < $2) "
            "ORDER BY seq DESC LIMIT $3",
            owner_id,
            before,
            limit + 1,
            timeout=remaining(),
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
