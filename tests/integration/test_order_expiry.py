"""Order expiry on the real database: due orders expire once, with their
event; and expiry racing payments ends every order paid or expired, never
both, with the money where the outcome says."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from ledgerline.domain.errors import FailedPreconditionError
from ledgerline.domain.user import Principal
from ledgerline.main.core import Core
from ledgerline.repository.postgres.unit_of_work import PostgresUnitOfWorkFactory
from ledgerline.usecase.expiry import OrderExpiry
from ledgerline.usecase.payments import NewOrder
from ledgerline.usecase.users import Registration
from tests.fakes import FakeClock
from tests.integration.conftest import PASSWORD

pytestmark = pytest.mark.timeout(120)
PRICE = 100


async def _people(core: Core) -> tuple[Principal, Principal, Principal]:
    admin = (await core.users.create_admin(Registration("root@example.com", PASSWORD, "R"))).user
    alice = await core.users.register(Registration("alice@example.com", PASSWORD, "Alice"))
    bob = await core.users.register(Registration("bob@example.com", PASSWORD, "Bob"))
    return Principal(admin.id, True), Principal(alice.id, False), Principal(bob.id, False)


def _expiry(pool: asyncpg.Pool, hours_later: float) -> OrderExpiry:
    clock = FakeClock(datetime.now(UTC))
    clock.advance(hours_later * 3600)
    return OrderExpiry(uow=PostgresUnitOfWorkFactory(pool), clock=clock, ttl=timedelta(hours=24))


async def test_due_orders_expire_once_with_their_event(core: Core, pool: asyncpg.Pool) -> None:
    _, alice, bob = await _people(core)
    orders = [
        await core.payments.create_order(alice, NewOrder(bob.user_id, PRICE, "EUR"))
        for _ in range(5)
    ]

    assert await _expiry(pool, hours_later=23).expire_due() == 0
    assert await _expiry(pool, hours_later=25).expire_due(batch=2) == 5
    assert await _expiry(pool, hours_later=26).expire_due() == 0

    statuses = await pool.fetch("SELECT status FROM orders")
    assert {r["status"] for r in statuses} == {"expired"}
    events = await pool.fetch(
        "SELECT aggregate_id, version FROM outbox WHERE type = 'order.expired' ORDER BY seq"
    )
    assert sorted(r["aggregate_id"] for r in events) == sorted(o.id for o in orders)
    assert {r["version"] for r in events} == {2}
    with pytest.raises(FailedPreconditionError):
        await core.payments.process_payment(alice, orders[0].id, "too-late")


async def test_expiry_racing_payments_ends_each_order_paid_or_expired_never_both(
    core: Core, pool: asyncpg.Pool
) -> None:
    admin, alice, bob = await _people(core)
    count = 40
    await core.payments.credit(admin, alice.user_id, PRICE * count, "EUR", "credit")
    orders = [
        await core.payments.create_order(alice, NewOrder(bob.user_id, PRICE, "EUR"))
        for _ in range(count)
    ]
    expiry = _expiry(pool, hours_later=25)

    async def pay(index: int) -> str:
        try:
            await core.payments.process_payment(alice, orders[index].id, f"pay-{index}")
        except FailedPreconditionError:
            return "refused"
        return "paid"

    async def expire() -> int:
        expired = 0
        for _ in range(10):
            expired += await expiry.expire_due(batch=3)
            await asyncio.sleep(0)
        return expired

    paying = asyncio.gather(*(pay(i) for i in range(count)))
    outcomes, expired = await asyncio.gather(paying, expire())
    expired += await expiry.expire_due()  # what a payment held while expiry passed it by

    rows = await pool.fetch("SELECT id, status FROM orders")
    status = {r["id"]: r["status"] for r in rows}
    paid = [o.id for o, outcome in zip(orders, outcomes, strict=True) if outcome == "paid"]
    assert sorted(paid) == sorted(i for i, s in status.items() if s == "paid")
    assert expired == count - len(paid) == sum(s == "expired" for s in status.values())
    transfers = await pool.fetchval("SELECT count(*) FROM transfers WHERE kind = 'payment'")
    assert transfers == len(paid)
    balances = await core.payments.balances(bob)
    assert sum(b.amount for b in balances) == PRICE * len(paid)
    events = await pool.fetch(
        "SELECT type, aggregate_id FROM outbox WHERE type IN ('order.paid', 'order.expired')"
    )
    kinds: dict[object, list[str]] = {}
    for r in events:
        kinds.setdefault(r["aggregate_id"], []).append(r["type"])
    assert all(len(types) == 1 for types in kinds.values())
    assert len(kinds) == count
