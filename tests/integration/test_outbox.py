"""The outbox on the real database: an event exists if and only if its change
committed, each aggregate's events are numbered in commit order without
gaps, and the relay's claims never hand one event to two claimers nor an
aggregate's later event before its earlier one."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime

import asyncpg
import pytest

from ledgerline.domain.errors import ConflictError, InsufficientFundsError
from ledgerline.domain.events import OrderCreated, UserRegistered
from ledgerline.domain.user import Principal
from ledgerline.main.core import Core
from ledgerline.repository.postgres.outbox import PostgresOutbox, PostgresOutboxStore
from ledgerline.repository.postgres.unit_of_work import PostgresUnitOfWorkFactory
from ledgerline.usecase.payments import NewOrder
from ledgerline.usecase.users import Registration
from tests.integration.conftest import PASSWORD

pytestmark = pytest.mark.timeout(60)


async def _user(core: Core, email: str, *, admin: bool = False) -> Principal:
    registration = Registration(email, PASSWORD, "Someone")
    if admin:
        user = (await core.users.create_admin(registration)).user
    else:
        user = await core.users.register(registration)
    return Principal(user.id, user.is_admin)


async def _events(pool: asyncpg.Pool) -> list[tuple[str, str, uuid.UUID, int]]:
    rows = await pool.fetch(
        "SELECT type, aggregate_type, aggregate_id, version FROM outbox ORDER BY seq"
    )
    return [(r["type"], r["aggregate_type"], r["aggregate_id"], r["version"]) for r in rows]


async def test_a_payment_flow_records_every_event_with_its_change(
    core: Core, pool: asyncpg.Pool
) -> None:
    admin = await _user(core, "root@example.com", admin=True)
    alice = await _user(core, "alice@example.com")
    bob = await _user(core, "bob@example.com")
    payments = core.payments
    await payments.credit(admin, alice.user_id, 5_000, "EUR", "credit-1")
    order = await payments.create_order(alice, NewOrder(bob.user_id, 2_000, "EUR"))
    await payments.process_payment(alice, order.id, "pay-1")
    await payments.refund(bob, order.id, "refund-1")

    assert await _events(pool) == [
        ("user.registered", "user", admin.user_id, 1),
        ("user.registered", "user", alice.user_id, 1),
        ("user.registered", "user", bob.user_id, 1),
        ("wallet.credited", "wallet", alice.user_id, 1),
        ("order.created", "order", order.id, 1),
        ("order.paid", "order", order.id, 2),
        ("order.refunded", "order", order.id, 3),
    ]
    row = await pool.fetchrow(
        "SELECT id, subject, payload::text AS payload, occurred_at, state, attempts "
        "FROM outbox WHERE type = 'order.created'"
    )
    assert row is not None
    assert row["subject"] == f"orders/{order.id}"
    assert json.loads(row["payload"]) == OrderCreated.of(order).data()
    assert row["occurred_at"] == order.created_at
    assert (row["state"], row["attempts"]) == ("pending", 0)


async def test_a_refused_change_records_no_event(core: Core, pool: asyncpg.Pool) -> None:
    alice = await _user(core, "alice@example.com")
    bob = await _user(core, "bob@example.com")
    order = await core.payments.create_order(alice, NewOrder(bob.user_id, 2_000, "EUR"))
    before = await _events(pool)

    with pytest.raises(InsufficientFundsError):
        await core.payments.process_payment(alice, order.id, "pay-1")
    with pytest.raises(ConflictError):
        await _user(core, "ALICE@example.com")

    assert await _events(pool) == before


async def test_a_rolled_back_unit_of_work_leaves_no_event_and_no_number(
    pool: asyncpg.Pool,
) -> None:
    uow = PostgresUnitOfWorkFactory(pool)
    user_id = uuid.uuid4()

    async with uow() as tx:
        await tx.outbox.add(_registered(user_id))  # not committed: rolled back on the way out
    async with uow() as tx:
        await tx.outbox.add(_registered(user_id))
        await tx.commit()

    assert await _events(pool) == [("user.registered", "user", user_id, 1)]


async def test_an_aggregates_events_are_numbered_in_commit_order_without_gaps(
    core: Core, pool: asyncpg.Pool
) -> None:
    admin = await _user(core, "root@example.com", admin=True)
    alice = await _user(core, "alice@example.com")

    await asyncio.gather(
        *(
            core.payments.credit(admin, alice.user_id, 100 + i, "EUR", f"credit-{i}")
            for i in range(20)
        )
    )

    rows = await pool.fetch(
        "SELECT version, (payload->>'balance')::bigint AS balance FROM outbox "
        "WHERE type = 'wallet.credited' ORDER BY version"
    )
    assert [r["version"] for r in rows] == list(range(1, 21))
    balances = [r["balance"] for r in rows]
    assert balances == sorted(balances)  # version order is the order the credits committed


def _registered(aggregate: uuid.UUID) -> UserRegistered:
    return UserRegistered(
        occurred_at=datetime.now(UTC), user_id=aggregate, email="a@b.c", name="A", is_admin=False
    )


async def _record(pool: asyncpg.Pool, aggregate: uuid.UUID, count: int = 1) -> None:
    uow = PostgresUnitOfWorkFactory(pool)
    for _ in range(count):
        async with uow() as tx:
            await tx.outbox.add(_registered(aggregate))
            await tx.commit()


async def test_claims_lead_with_each_aggregates_first_event_and_never_share_one(
    pool: asyncpg.Pool,
) -> None:
    store = PostgresOutboxStore(pool)
    first, second = uuid.uuid4(), uuid.uuid4()
    await _record(pool, first, 3)
    await _record(pool, second, 1)

    claimed = await store.claim(aggregates=10, per_aggregate=2, lease_seconds=30)
    again = await store.claim(aggregates=10, per_aggregate=2, lease_seconds=30)

    got = [(e.aggregate_id, e.version) for e in claimed]
    assert sorted(got) == sorted([(first, 1), (first, 2), (second, 1)])
    assert again == []  # the leads are claimed; the third event waits behind them

    await store.mark_published([e.id for e in claimed if e.aggregate_id == first])
    [third] = await store.claim(aggregates=10, per_aggregate=2, lease_seconds=30)
    assert (third.aggregate_id, third.version) == (first, 3)


async def test_concurrent_claimers_take_disjoint_sets(pool: asyncpg.Pool) -> None:
    store = PostgresOutboxStore(pool)
    for _ in range(30):
        await _record(pool, uuid.uuid4(), 2)

    batches = await asyncio.gather(
        *(store.claim(aggregates=4, per_aggregate=10, lease_seconds=30) for _ in range(12))
    )

    ids = [e.id for batch in batches for e in batch]
    assert len(ids) == len(set(ids)) == 60
    for batch in batches:
        aggregates = {e.aggregate_id for e in batch}
        assert all(sum(e.aggregate_id == a for e in batch) == 2 for a in aggregates)


async def test_a_failed_lead_holds_its_aggregate_back_and_dies_after_its_attempts(
    pool: asyncpg.Pool,
) -> None:
    store = PostgresOutboxStore(pool)
    aggregate = uuid.uuid4()
    await _record(pool, aggregate, 2)

    for attempt in (1, 2):
        lead, _ = await store.claim(aggregates=1, per_aggregate=5, lease_seconds=30)
        dead = await store.mark_failed(lead.id, "rejected", retry_in_seconds=0, max_attempts=2)
        await store.release([r["id"] for r in await _claimed(pool)])
        assert dead is (attempt == 2)

    assert await store.claim(aggregates=10, per_aggregate=5, lease_seconds=30) == []
    stats = await store.stats()
    assert (stats.pending, stats.dead) == (1, 1)
    assert stats.lag_seconds > 0

    # An operator's retry: the dead lead leads again, with a clean slate.
    assert await store.requeue_dead([uuid.uuid4()]) == 0
    assert await store.requeue_dead() == 1
    lead, follower = await store.claim(aggregates=1, per_aggregate=5, lease_seconds=30)
    assert (lead.version, lead.attempts, follower.version) == (1, 0, 2)


async def _claimed(pool: asyncpg.Pool) -> list[asyncpg.Record]:
    return await pool.fetch("SELECT id FROM outbox WHERE claimed_until IS NOT NULL")


async def test_an_event_committed_late_with_an_early_seq_is_still_claimed(
    pool: asyncpg.Pool,
) -> None:
    """The 'id > last published id' design loses this event: its seq is
    taken before the later event's, but it commits after that one has been
    published."""
    store = PostgresOutboxStore(pool)
    early, late = uuid.uuid4(), uuid.uuid4()
    async with pool.acquire() as conn, conn.transaction():
        await PostgresOutbox(conn).add(_registered(early))  # takes its seq, commits last
        await _record(pool, late)
        [published] = await store.claim(aggregates=10, per_aggregate=10, lease_seconds=30)
        assert published.aggregate_id == late
        await store.mark_published([published.id])

    [claimed] = await store.claim(aggregates=10, per_aggregate=10, lease_seconds=30)
    assert claimed.aggregate_id == early
    seqs = await pool.fetch("SELECT aggregate_id FROM outbox ORDER BY seq")
    assert [r["aggregate_id"] for r in seqs] == [early, late]


async def test_a_claim_takes_followers_only_up_to_a_dead_one(pool: asyncpg.Pool) -> None:
    store = PostgresOutboxStore(pool)
    aggregate = uuid.uuid4()
    await _record(pool, aggregate, 4)
    await pool.execute(
        "UPDATE outbox SET state = 'dead', attempts = 8 WHERE aggregate_id = $1 AND version = 3",
        aggregate,
    )

    claimed = await store.claim(aggregates=10, per_aggregate=10, lease_seconds=30)

    assert [e.version for e in claimed] == [1, 2]


async def test_the_purge_takes_published_events_by_when_they_were_published(
    pool: asyncpg.Pool,
) -> None:
    store = PostgresOutboxStore(pool)
    old, recent, waiting = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    for aggregate in (old, recent, waiting):
        await _record(pool, aggregate)
    await pool.execute(
        "UPDATE outbox SET state = 'published', published_at = now() - interval '2 hours', "
        "occurred_at = now() - interval '3 hours' WHERE aggregate_id = $1",
        old,
    )
    await pool.execute(
        "UPDATE outbox SET state = 'published', published_at = now(), "
        "occurred_at = now() - interval '3 hours' WHERE aggregate_id = $1",
        recent,
    )
    await pool.execute(
        "UPDATE outbox SET occurred_at = now() - interval '3 hours' WHERE aggregate_id = $1",
        waiting,
    )

    assert await store.purge(3600, 100, unpublished=False) == 1
    left = await pool.fetch("SELECT aggregate_id FROM outbox")
    assert {r["aggregate_id"] for r in left} == {recent, waiting}
    # With no bus to publish them, pending events go too once old enough.
    assert await store.purge(3600, 100, unpublished=True) == 1
    left = await pool.fetch("SELECT aggregate_id FROM outbox")
    assert {r["aggregate_id"] for r in left} == {recent}
