"""The outbox relay with an in-memory store and bus: order within an
aggregate, what a refused event and an unreachable bus each cost, the dead
letter, and the retry schedule."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import pytest

from ledgerline.domain.events import OutboxEvent
from ledgerline.usecase.relay import OutboxRelay, RelaySettings
from tests.fakes import InMemoryBus, InMemoryOutboxStore

SETTINGS = RelaySettings(
    aggregates_per_claim=10, events_per_aggregate=3, max_attempts=3, concurrency=4
)


def _events(aggregate: uuid.UUID, count: int, kind: str = "order") -> list[OutboxEvent]:
    return [
        OutboxEvent(
            id=uuid.uuid4(),
            type=f"{kind}.changed",
            subject=f"{kind}s/{aggregate}",
            aggregate_type=kind,
            aggregate_id=aggregate,
            version=version,
            occurred_at=datetime.now(UTC),
            data={"n": version},
        )
        for version in range(1, count + 1)
    ]


def _world(
    *aggregates: int, settings: RelaySettings = SETTINGS
) -> tuple[InMemoryOutboxStore, InMemoryBus, OutboxRelay, list[list[OutboxEvent]]]:
    store, bus = InMemoryOutboxStore(), InMemoryBus()
    chains = [_events(uuid.uuid4(), count) for count in aggregates]
    for chain in chains:
        for event in chain:
            store.record(event)
    relay = OutboxRelay(store=store, publisher=bus, settings=settings, jitter=lambda: 1.0)
    return store, bus, relay, chains


async def _drain(relay: OutboxRelay, store: InMemoryOutboxStore, rounds: int = 50) -> None:
    for _ in range(rounds):
        store.make_due()
        if (await relay.relay_once()).claimed == 0:
            return


class _Through:
    """A publisher that runs ``before`` on each event, then hands it to the bus."""

    def __init__(self, bus: InMemoryBus, before: Callable[[OutboxEvent], Awaitable[None]]) -> None:
        self._bus = bus
        self._before = before

    async def publish(self, event: OutboxEvent) -> None:
        await self._before(event)
        await self._bus.publish(event)


def _versions_as_stored(bus: InMemoryBus, aggregate: uuid.UUID) -> list[int]:
    return [e.version for e in bus.stored if e.aggregate_id == aggregate]


async def test_every_event_is_published_once_in_its_aggregates_order() -> None:
    store, bus, relay, chains = _world(7, 1, 4)

    first = await relay.relay_once()
    await _drain(relay, store)

    assert (first.claimed, first.published) == (7, 7)  # three, one and three events
    assert len(bus.stored) == 12
    assert bus.duplicates == 0
    for chain in chains:
        aggregate = chain[0].aggregate_id
        assert _versions_as_stored(bus, aggregate) == list(range(1, len(chain) + 1))
    assert {store.state(e.id) for chain in chains for e in chain} == {"published"}


async def test_a_refused_event_costs_one_attempt_and_holds_back_its_aggregate_only() -> None:
    store, bus, relay, (blocked, free) = _world(3, 2)
    bus.refused.add(blocked[1].id)

    outcome = await relay.relay_once()

    assert (outcome.published, outcome.failed, outcome.released) == (3, 1, 1)
    assert _versions_as_stored(bus, blocked[0].aggregate_id) == [1]
    assert _versions_as_stored(bus, free[0].aggregate_id) == [1, 2]
    assert store.delays() == [SETTINGS.retry_delay(1)]
    # Not due yet: nothing of that aggregate is claimed before its retry.
    assert (await relay.relay_once()).claimed == 0

    bus.refused.clear()
    await _drain(relay, store)
    assert _versions_as_stored(bus, blocked[0].aggregate_id) == [1, 2, 3]


async def test_a_refused_events_predecessors_are_recorded_before_its_failure() -> None:
    store, bus, relay, (chain,) = _world(3)
    bus.refused.add(chain[1].id)

    outcome = await relay.relay_once()

    assert store.history == [("published", 1), ("failed", 2)]
    assert (outcome.published, outcome.failed, outcome.released) == (1, 1, 1)


async def test_an_event_refused_past_its_attempts_is_dead_and_its_successors_wait() -> None:
    store, bus, relay, (blocked, free) = _world(3, 1)
    bus.refused.add(blocked[0].id)

    outcomes = []
    for _ in range(SETTINGS.max_attempts + 2):
        store.make_due()
        outcomes.append(await relay.relay_once())

    assert [o.failed for o in outcomes[:3]] == [1, 1, 0]
    assert sum(o.dead for o in outcomes) == 1
    assert store.state(blocked[0].id) == "dead"
    assert [store.state(e.id) for e in blocked[1:]] == ["pending", "pending"]
    assert _versions_as_stored(bus, blocked[0].aggregate_id) == []
    assert _versions_as_stored(bus, free[0].aggregate_id) == [1]
    stats = await store.stats()
    assert (stats.pending, stats.dead) == (2, 1)


async def test_an_unreachable_bus_blames_no_event_and_loses_none() -> None:
    store, bus, relay, chains = _world(3, 3)
    bus.down = True

    for _ in range(SETTINGS.max_attempts * 3):
        outcome = await relay.relay_once()
        assert outcome.bus_unavailable
        assert (outcome.published, outcome.failed, outcome.dead) == (0, 0, 0)
        assert outcome.released == outcome.claimed

    assert store.delays() == []
    assert all(row.event.attempts == 0 for row in store.rows)
    bus.down = False
    await _drain(relay, store)
    for chain in chains:
        assert _versions_as_stored(bus, chain[0].aggregate_id) == [1, 2, 3]


async def test_a_bus_that_goes_down_mid_round_keeps_what_it_stored() -> None:
    store, bus, relay, chains = _world(*([3] * 6))
    calls = 0

    async def flaky(_: OutboxEvent) -> None:
        nonlocal calls
        calls += 1
        if calls == 5:
            bus.down = True

    relay = OutboxRelay(store=store, publisher=_Through(bus, flaky), settings=SETTINGS)
    outcome = await relay.relay_once()

    assert outcome.bus_unavailable
    assert outcome.published == len(bus.stored) == 4
    assert outcome.published + outcome.released == outcome.claimed
    bus.down = False
    await _drain(relay, store)
    assert len(bus.stored) == 18
    for chain in chains:
        assert _versions_as_stored(bus, chain[0].aggregate_id) == [1, 2, 3]


async def test_publishing_stops_short_of_the_claims_lease() -> None:
    settings = RelaySettings(
        lease_seconds=0.3, publish_timeout_seconds=0.05, events_per_aggregate=10, concurrency=1
    )
    store, bus, relay, (chain,) = _world(10, settings=settings)

    async def slow(_: OutboxEvent) -> None:
        await asyncio.sleep(0.05)

    relay = OutboxRelay(store=store, publisher=_Through(bus, slow), settings=settings)
    outcome = await relay.relay_once()

    assert 0 < outcome.published < 10
    assert outcome.released == 10 - outcome.published
    assert _versions_as_stored(bus, chain[0].aggregate_id) == list(range(1, outcome.published + 1))


async def test_aggregates_are_published_concurrently_up_to_the_limit() -> None:
    settings = RelaySettings(concurrency=3)
    store, bus, relay, _ = _world(*([1] * 10), settings=settings)
    running = peak = 0

    async def counted(_: OutboxEvent) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.01)
        running -= 1

    relay = OutboxRelay(store=store, publisher=_Through(bus, counted), settings=settings)
    assert (await relay.relay_once()).published == 10
    assert peak == 3


@pytest.mark.parametrize(
    ("attempt", "jitter", "delay"),
    [(1, 1.0, 1.0), (2, 1.0, 2.0), (4, 1.0, 8.0), (7, 1.0, 60.0), (30, 1.0, 60.0), (3, 0.5, 2.0)],
    ids=["first", "doubles", "keeps-doubling", "capped", "stays-capped", "jittered"],
)
def test_retry_delay(attempt: int, jitter: float, delay: float) -> None:
    assert RelaySettings().retry_delay(attempt, jitter) == delay


def test_the_retry_horizon_covers_every_wait_and_claim() -> None:
    settings = RelaySettings(max_attempts=4, lease_seconds=10, publish_timeout_seconds=1)
    # Waits after attempts 1, 2 and 3 (1 + 2 + 4 s), and up to a lease per attempt.
    assert settings.retry_horizon_seconds == 7 + 4 * 10


def test_a_lease_shorter_than_four_publish_timeouts_is_refused() -> None:
    with pytest.raises(ValueError, match="4 publish timeouts"):
        RelaySettings(lease_seconds=10, publish_timeout_seconds=3)
