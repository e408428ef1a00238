"""Order expiry: a pending order nobody paid within its time to live
becomes expired, once, with its event.

Expiry and payment meet at the order's row lock. Expiry skips the rows a
payment holds (SKIP LOCKED) and takes them on a later run if they are still
pending; a payment that waits for an expiry's lock then reads the order as
expired and is refused. Either way the order ends paid or expired, never
both."""

from __future__ import annotations

from datetime import timedelta

from ledgerline.domain.events import OrderExpired
from ledgerline.domain.ports import Clock, UnitOfWorkFactory


class OrderExpiry:
    def __init__(self, *, uow: UnitOfWorkFactory, clock: Clock, ttl: timedelta) -> None:
        self._uow = uow
        self._clock = clock
        self._ttl = ttl

    async def expire_due(self, batch: int = 100, max_batches: int = 100) -> int:
        """Expires the pending orders older than the TTL, ``batch`` to a
        transaction; returns how many."""
        total = 0
        for _ in range(max_batches):
            expired = await self._expire_batch(batch)
            total += expired
            if expired < batch:
                break
        return total

    async def _expire_batch(self, batch: int) -> int:
        now = self._clock.now()
        async with self._uow() as uow:
            due = await uow.orders.lock_pending_created_before(now - self._ttl, batch)
            for order in due:
                expired = order.expire(now)
                await uow.orders.update(expired)
                await uow.outbox.add(OrderExpired.of(expired))
            await uow.commit()
        return len(due)
