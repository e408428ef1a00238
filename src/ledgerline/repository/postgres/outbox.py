"""The outbox over asyncpg: ``PostgresOutbox`` records events inside a unit
of work; ``PostgresOutboxStore`` is what the relay claims, marks and purges
them through. Times that rule leases and retries are the database's own
(``now()``), so relays on machines whose clocks disagree still agree."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence

import asyncpg

from ledgerline.domain.events import DomainEvent, OutboxEvent, OutboxStats
from ledgerline.platform.tracing import current_trace_context
from ledgerline.repository.postgres.executor import Database, Executor, database

# Where outbox_record() finds the writer's trace context in the payload
# argument (migration 0006); it is not part of the event's data.
TRACE_KEY = "$trace"
# Numbered within its aggregate by the database function (migration 0005),
# which the settlements call too.
_ADD = "SELECT outbox_record($1, $2, $3, $4, $5, $6::jsonb, $7)"

_EVENT_COLUMNS = (
    "o.id, o.type, o.subject, o.aggregate_type, o.aggregate_id, o.version, o.occurred_at, "
    "o.payload::text AS payload, o.attempts, o.trace_context::text AS trace_context"
)

# The first unpublished event of each aggregate leads it: only a lead that is
# due and not claimed can be claimed (locked, SKIP LOCKED: two relays never
# take one), and with it the aggregate's next events, up to $2 of them.
# Nothing is read "after a cursor", so an event that commits late (with an
# early seq) is still found. A dead lead holds its aggregate back. Leads are
# found walking the pending events oldest first and stopping at $1 of them.
# An aggregate's events are published in version order, so its published
# ones are always its first ones: an event leads when the one just before it
# is published (or purged), one probe of the (aggregate, version) key. A
# claim costs about the same with a backlog of a million events as with none.
_CLAIM = f"""
WITH ready AS (
    SELECT o.aggregate_type, o.aggregate_id, o.version
    FROM outbox o
    WHERE o.state = 'pending' AND o.next_attempt_at <= now()
      AND (o.claimed_until IS NULL OR o.claimed_until <= now())
      AND NOT EXISTS (
          SELECT 1 FROM outbox previous
          WHERE previous.aggregate_type = o.aggregate_type
            AND previous.aggregate_id = o.aggregate_id
            AND previous.version = o.version - 1
            AND previous.state <> 'published'
      )
    ORDER BY o.seq
    LIMIT $1
    FOR UPDATE OF o SKIP LOCKED
)
UPDATE outbox o SET claimed_until = now() + make_interval(secs => $3)
FROM ready r
WHERE o.aggregate_type = r.aggregate_type AND o.aggregate_id = r.aggregate_id
  AND o.state = 'pending' AND o.version >= r.version AND o.version < r.version + $2
  -- followers only up to the first that is not pending (a dead one): never past it
  AND NOT EXISTS (
      SELECT 1 FROM outbox gap
      WHERE gap.aggregate_type = o.aggregate_type AND gap.aggregate_id = o.aggregate_id
        AND gap.version > r.version AND gap.version < o.version AND gap.state <> 'pending'
  )
RETURNING {_EVENT_COLUMNS}
"""  # noqa: S608  (no input is formatted in: the column list is a constant)


def _to_event(row: asyncpg.Record) -> OutboxEvent:
    trace = row["trace_context"]
    return OutboxEvent(
        id=row["id"],
        type=row["type"],
        subject=row["subject"],
        aggregate_type=row["aggregate_type"],
        aggregate_id=row["aggregate_id"],
        version=row["version"],
        occurred_at=row["occurred_at"],
        data=json.loads(row["payload"]),
        attempts=row["attempts"],
        trace_context=json.loads(trace) if trace is not None else None,
    )


def event_args(event: DomainEvent) -> tuple[object, ...]:
    """The event as outbox_record() takes it, with the trace context of the
    span writing it (migration 0006 keeps it beside the event)."""
    payload = event.data()
    trace_context = current_trace_context()
    if trace_context is not None:
        payload = {**payload, TRACE_KEY: trace_context}
    return (
        event.id,
        event.TYPE,
        event.subject,
        str(event.AGGREGATE),
        event.aggregate_id,
        json.dumps(payload),
        event.occurred_at,
    )


class PostgresOutbox:
    def __init__(self, db: Executor | Database) -> None:
        self._db = database(db)

    async def add(self, event: DomainEvent) -> None:
        await self._db.execute(_ADD, *event_args(event))


class PostgresOutboxStore:
    """The relay's side of the outbox. Each call is one short statement on
    the pool: no transaction is held open while the bus is called."""

    def __init__(self, db: Executor | Database) -> None:
        self._db = database(db)

    async def claim(
        self, aggregates: int, per_aggregate: int, lease_seconds: float
    ) -> list[OutboxEvent]:
        """Claims the due events of up to ``aggregates`` aggregates (at most
        ``per_aggregate`` each) for ``lease_seconds``, in publishing order:
        by aggregate, then version."""
        rows = await self._db.fetch(_CLAIM, aggregates, per_aggregate, lease_seconds)
        events = [_to_event(row) for row in rows]
        events.sort(key=lambda e: (e.aggregate_type, e.aggregate_id, e.version))
        return events

    async def mark_published(self, ids: Sequence[uuid.UUID]) -> None:
        if not ids:
            return
        await self._db.execute(
            "UPDATE outbox SET state = 'published', published_at = now(), "
            "claimed_until = NULL, last_error = NULL "
            "WHERE id = ANY($1::uuid[]) AND state = 'pending'",
            list(ids),
        )

    async def mark_failed(
        self, event_id: uuid.UUID, error: str, retry_in_seconds: float, max_attempts: int
    ) -> bool:
        """Counts a failed attempt; the event is due again after
        ``retry_in_seconds``, or dead once it has had ``max_attempts``.
        True when it is dead."""
        state = await self._db.fetchval(
            """
            UPDATE outbox SET attempts = attempts + 1, last_error = left($2, 1000),
                claimed_until = NULL,
                next_attempt_at = now() + make_interval(secs => $3),
                state = CASE WHEN attempts + 1 >= $4 THEN 'dead' ELSE 'pending' END
            WHERE id = $1 AND state = 'pending'
            RETURNING state
            """,
            event_id,
            error,
            retry_in_seconds,
            max_attempts,
        )
        return bool(state == "dead")

    async def release(self, ids: Sequence[uuid.UUID]) -> None:
        """Gives claimed events back unpublished, due at once, no attempt counted."""
        if not ids:
            return
        await self._db.execute(
            "UPDATE outbox SET claimed_until = NULL WHERE id = ANY($1::uuid[]) "
            "AND state = 'pending'",
            list(ids),
        )

    async def requeue_dead(self, ids: Sequence[uuid.UUID] | None = None) -> int:
        """Makes dead events (all, or those of ``ids``) pending again with
        their attempts reset: an operator's retry once the cause is fixed."""
        requeued = await self._db.fetchval(
            """
            WITH requeued AS (
                UPDATE outbox SET state = 'pending', attempts = 0, next_attempt_at = now(),
                    last_error = NULL
                WHERE state = 'dead' AND ($1::uuid[] IS NULL OR id = ANY($1::uuid[]))
                RETURNING 1
            )
            SELECT count(*) FROM requeued
            """,
            None if ids is None else list(ids),
        )
        return int(requeued or 0)

    async def purge(self, older_than_seconds: float, batch: int, *, unpublished: bool) -> int:
        """Deletes up to ``batch`` events that occurred more than
        ``older_than_seconds`` ago: published ones only, or (with no bus to
        publish them) ``unpublished`` ones too. Dead events are kept."""
        # Published events by when they were published (ix_outbox_published);
        # pending ones oldest first (ix_outbox_pending_seq).
        deleted = await self._db.fetchval(
            """
            WITH doomed AS (
                (SELECT id FROM outbox
                 WHERE state = 'published'
                   AND published_at < now() - make_interval(secs => $1)
                 LIMIT $2)
                UNION ALL
                (SELECT id FROM outbox
                 WHERE $3 AND state = 'pending'
                   AND occurred_at < now() - make_interval(secs => $1)
                 ORDER BY seq
                 LIMIT $2)
            ),
            gone AS (
                DELETE FROM outbox WHERE id IN (SELECT id FROM doomed LIMIT $2) RETURNING 1
            )
            SELECT count(*) FROM gone
            """,
            older_than_seconds,
            batch,
            unpublished,
        )
        return int(deleted or 0)

    async def stats(self) -> OutboxStats:
        row = await self._db.fetchrow(
            """
            SELECT (SELECT count(*) FROM outbox WHERE state = 'pending') AS pending,
                   (SELECT count(*) FROM outbox WHERE state = 'dead') AS dead,
                   coalesce(extract(epoch FROM now() - (
                       SELECT occurred_at FROM outbox WHERE state = 'pending'
                       ORDER BY seq LIMIT 1
                   )), 0)::float8 AS lag
            """,
        )
        assert row is not None
        return OutboxStats(pending=row["pending"], dead=row["dead"], lag_seconds=row["lag"])

    async def latest(
        self, limit: int, after_seq: int | None = None
    ) -> list[tuple[int, OutboxEvent]]:
        """Events by the order they were recorded in: the last ``limit``, or
        the first ``limit`` after ``after_seq``; each with its seq."""
        if after_seq is None:
            sql = (
                f"SELECT o.seq, {_EVENT_COLUMNS} FROM outbox o "  # noqa: S608
                "ORDER BY o.seq DESC LIMIT $1"
            )
            rows = list(reversed(await self._db.fetch(sql, limit)))
        else:
            sql = (
                f"SELECT o.seq, {_EVENT_COLUMNS} FROM outbox o "  # noqa: S608
                "WHERE o.seq > $2 ORDER BY o.seq LIMIT $1"
            )
            rows = await self._db.fetch(sql, limit, after_seq)
        return [(row["seq"], _to_event(row)) for row in rows]
