"""Settlements over asyncpg: each pay, refund and credit is one call of a
database function (migration 0005), run as a statement of its own, so that
its transaction (the order transition, both ledger legs and the balances,
the outbox event, the idempotency record, and the deferred checks at
commit) costs one round trip: no BEGIN, no COMMIT, nothing between.

What the functions find instead of settling comes back as a value
(Replayed, Stale); what the database refuses comes back as the same domain
errors as anywhere else (errors.py): a wallet without the money is
ck_balances_non_negative, InsufficientFundsError."""

from __future__ import annotations

import json
from datetime import datetime

import asyncpg

from ledgerline.domain.idempotency import IdempotencyRecord
from ledgerline.domain.order import Order, OrderId
from ledgerline.domain.settlement import (
    CreditSettlement,
    KeyTaken,
    OrderSettlement,
    Replayed,
    Settled,
    SettleOutcome,
    Stale,
)
from ledgerline.domain.user import UserId
from ledgerline.platform.deadline import remaining
from ledgerline.platform.tracing import note_replay
from ledgerline.repository.postgres.executor import Database, Executor, database
from ledgerline.repository.postgres.idempotency import record_args, record_from_json
from ledgerline.repository.postgres.orders import ORDER_COLUMNS, to_order
from ledgerline.repository.postgres.outbox import event_args

_ORDER_AND_RECORD = f"""
SELECT {ORDER_COLUMNS}, idempotency_stored($2, $3, $4)::text AS record
FROM orders WHERE id = $1
"""  # noqa: S608  (the column list is a constant)
_USER_AND_RECORD = """
SELECT EXISTS (SELECT 1 FROM users WHERE id = $1) AS found,
       idempotency_stored($2, $3, $4)::text AS record
"""


def _call(function: str, arguments: int) -> str:
    placeholders = ", ".join(f"${n}" for n in range(1, arguments + 1))
    return (
        "SELECT outcome, destination_balance, detail::text AS detail "  # noqa: S608 - constants
        f"FROM {function}({placeholders})"
    )


_SETTLE_ORDER = _call("settle_order", 31)
_SETTLE_CREDIT = _call("settle_credit", 22)


def _order_from_json(text: str | None) -> Order | None:
    # to_jsonb() of an orders row has exactly the keys of Order.snapshot().
    return None if text is None else Order.from_snapshot(json.loads(text))


def _outcome(row: asyncpg.Record, record: IdempotencyRecord) -> SettleOutcome:
    outcome = row["outcome"]
    if outcome == "settled":
        return Settled(row["destination_balance"])
    if outcome == "replayed":
        replayed = record_from_json(record.caller_id, record.key, row["detail"])
        if replayed is None:  # pragma: no cover - the function always sends it
            raise RuntimeError("settlement replayed without a record")
        return Replayed(replayed)
    if outcome == "stale":
        return Stale(_order_from_json(row["detail"]))
    raise RuntimeError(f"unknown settlement outcome {outcome!r}")  # pragma: no cover


def _lock_timeout() -> str:
    """What the deadline leaves for lock waits, as lock_timeout takes it."""
    left = remaining()
    return "0" if left is None else f"{max(1, int(left * 1000))}ms"


def _key_taken(exc: asyncpg.UniqueViolationError) -> bool:
    return getattr(exc, "constraint_name", None) == "pk_idempotency_keys"


class PostgresSettlements:
    def __init__(self, db: Executor | Database) -> None:
        self._db = database(db)

    async def order_and_record(
        self, order_id: OrderId, caller_id: UserId, key: str, now: datetime
    ) -> tuple[Order | None, IdempotencyRecord | None]:
        row = await self._db.fetchrow(_ORDER_AND_RECORD, order_id, caller_id, key, now)
        if row is None:
            return None, None
        return to_order(row), self._stored(caller_id, key, row["record"])

    async def user_and_record(
        self, user_id: UserId, caller_id: UserId, key: str, now: datetime
    ) -> tuple[bool, IdempotencyRecord | None]:
        row = await self._db.fetchrow(_USER_AND_RECORD, user_id, caller_id, key, now)
        if row is None:  # pragma: no cover - a SELECT without FROM has its row
            raise RuntimeError("no row")
        return bool(row["found"]), self._stored(caller_id, key, row["record"])

    async def settle_order(self, settlement: OrderSettlement) -> SettleOutcome:
        before, after, transfer = settlement.before, settlement.after, settlement.transfer
        return await self._settle(
            _SETTLE_ORDER,
            settlement.record,
            before.id,
            str(before.status),
            before.payer_id,
            before.payee_id,
            before.money.amount,
            before.money.currency,
            str(after.status),
            after.updated_at,
            after.paid_at,
            transfer.id,
            str(transfer.kind),
            transfer.source,
            transfer.destination,
            transfer.created_at,
            settlement.source_entry,
            settlement.destination_entry,
            *record_args(settlement.record),
            *event_args(settlement.event),
        )

    async def settle_credit(self, settlement: CreditSettlement) -> SettleOutcome:
        transfer = settlement.transfer
        return await self._settle(
            _SETTLE_CREDIT,
            settlement.record,
            transfer.id,
            transfer.destination,
            transfer.money.currency,
            transfer.money.amount,
            transfer.created_at,
            settlement.source_entry,
            settlement.destination_entry,
            *record_args(settlement.record),
            *event_args(settlement.event),
        )

    async def _settle(self, call: str, record: IdempotencyRecord, *args: object) -> SettleOutcome:
        """Runs a settlement function with ``args`` and the lock timeout."""
        try:
            row = await self._db.fetchrow(call, *args, _lock_timeout())
        except asyncpg.UniqueViolationError as exc:
            if _key_taken(exc):
                return KeyTaken()
            raise
        if row is None:  # pragma: no cover - the function always returns its row
            raise RuntimeError("no row")
        outcome = _outcome(row, record)
        if isinstance(outcome, Replayed):
            note_replay(self._db.tracer, outcome.record.operation)
        return outcome

    def _stored(self, caller_id: UserId, key: str, text: str | None) -> IdempotencyRecord | None:
        """The record stored under the key, if any: the request is a replay."""
        record = record_from_json(caller_id, key, text)
        if record is not None:
            note_replay(self._db.tracer, record.operation)
        return record
