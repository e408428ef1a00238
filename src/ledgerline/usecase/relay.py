"""The outbox relay: claims due events, publishes them, and records what
became of each.

Order within an aggregate is kept by construction: the store hands out an
aggregate's events only behind its first unpublished one, and here they are
published one after another, stopping at the first that fails (the rest go
back unpublished). Different aggregates are published concurrently.

Delivery is at least once: an event is marked published after the bus has
stored it, so a relay that dies in between publishes it again when its claim
runs out, under the same id (the bus drops it as a duplicate within its
window; consumers may too)."""

from __future__ import annotations

import asyncio
import itertools
import random
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ledgerline.domain.events import BusUnavailableError, OutboxEvent, PublishError
from ledgerline.domain.ports import EventPublisher, OutboxStore


@dataclass(frozen=True, slots=True)
class RelaySettings:
    aggregates_per_claim: int = 100
    events_per_aggregate: int = 50
    # How long a claim keeps other relays off; publishing stops short of it.
    lease_seconds: float = 30.0
    # The longest one publish may take (the bus's ack timeout): no publish
    # starts that could end after 80 % of the lease.
    publish_timeout_seconds: float = 5.0
    # How many aggregates are published at once.
    concurrency: int = 32
    max_attempts: int = 8
    retry_base_seconds: float = 1.0
    retry_cap_seconds: float = 60.0

    def __post_init__(self) -> None:
        if self.lease_seconds < 4 * self.publish_timeout_seconds:
            raise ValueError("the lease must be at least 4 publish timeouts long")

    def retry_delay(self, attempt: int, jitter: float = 1.0) -> float:
        """Seconds before attempt ``attempt + 1``: doubling from the base,
        capped, times ``jitter`` (from 0.5 to 1, so retries spread)."""
        doubled = self.retry_base_seconds * 2.0 ** (attempt - 1)
        return float(min(self.retry_cap_seconds, doubled) * jitter)

    @property
    def retry_horizon_seconds(self) -> float:
        """The longest time from an event's first publish to its last
        retry: the bus must remember ids (deduplicate) at least this long."""
        waits = sum(self.retry_delay(n) for n in range(1, self.max_attempts))
        return waits + self.max_attempts * self.lease_seconds


@dataclass(frozen=True, slots=True)
class RelayRound:
    claimed: int = 0
    published: int = 0
    failed: int = 0  # attempts that failed and will be retried
    dead: int = 0
    released: int = 0  # given back unpublished
    bus_unavailable: bool = False


@dataclass
class _Tally:
    published: list[uuid.UUID]  # recorded at the end of the round
    published_early: int = 0  # recorded at once by a chain that stopped at a failure
    failed: int = 0
    dead: int = 0
    released: int = 0
    bus_unavailable: bool = False


class OutboxRelay:
    def __init__(
        self,
        *,
        store: OutboxStore,
        publisher: EventPublisher,
        settings: RelaySettings | None = None,
        jitter: Callable[[], float] | None = None,
    ) -> None:
        self._store = store
        self._publisher = publisher
        self._settings = settings or RelaySettings()
        self._jitter = jitter or (lambda: random.uniform(0.5, 1.0))  # noqa: S311 - not crypto

    @property
    def settings(self) -> RelaySettings:
        return self._settings

    async def relay_once(self) -> RelayRound:
        """One claim, published and settled."""
        s = self._settings
        events = await self._store.claim(
            s.aggregates_per_claim, s.events_per_aggregate, s.lease_seconds
        )
        if not events:
            return RelayRound()
        # Publishing stops well before the claim runs out, so that no other
        # relay takes an aggregate while this one still publishes it.
        stop_at = time.monotonic() + max(0.0, s.lease_seconds * 0.8 - s.publish_timeout_seconds)
        tally = _Tally(published=[])
        gate = asyncio.Semaphore(s.concurrency)
        try:
            async with asyncio.TaskGroup() as group:
                for _, chain in itertools.groupby(events, key=lambda e: e.aggregate):
                    group.create_task(self._publish_chain(list(chain), tally, gate, stop_at))
        finally:
            # Whatever happened, what reached the bus is recorded as such.
            await asyncio.shield(self._store.mark_published(tally.published))
        return RelayRound(
            claimed=len(events),
            published=len(tally.published) + tally.published_early,
            failed=tally.failed,
            dead=tally.dead,
            released=tally.released,
            bus_unavailable=tally.bus_unavailable,
        )

    async def _publish_chain(
        self,
        chain: Sequence[OutboxEvent],
        tally: _Tally,
        gate: asyncio.Semaphore,
        stop_at: float,
    ) -> None:
        done: list[uuid.UUID] = []  # published, not yet recorded
        try:
            async with gate:
                for index, event in enumerate(chain):
                    if tally.bus_unavailable or time.monotonic() >= stop_at:
                        await self._release(chain[index:], tally)
                        return
                    try:
                        await self._publisher.publish(event)
                    except BusUnavailableError:
                        tally.bus_unavailable = True
                        await self._release(chain[index:], tally)
                        return
                    except PublishError as exc:
                        # What went before it is recorded first: this event
                        # must never be on record as dead while its
                        # predecessors still look unpublished (a later claim
                        # would then lead past it).
                        await self._store.mark_published(done)
                        tally.published_early += len(done)
                        done.clear()
                        await self._count_failure(event, exc, tally)
                        await self._release(chain[index + 1 :], tally)
                        return
                    done.append(event.id)
        finally:
            tally.published.extend(done)  # recorded with the round's, whatever happened

    async def _count_failure(self, event: OutboxEvent, error: PublishError, tally: _Tally) -> None:
        s = self._settings
        attempt = event.attempts + 1
        delay = s.retry_delay(attempt, self._jitter())
        reason = str(error) or type(error).__name__
        if await self._store.mark_failed(event.id, reason, delay, s.max_attempts):
            tally.dead += 1
        else:
            tally.failed += 1

    async def _release(self, events: Sequence[OutboxEvent], tally: _Tally) -> None:
        if events:
            await self._store.release([e.id for e in events])
            tally.released += len(events)
