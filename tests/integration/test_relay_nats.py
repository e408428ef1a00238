"""The relay between the real database and a real NATS JetStream: every
event arrives once, as a CloudEvent on its subject, in its aggregate's order,
whatever the bus, the relay or a slow transaction does in between."""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from urllib.parse import urlsplit

import asyncpg
import nats
import pytest
from nats.js.api import StreamConfig
from prometheus_client import CollectorRegistry

from ledgerline.delivery.worker.jobs import RelayLoop
from ledgerline.domain.events import BusUnavailableError, OutboxEvent, UserRegistered
from ledgerline.domain.user import Principal
from ledgerline.main.core import Core
from ledgerline.platform.eventbus import EventBusSettings, NatsEventBus
from ledgerline.platform.metrics import WorkerMetrics
from ledgerline.repository.postgres.outbox import PostgresOutbox, PostgresOutboxStore
from ledgerline.repository.postgres.unit_of_work import PostgresUnitOfWorkFactory
from ledgerline.usecase.payments import NewOrder
from ledgerline.usecase.relay import OutboxRelay, RelaySettings
from ledgerline.usecase.users import Registration
from tests.event_stream import Bus, in_aggregate_order
from tests.integration.conftest import PASSWORD
from tests.tcp_proxy import TcpProxy

pytestmark = pytest.mark.timeout(120)

FAST = RelaySettings(
    retry_base_seconds=0.05, retry_cap_seconds=0.2, lease_seconds=5.0, publish_timeout_seconds=1.0
)


def _registered(aggregate: uuid.UUID, name: str = "A") -> UserRegistered:
    return UserRegistered(
        occurred_at=datetime.now(UTC), user_id=aggregate, email="a@b.c", name=name, is_admin=False
    )


async def _record(pool: asyncpg.Pool, aggregates: Sequence[uuid.UUID], rounds: int = 1) -> None:
    uow = PostgresUnitOfWorkFactory(pool)
    for _ in range(rounds):
        for aggregate in aggregates:
            async with uow() as tx:
                await tx.outbox.add(_registered(aggregate))
                await tx.commit()


async def _relay_until(relay: OutboxRelay, done: Callable[[], Awaitable[bool]]) -> None:
    async with asyncio.timeout(30):
        while not await done():
            outcome = await relay.relay_once()
            if outcome.claimed == 0 or outcome.bus_unavailable:
                await asyncio.sleep(0.05)


async def _all_published(pool: asyncpg.Pool) -> bool:
    left = await pool.fetchval("SELECT count(*) FROM outbox WHERE state <> 'published'")
    return bool(left == 0)


async def _until(done: Callable[[], Awaitable[bool]]) -> None:
    async with asyncio.timeout(30):
        while not await done():  # noqa: ASYNC110 - polling the database, not an event
            await asyncio.sleep(0.1)


async def test_a_payment_flows_events_arrive_as_cloudevents_on_their_subjects(
    core: Core, pool: asyncpg.Pool, bus: Bus
) -> None:
    admin = (await core.users.create_admin(Registration("root@example.com", PASSWORD, "R"))).user
    alice = await core.users.register(Registration("alice@example.com", PASSWORD, "Alice"))
    bob = await core.users.register(Registration("bob@example.com", PASSWORD, "Bob"))
    root, payer = Principal(admin.id, True), Principal(alice.id, False)
    await core.payments.credit(root, alice.id, 5_000, "EUR", "credit-1")
    order = await core.payments.create_order(payer, NewOrder(bob.id, 2_000, "EUR"))
    await core.payments.process_payment(payer, order.id, "pay-1")
    await core.payments.refund(Principal(bob.id, False), order.id, "refund-1")

    client = bus.client()
    relay = OutboxRelay(store=PostgresOutboxStore(pool), publisher=client, settings=FAST)
    await _relay_until(relay, lambda: _all_published(pool))
    await client.close()

    rows = await pool.fetch(
        "SELECT id, type, subject, aggregate_type, aggregate_id, version, occurred_at, "
        "payload::text AS payload FROM outbox ORDER BY seq"
    )
    messages = await bus.messages()
    by_id = {event.get_id(): (subject, headers, event) for subject, headers, event in messages}
    assert len(messages) == len(rows) == 7
    for row in rows:
        subject, headers, event = by_id[str(row["id"])]
        assert subject == f"{bus.settings.subject_prefix}.{row['type']}"
        assert headers["Nats-Msg-Id"] == str(row["id"])
        assert event.get_specversion() == "1.0"
        assert event.get_type() == row["type"]
        assert event.get_source() == "/ledgerline"
        assert event.get_subject() == row["subject"]
        assert event.get_time() == row["occurred_at"]
        assert event.get_datacontenttype() == "application/json"
        assert event.get_extension("aggregatetype") == row["aggregate_type"]
        assert event.get_extension("aggregateid") == str(row["aggregate_id"])
        assert event.get_extension("aggregateversion") == row["version"]
    paid = next(e for _, _, e in messages if e.get_type() == "order.paid")
    data = paid.get_data()
    assert isinstance(data, dict)
    assert data == {
        "order_id": str(order.id),
        "payer_id": str(alice.id),
        "payee_id": str(bob.id),
        "amount": 2_000,
        "currency": "EUR",
        "transfer_id": data["transfer_id"],
    }
    assert in_aggregate_order(messages)


class _DiesBeforeRecording:
    """The store of a relay that dies right after the bus stored its events,
    before it could record them as published."""

    def __init__(self, inner: PostgresOutboxStore) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> object:
        return getattr(self._inner, name)

    async def mark_published(self, ids: Sequence[uuid.UUID]) -> None:
        return None


async def test_a_relay_that_dies_after_publishing_is_followed_by_one_that_sends_the_same_ids(
    pool: asyncpg.Pool, bus: Bus
) -> None:
    aggregates = [uuid.uuid4() for _ in range(20)]
    await _record(pool, aggregates, rounds=3)
    short = RelaySettings(lease_seconds=1.0, events_per_aggregate=2, publish_timeout_seconds=0.2)
    first, second = bus.client(), bus.client()

    dying = OutboxRelay(
        store=_DiesBeforeRecording(PostgresOutboxStore(pool)),  # type: ignore[arg-type]
        publisher=first,
        settings=short,
    )
    outcome = await dying.relay_once()
    assert outcome.published == 40  # two of each aggregate's three reached the bus
    assert await pool.fetchval("SELECT count(*) FROM outbox WHERE state = 'published'") == 0

    await asyncio.sleep(1.1)  # the dead relay's claim runs out
    relay = OutboxRelay(store=PostgresOutboxStore(pool), publisher=second, settings=short)
    await _relay_until(relay, lambda: _all_published(pool))
    await first.close()
    await second.close()

    messages = await bus.messages()
    ids = [event.get_id() for _, _, event in messages]
    expected = await pool.fetch("SELECT id FROM outbox")
    assert sorted(ids) == sorted(str(r["id"]) for r in expected)  # each once: 60
    assert second.duplicates == 40  # sent again under the same ids, dropped by the stream
    assert in_aggregate_order(messages)


async def test_an_event_that_commits_after_a_later_one_was_published_is_still_published(
    pool: asyncpg.Pool, bus: Bus
) -> None:
    """The 'seq > last published seq' design loses this event: its seq is
    taken first, but its transaction commits after the later event has been
    published."""
    early, late = uuid.uuid4(), uuid.uuid4()
    client = bus.client()
    relay = OutboxRelay(store=PostgresOutboxStore(pool), publisher=client, settings=FAST)
    async with pool.acquire() as conn:
        tx = conn.transaction()
        await tx.start()
        await PostgresOutbox(conn).add(_registered(early))  # seq taken, not committed
        await _record(pool, [late])
        assert (await relay.relay_once()).published == 1
        await tx.commit()
    await _relay_until(relay, lambda: _all_published(pool))
    await client.close()

    messages = await bus.messages()
    assert [e.get_extension("aggregateid") for _, _, e in messages] == [str(late), str(early)]
    seqs = await pool.fetch("SELECT aggregate_id FROM outbox ORDER BY seq")
    assert [r["aggregate_id"] for r in seqs] == [early, late]


async def test_two_relays_share_the_work_and_never_publish_one_event_twice(
    pool: asyncpg.Pool, bus: Bus
) -> None:
    aggregates = [uuid.uuid4() for _ in range(150)]
    await _record(pool, aggregates, rounds=4)
    clients = [bus.client(), bus.client()]
    published = [0, 0]
    settings = RelaySettings(aggregates_per_claim=20, events_per_aggregate=2)

    async def run(index: int) -> None:
        relay = OutboxRelay(
            store=PostgresOutboxStore(pool), publisher=clients[index], settings=settings
        )
        while not await _all_published(pool):
            outcome = await relay.relay_once()
            published[index] += outcome.published
            if outcome.claimed == 0:
                await asyncio.sleep(0.01)

    async with asyncio.timeout(60):
        await asyncio.gather(run(0), run(1))
    for client in clients:
        await client.close()

    assert sum(published) == 600
    assert all(count > 0 for count in published)  # both took a share
    assert [c.duplicates for c in clients] == [0, 0]  # none was sent twice
    messages = await bus.messages()
    assert len(messages) == 600
    assert in_aggregate_order(messages)


async def test_no_event_is_lost_or_reordered_while_the_bus_is_away(
    pool: asyncpg.Pool, bus: Bus
) -> None:
    target = urlsplit(bus.url)
    proxy = TcpProxy(target.hostname or "127.0.0.1", target.port or 4222).start()
    client = bus.client(proxy.url("nats"))
    metrics = WorkerMetrics(CollectorRegistry())
    relay = OutboxRelay(store=PostgresOutboxStore(pool), publisher=client, settings=FAST)
    loop = RelayLoop(relay, metrics, idle_seconds=0.05, backoff_cap_seconds=0.5)
    stopping = asyncio.Event()
    aggregates = [uuid.uuid4() for _ in range(10)]
    try:
        running = asyncio.create_task(loop.run(stopping))
        await _record(pool, aggregates)
        await asyncio.sleep(0.5)
        proxy.cut()
        await _record(pool, aggregates, rounds=5)  # while the bus is away
        await asyncio.sleep(3)
        proxy.restore()
        await _record(pool, aggregates)
        await _until(lambda: _all_published(pool))
        stopping.set()
        await running
    finally:
        await client.close()
        proxy.close()

    messages = await bus.messages()
    assert len(messages) == 70
    assert len({e.get_id() for _, _, e in messages}) == 70
    assert in_aggregate_order(messages)
    assert await pool.fetchval("SELECT max(attempts) FROM outbox") == 0  # no event was blamed


async def test_an_event_the_bus_refuses_dies_after_its_attempts_and_holds_its_aggregate(
    pool: asyncpg.Pool, bus: Bus
) -> None:
    nc = await nats.connect(bus.url)
    await nc.jetstream().add_stream(
        StreamConfig(
            name=bus.settings.stream,
            subjects=[f"{bus.settings.subject_prefix}.>"],
            max_msg_size=2048,
            duplicate_window=600,
        )
    )
    await nc.close()
    blocked, free = uuid.uuid4(), uuid.uuid4()
    uow = PostgresUnitOfWorkFactory(pool)
    for event in (_registered(blocked, "x" * 4000), _registered(blocked), _registered(free)):
        async with uow() as tx:
            await tx.outbox.add(event)
            await tx.commit()
    settings = RelaySettings(max_attempts=3, retry_base_seconds=0.05, retry_cap_seconds=0.1)
    client = bus.client()
    relay = OutboxRelay(store=PostgresOutboxStore(pool), publisher=client, settings=settings)

    async def settled() -> bool:
        states = await pool.fetch("SELECT state FROM outbox ORDER BY seq")
        return [r["state"] for r in states] == ["dead", "pending", "published"]

    await _relay_until(relay, settled)
    for _ in range(5):  # and it stays so
        await asyncio.sleep(0.1)
        await relay.relay_once()
    await client.close()

    row = await pool.fetchrow("SELECT attempts, last_error FROM outbox WHERE state = 'dead'")
    assert row is not None
    assert row["attempts"] == 3
    assert "message size exceeds maximum allowed" in row["last_error"]
    messages = await bus.messages()
    assert [e.get_extension("aggregateid") for _, _, e in messages] == [str(free)]
    stats = await PostgresOutboxStore(pool).stats()
    assert (stats.pending, stats.dead) == (1, 1)


async def test_a_bus_that_does_not_answer_is_reported_at_once_and_blames_no_event() -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]  # nothing listens once this closes
    client = NatsEventBus(EventBusSettings(url=f"nats://127.0.0.1:{port}"))
    event = OutboxEvent(
        id=uuid.uuid4(),
        type="user.registered",
        subject="users/x",
        aggregate_type="user",
        aggregate_id=uuid.uuid4(),
        version=1,
        occurred_at=datetime.now(UTC),
        data={},
    )

    async with asyncio.timeout(5):
        with pytest.raises(BusUnavailableError):
            await client.publish(event)
        with pytest.raises(BusUnavailableError):
            await client.ping()
    await client.close()
