"""The bulk loader behind ``ledgerline import users``: each batch of new
users is one transaction. The users are copied (binary COPY, the fastest way
into PostgreSQL) into a temporary staging table, then one statement inserts
them into users, skipping every email key that is taken (by a user already
there, or by an earlier row of the batch: rows go in by their position,
and ON CONFLICT on the unique email key keeps the first), and records a
UserRegistered event in the outbox for each user it inserted, numbered
through outbox_versions as PostgresOutbox.add numbers events. Whatever goes
wrong, or a cancellation, before the COMMIT leaves neither users nor events.

The statement does in SQL what ``UserRegistered.of(user)`` and
``PostgresOutbox.add`` do in Python, for a whole batch at once rather than
in a statement per user; tests/integration/test_user_import.py holds the
two to the same rows (type, subject, aggregate, version, payload, time).

An imported user's UserRegistered event has for id the user's id with the
UUID version 8 (RFC 9562's custom version) in place of its 7: unique (one
registration per user; no other event has a version-8 id), and, like the
user ids, growing with time, so the outbox's primary key is appended to
rather than written all over (a random id cost a tenth of the throughput
at a million rows)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime

import asyncpg
from opentelemetry.trace import Tracer

from ledgerline.domain.events import UserRegistered
from ledgerline.domain.ports import NewUserRow
from ledgerline.platform.database import acquire, release
from ledgerline.repository.postgres.errors import translated
from ledgerline.repository.postgres.executor import Database

STAGING_TABLE = "import_users_staging"
_STAGING_COLUMNS = ("position", "id", "email", "email_key", "name", "password_hash")

# Made once per connection; emptied by every commit (and every rollback).
_CREATE_STAGING = f"""
CREATE TEMPORARY TABLE IF NOT EXISTS {STAGING_TABLE} (
    position      integer NOT NULL,
    id            uuid    NOT NULL,
    email         text    NOT NULL,
    email_key     text    NOT NULL,
    name          text    NOT NULL,
    password_hash text    NOT NULL
) ON COMMIT DELETE ROWS
"""

# $1: the batch's creation time; $2: the event type; $3: the aggregate type;
# $4: the subject's prefix.
_INSERT = f"""
WITH inserted AS (
    INSERT INTO users
        (id, email, email_key, name, password_hash, is_admin, created_at, updated_at)
    SELECT id, email, email_key, name, password_hash, false, $1, $1
    FROM {STAGING_TABLE}
    ORDER BY position
    ON CONFLICT (email_key) DO NOTHING
    RETURNING id, email, name, is_admin, created_at
),
numbered AS (
    INSERT INTO outbox_versions AS v (aggregate_type, aggregate_id, version)
    SELECT $3, id, 1 FROM inserted
    ON CONFLICT (aggregate_type, aggregate_id) DO UPDATE SET version = v.version + 1
    RETURNING aggregate_id, version
),
recorded AS (
    INSERT INTO outbox
        (id, type, subject, aggregate_type, aggregate_id, version, payload, occurred_at)
    SELECT overlay(i.id::text PLACING '8' FROM 15)::uuid, $2, $4::text || i.id::text, $3,
           i.id, n.version,
           jsonb_build_object(
               'user_id', i.id, 'email', i.email, 'name', i.name, 'is_admin', i.is_admin
           ),
           i.created_at
    FROM inserted i JOIN numbered n ON n.aggregate_id = i.id
    RETURNING 1
)
SELECT count(*) FROM recorded
"""  # noqa: S608  (no input is formatted in: the table name is a constant)

_EVENT_TYPE = UserRegistered.TYPE
_AGGREGATE_TYPE = str(UserRegistered.AGGREGATE)
_SUBJECT_PREFIX = f"{UserRegistered.AGGREGATE}s/"


class PostgresUserImportSink:
    def __init__(self, pool: asyncpg.Pool, tracer: Tracer | None = None) -> None:
        self._pool = pool
        self._db = Database(pool, tracer)

    @translated
    async def load(
        self,
        users: Sequence[NewUserRow],
        at: datetime,
        *,
        commit_after: Callable[[], Awaitable[None]] | None = None,
    ) -> tuple[int, int]:
        conn = await acquire(self._pool)
        db = self._db.on(conn)
        committed = False
        try:
            await db.execute("BEGIN")
            await db.execute(_CREATE_STAGING)
            await db.copy_records_to_table(STAGING_TABLE, users, _STAGING_COLUMNS)
            added: int = await db.fetchval(
                _INSERT, at, _EVENT_TYPE, _AGGREGATE_TYPE, _SUBJECT_PREFIX
            )
            if commit_after is not None:
                await commit_after()
            await _commit(db)
            committed = True
        finally:
            # Not committed: rolled back, or the connection terminated (and
            # so rolled back by the server) if the rollback fails.
            await release(self._pool, conn, None if committed else "ROLLBACK")
        return added, len(users) - added


async def _commit(db: Database) -> None:
    """Commits, and once the COMMIT is sent sees it to its end: whether it
    took decides what the caller reports, so a cancellation meanwhile is
    put off until the answer is in, then dropped (the work is done)."""
    commit = asyncio.ensure_future(db.execute("COMMIT"))
    try:
        await asyncio.shield(commit)
    except asyncio.CancelledError:
        await asyncio.wait({commit})
        commit.result()
        task = asyncio.current_task()
        if task is not None:
            task.uncancel()
