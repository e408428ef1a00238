"""IdempotencyStore over asyncpg: reads and the purge. Records are written
in the transaction of the effect they describe, by the settlement
functions (settlements.py); the primary key (caller, key) settles races."""

from __future__ import annotations

import json
from datetime import datetime

from ledgerline.domain.idempotency import IdempotencyRecord
from ledgerline.domain.user import UserId
from ledgerline.platform.tracing import note_replay
from ledgerline.repository.postgres.executor import Database, Executor, database


def record_from_json(caller_id: UserId, key: str, text: str | None) -> IdempotencyRecord | None:
    """The record idempotency_stored() (migration 0005) returns as JSON."""
    if text is None:
        return None
    data = json.loads(text)
    return IdempotencyRecord(
        caller_id=caller_id,
        key=key,
        fingerprint=data["fingerprint"],
        operation=data["operation"],
        result=data["result"],
        created_at=datetime.fromisoformat(data["created_at"]),
        expires_at=datetime.fromisoformat(data["expires_at"]),
    )


def record_args(record: IdempotencyRecord) -> tuple[object, ...]:
    """The record as idempotency_remember() (migration 0005) takes it."""
    return (
        record.caller_id,
        record.key,
        record.fingerprint,
        record.operation,
        json.dumps(record.result),
        record.created_at,
        record.expires_at,
    )


class PostgresIdempotencyStore:
    def __init__(self, db: Executor | Database) -> None:
        self._db = database(db)

    async def get(self, caller_id: UserId, key: str, now: datetime) -> IdempotencyRecord | None:
        stored = await self._db.fetchval(
            "SELECT idempotency_stored($1, $2, $3)::text", caller_id, key, now
        )
        record = record_from_json(caller_id, key, stored)
        if record is not None:
            note_replay(self._db.tracer, record.operation)
        return record

    async def purge(self, now: datetime, batch: int) -> int:
        deleted = await self._db.fetchval(
            """
            WITH gone AS (
                DELETE FROM idempotency_keys WHERE ctid IN (
                    SELECT ctid FROM idempotency_keys WHERE expires_at <= $1 LIMIT $2
                )
                RETURNING 1
            )
            SELECT count(*) FROM gone
            """,
            now,
            batch,
        )
        return int(deleted or 0)
