"""The bulk loader on the real database: each batch adds its new users and
their UserRegistered events in one transaction, the events as the domain and
PostgresOutbox.add would record them; emails already taken, or taken by an
earlier row, are skipped; and a batch that fails, or is cancelled, leaves
neither users nor events."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime

import asyncpg
import pytest
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from ledgerline.domain.events import UserRegistered
from ledgerline.domain.ports import NewUserRow
from ledgerline.domain.user import Email
from ledgerline.main.core import Core
from ledgerline.platform.tracing import Tracing
from ledgerline.repository.postgres.outbox import PostgresOutbox
from ledgerline.repository.postgres.user_import import STAGING_TABLE, PostgresUserImportSink
from ledgerline.repository.postgres.users import PostgresUserRepository
from ledgerline.usecase.user_import import time_ordered_ids
from ledgerline.usecase.users import Registration
from tests.integration.conftest import PASSWORD

pytestmark = pytest.mark.timeout(60)

HASH = (
    "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0c2FsdA"
    "$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g"
)
AT = datetime(2026, 12, 1, 12, 30, tzinfo=UTC)
_IDS = time_ordered_ids()


def _row(position: int, email: str, name: str = "User", password_hash: str = HASH) -> NewUserRow:
    parsed = Email.parse(email)
    return (position, next(_IDS), parsed.value, parsed.key, name, password_hash)


async def _counts(pool: asyncpg.Pool) -> tuple[int, int, int]:
    row = await pool.fetchrow(
        "SELECT (SELECT count(*) FROM users) AS users, (SELECT count(*) FROM outbox) AS events,"
        " (SELECT count(*) FROM outbox_versions) AS counters"
    )
    assert row is not None
    return row["users"], row["events"], row["counters"]


async def test_each_event_is_what_user_registered_of_the_stored_user_gives(
    pool: asyncpg.Pool,
) -> None:
    sink = PostgresUserImportSink(pool)
    rows = [
        _row(2, " Ada.Lovelace@Example.COM", "Ada Lovelace"),
        _row(3, "bob@example.com", "Bob"),
        _row(4, "éva@exämple.com", 'Éva "Quotes" O\'Neil'),
    ]

    assert await sink.load(rows, AT) == (3, 0)

    users = PostgresUserRepository(pool)
    for row in rows:
        user = await users.get_by_id(uuid.UUID(row[1]))
        assert user is not None
        assert (user.email.value, user.email.key, user.name, user.password_hash) == row[2:]
        assert (user.is_admin, user.created_at, user.updated_at) == (False, AT, AT)
        event = UserRegistered.of(user)
        stored = await pool.fetchrow(
            "SELECT id, type, subject, aggregate_type, aggregate_id, version,"
            " payload::text AS payload, occurred_at, state, attempts FROM outbox"
            " WHERE aggregate_id = $1",
            user.id,
        )
        assert stored is not None
        assert json.loads(stored["payload"]) == event.data()
        assert (
            stored["type"],
            stored["subject"],
            stored["aggregate_type"],
            stored["aggregate_id"],
            stored["occurred_at"],
        ) == (event.TYPE, event.subject, str(event.AGGREGATE), event.aggregate_id, user.created_at)
        assert (stored["version"], stored["state"], stored["attempts"]) == (1, "pending", 0)
        # The event's id is the user's with UUID version 8 instead of 7.
        assert stored["id"].version == 8
        assert stored["id"].int & ~(0xF << 76) == user.id.int & ~(0xF << 76)
    assert await _counts(pool) == (3, 3, 3)


async def test_emails_taken_before_or_by_an_earlier_row_are_skipped(
    core: Core, pool: asyncpg.Pool
) -> None:
    await core.users.register(Registration("taken@example.com", PASSWORD, "Registered"))
    sink = PostgresUserImportSink(pool)
    rows = [
        _row(7, "x@example.com", "Later row"),
        _row(3, "X@EXAMPLE.com", "Earlier row"),  # listed second, but earlier in the file
        _row(5, "TAKEN@example.com", "Imported"),
        _row(6, "y@example.com", "Y"),
    ]

    assert await sink.load(rows, AT) == (2, 2)

    names = {row["email_key"]: row["name"] for row in await pool.fetch("SELECT * FROM users")}
    assert names == {
        "taken@example.com": "Registered",
        "x@example.com": "Earlier row",
        "y@example.com": "Y",
    }
    events = await pool.fetch("SELECT aggregate_id, count(*) FROM outbox GROUP BY aggregate_id")
    assert len(events) == 3
    assert {row["count"] for row in events} == {1}


async def test_events_are_numbered_through_outbox_versions_as_outbox_add_numbers_them(
    pool: asyncpg.Pool,
) -> None:
    row = _row(2, "ada@example.com")
    user_id = uuid.UUID(row[1])
    async with pool.acquire() as conn, conn.transaction():
        # An event recorded for this id before the user is imported (as
        # PostgresOutbox.add records one): the import's event comes next.
        earlier = UserRegistered(
            occurred_at=AT, user_id=user_id, email="ada@example.com", name="Ada", is_admin=False
        )
        await PostgresOutbox(conn).add(earlier)

    assert await PostgresUserImportSink(pool).load([row], AT) == (1, 0)

    versions = await pool.fetch(
        "SELECT version FROM outbox WHERE aggregate_id = $1 ORDER BY seq", user_id
    )
    assert [v["version"] for v in versions] == [1, 2]
    counter = await pool.fetchval(
        "SELECT version FROM outbox_versions WHERE aggregate_type = 'user' AND aggregate_id = $1",
        user_id,
    )
    assert counter == 2


async def _outbox_refuses(pool: asyncpg.Pool, rows: list[NewUserRow]) -> None:
    # An event numbered 1 for the second user, without its counter row: the
    # batch's event for that user, numbered 1 too, breaks the unique
    # (aggregate, version), after the batch's users went in.
    await pool.execute(
        "INSERT INTO outbox (id, type, subject, aggregate_type, aggregate_id, version, payload,"
        " occurred_at) VALUES ($1, 'user.registered', 'users/x', 'user', $2, 1, '{}', now())",
        uuid.uuid4(),
        uuid.UUID(rows[1][1]),
    )


async def _nothing_beforehand(pool: asyncpg.Pool, rows: list[NewUserRow]) -> None:
    return None


FAILURES = {
    # id: (the batch, what is done beforehand, the error)
    "the-users-table-refuses-a-row": (
        [_row(2, "a@example.com"), _row(3, "b@example.com", name="n" * 101)],
        _nothing_beforehand,
        asyncpg.CheckViolationError,
    ),
    "the-outbox-refuses-an-event": (
        [_row(2, "a@example.com"), _row(3, "b@example.com"), _row(4, "c@example.com")],
        _outbox_refuses,
        asyncpg.UniqueViolationError,
    ),
}


@pytest.mark.parametrize(
    ("rows", "beforehand", "error"), list(FAILURES.values()), ids=list(FAILURES)
)
async def test_a_batch_that_fails_leaves_neither_users_nor_events(
    pool: asyncpg.Pool,
    rows: list[NewUserRow],
    beforehand: object,
    error: type[Exception],
) -> None:
    await beforehand(pool, rows)  # type: ignore[operator]
    before = await _counts(pool)

    with pytest.raises(error):
        await PostgresUserImportSink(pool).load(rows, AT)

    assert await _counts(pool) == before


async def test_a_batch_cancelled_before_its_commit_leaves_nothing(pool: asyncpg.Pool) -> None:
    sink = PostgresUserImportSink(pool)
    rows = [_row(2, "a@example.com"), _row(3, "b@example.com")]
    async with pool.acquire() as blocker, blocker.transaction():
        # Holds the batch inside its statement, after its users went in.
        await blocker.execute("LOCK TABLE outbox_versions IN EXCLUSIVE MODE")
        load = asyncio.create_task(sink.load(rows, AT))
        for _ in range(200):
            waiting = await pool.fetchval(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE datname = current_database() AND wait_event_type = 'Lock'"
            )
            if waiting:
                break
            await asyncio.sleep(0.02)
        assert waiting == 1
        load.cancel()
        with pytest.raises(asyncio.CancelledError):
            await load

    assert await _counts(pool) == (0, 0, 0)


async def test_a_batch_commits_only_after_what_it_is_told_to_wait_for(pool: asyncpg.Pool) -> None:
    sink = PostgresUserImportSink(pool)
    may_commit = asyncio.Event()

    async def earlier_batch_ended() -> None:
        await may_commit.wait()

    load = asyncio.create_task(
        sink.load([_row(2, "a@example.com")], AT, commit_after=earlier_batch_ended)
    )
    await asyncio.sleep(0.2)
    assert not load.done()
    assert await _counts(pool) == (0, 0, 0)  # done, but not committed

    may_commit.set()

    assert await load == (1, 0)
    assert await _counts(pool) == (1, 1, 1)


async def test_a_batch_whose_predecessor_failed_rolls_back(pool: asyncpg.Pool) -> None:
    async def earlier_batch_failed() -> None:
        raise RuntimeError("the batch before failed")

    with pytest.raises(RuntimeError, match="the batch before failed"):
        await PostgresUserImportSink(pool).load(
            [_row(2, "a@example.com")], AT, commit_after=earlier_batch_failed
        )

    assert await _counts(pool) == (0, 0, 0)


async def test_a_traced_batch_is_a_span_per_statement_copy_included(pool: asyncpg.Pool) -> None:
    """The loader runs its SQL through the repositories' one executor: with
    a tracer, each statement of the batch (the COPY too) is a client span."""
    exporter = InMemorySpanExporter()
    tracing = Tracing.with_processor(SimpleSpanProcessor(exporter))
    try:
        sink = PostgresUserImportSink(pool, tracing.tracer)
        with tracing.tracer.start_as_current_span("import batch") as batch:
            assert await sink.load([_row(2, "ada@example.com")], AT) == (1, 0)
        spans = exporter.get_finished_spans()
    finally:
        tracing.shutdown()

    children = [s for s in spans if s.parent is not None]
    assert [s.name for s in children] == [
        "BEGIN",
        "CREATE",
        f"COPY {STAGING_TABLE}",
        "WITH users",
        "COMMIT",
    ]
    for span in children:
        assert span.kind is SpanKind.CLIENT
        assert span.context.trace_id == batch.get_span_context().trace_id
        assert span.attributes is not None
        assert span.attributes["db.system"] == "postgresql"
