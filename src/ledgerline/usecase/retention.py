"""What is kept, and for how long: idempotency keys past their retention
and outbox events past theirs are deleted, a batch at a time so that no
single statement runs long."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta

from ledgerline.domain.ports import Clock, IdempotencyStore, OutboxStore


class Retention:
    def __init__(
        self,
        *,
        idempotency: IdempotencyStore,
        outbox: OutboxStore,
        clock: Clock,
        outbox_retention: timedelta,
        events_are_published: bool,
    ) -> None:
        """``events_are_published``: a bus is configured, so only published
        events go (dead ones are kept for an operator); without one, every
        event goes once past its retention."""
        self._idempotency = idempotency
        self._outbox = outbox
        self._clock = clock
        self._outbox_retention = outbox_retention
        self._only_published = events_are_published

    async def purge_idempotency_keys(self, batch: int = 1000, max_batches: int = 100) -> int:
        """Deletes keys past their retention; returns how many went."""
        now = self._clock.now()
        return await _in_batches(lambda: self._idempotency.purge(now, batch), batch, max_batches)

    async def purge_outbox(self, batch: int = 1000, max_batches: int = 100) -> int:
        """Deletes events past the outbox retention; returns how many went."""
        age = self._outbox_retention.total_seconds()
        unpublished = not self._only_published
        return await _in_batches(
            lambda: self._outbox.purge(age, batch, unpublished=unpublished), batch, max_batches
        )


async def _in_batches(purge: Callable[[], Awaitable[int]], batch: int, max_batches: int) -> int:
    total = 0
    for _ in range(max_batches):
        purged = await purge()
        total += purged
        if purged < batch:
            break
    return total
