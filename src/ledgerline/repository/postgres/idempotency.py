"""IdempotencyStore over asyncpg: reads and the purge. Records are written
in the transaction of the effect they describe, by the settlement
functions (settlements.py); the primary key (caller, key) settles races."""

from __future__ import annotations

import json
from datetime import datetime

from ledgerline.domain.idempotency import IdempotencyRecord
from ledgerline.domain.user import UserId
from ledgerline.platform.deadline import remaining
from ledgerline.repository.postgres.errors import translated
from ledgerline.repository.postgres.executor import Executor, queries


class PostgresIdempotencyStore:
    def __init__(self, db: Executor) -> None:
        self._db = queries(db)

    @translated
    async def get(self, caller_id: UserId, key: str, now: datetime) -> IdempotencyRecord | None:
        row = await self._db.fetchrow(
            "SELECT fingerprint, operation, result::text AS result, created_at, expires_at "
            "FROM idempotency_keys WHERE caller_id = $1 AND key = $2 AND expires_at > $3",
            caller_id,
            key,
            now,
            timeout=remaining(),
        )
        if row is None:
            return None
        return IdempotencyRecord(
            caller_id=caller_id,
            key=key,
            fingerprint=row["fingerprint"],
            operation=row["operation"],
            result=json.loads(row["result"]),
            created_at=row["created_at"],
            expires_at=row["expires_at"],
        )

    @translated
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
            timeout=remaining(),
        )
        return int(deleted or 0)
