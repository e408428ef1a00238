"""A lock that expires while its holder is paused: the database transaction,
not the lock, keeps the payment single. Real PostgreSQL, real lock service;
the pause is injected between taking the lock and the settlement, where a
stop-the-world pause hurts most, or inside the settlement's transaction with
the order row locked."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import asyncpg
import pytest
import redis.asyncio as redis

from ledgerline.domain.errors import FailedPreconditionError
from ledgerline.domain.order import Order
from ledgerline.domain.ports import LockManager
from ledgerline.domain.settlement import OrderSettlement, SettleOutcome
from ledgerline.domain.user import Email, Principal, User
from ledgerline.platform.clock import SystemClock
from ledgerline.platform.locks import PostgresLockManager, RedisLockManager
from ledgerline.repository.postgres.idempotency import PostgresIdempotencyStore
from ledgerline.repository.postgres.ledger import PostgresLedgerRepository
from ledgerline.repository.postgres.orders import PostgresOrderRepository
from ledgerline.repository.postgres.settlements import PostgresSettlements
from ledgerline.repository.postgres.unit_of_work import PostgresUnitOfWorkFactory
from ledgerline.repository.postgres.users import PostgresUserRepository
from ledgerline.usecase.payments import NewOrder, PaymentService, PaymentSettings
from tests.conftest import require_redis

LOCK_TTL = 0.5
PAUSE = 2.0
CREDIT, PRICE = 10_000, 2_500


class _PauseFirstPayment(PostgresSettlements):
    """Settlements that pause the next payment once: "before" its
    settlement (lock held, nothing read), or "in-transaction": its
    settlement runs in a transaction that locks the order row first and
    pauses there, as a process stopped with the row locked would."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        super().__init__(pool)
        self._pool = pool
        self.pause_next: str | None = None

    async def settle_order(self, settlement: OrderSettlement) -> SettleOutcome:
        where, self.pause_next = self.pause_next, None
        if where == "before":
            await asyncio.sleep(PAUSE)
        if where != "in-transaction":
            return await super().settle_order(settlement)
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "SELECT 1 FROM orders WHERE id = $1 FOR UPDATE", settlement.before.id
            )
            await asyncio.sleep(PAUSE)
            return await PostgresSettlements(conn).settle_order(settlement)


@dataclass
class Scene:
    service: PaymentService
    settlements: _PauseFirstPayment
    locks: LockManager
    payer: Principal
    order: Order


@pytest.fixture(params=["redis", "postgres"], ids=["redis-locks", "advisory-locks"])
async def scene(
    request: pytest.FixtureRequest, pool: asyncpg.Pool, redis_url: str | None
) -> AsyncIterator[Scene]:
    client = None
    locks: LockManager
    if request.param == "redis":
        client = redis.Redis.from_url(require_redis(redis_url))
        locks = RedisLockManager(client)
    else:
        locks = PostgresLockManager(pool)
    clock = SystemClock()
    users = PostgresUserRepository(pool)
    settlements = _PauseFirstPayment(pool)
    service = PaymentService(
        users=users,
        orders=PostgresOrderRepository(pool),
        ledger=PostgresLedgerRepository(pool),
        idempotency=PostgresIdempotencyStore(pool),
        settlements=settlements,
        uow=PostgresUnitOfWorkFactory(pool),
        locks=locks,
        clock=clock,
        settings=PaymentSettings(lock_ttl_seconds=LOCK_TTL),
    )
    people = []
    for name in ("payer", "payee"):
        now = clock.now()
        user = User(
            uuid.uuid4(), Email(f"{name}@example.com"), name, "$argon2id$x", False, now, now
        )
        await users.add(user)
        people.append(user)
    payer = Principal(people[0].id, is_admin=False)
    admin = Principal(uuid.uuid4(), is_admin=True)
    await service.credit(admin, payer.user_id, CREDIT, "EUR", "top-up")
    order = await service.create_order(payer, NewOrder(people[1].id, PRICE, "EUR"))
    try:
        yield Scene(service, settlements, locks, payer, order)
    finally:
        if client is not None:
            await client.aclose()


async def _charged(pool: asyncpg.Pool, scene: Scene) -> tuple[int, int]:
    payments = await pool.fetchval(
        "SELECT count(*) FROM transfers WHERE order_id = $1 AND kind = 'payment'", scene.order.id
    )
    balance = await pool.fetchval(
        "SELECT balance FROM accounts WHERE owner_id = $1 AND currency = 'EUR'",
        scene.payer.user_id,
    )
    return int(payments), int(balance)


async def test_expired_lock_under_a_paused_holder_pays_once(
    scene: Scene, pool: asyncpg.Pool
) -> None:
    scene.settlements.pause_next = "before"
    paused = asyncio.create_task(
        scene.service.process_payment(scene.payer, scene.order.id, "key-a")
    )
    await asyncio.sleep(LOCK_TTL * 2)  # the paused holder's lock has expired
    second = await scene.service.process_payment(scene.payer, scene.order.id, "key-b")
    assert second.status == "paid"
    with pytest.raises(FailedPreconditionError):
        await paused
    assert await _charged(pool, scene) == (1, CREDIT - PRICE)


async def test_expired_lock_with_one_key_replays_instead_of_paying_twice(
    scene: Scene, pool: asyncpg.Pool
) -> None:
    key = "same-key"
    scene.settlements.pause_next = "before"
    paused = asyncio.create_task(scene.service.process_payment(scene.payer, scene.order.id, key))
    await asyncio.sleep(LOCK_TTL * 2)
    second = await scene.service.process_payment(scene.payer, scene.order.id, key)
    first = await paused
    assert first == second
    assert first.status == "paid"
    assert await _charged(pool, scene) == (1, CREDIT - PRICE)


async def test_a_cancelled_payment_releases_its_lock_at_once(
    scene: Scene, pool: asyncpg.Pool
) -> None:
    key = f"payment-lock-{scene.order.id}"
    scene.settlements.pause_next = "before"
    paying = asyncio.create_task(scene.service.process_payment(scene.payer, scene.order.id, "k"))
    await asyncio.sleep(LOCK_TTL / 5)  # it holds the lock, paused before its transaction
    assert await scene.locks.try_acquire(key, 5) is None
    paying.cancel()
    with pytest.raises(asyncio.CancelledError):
        await paying
    lease = await scene.locks.try_acquire(key, 5)
    assert lease is not None, "the cancelled holder left its lock to the TTL"
    assert await lease.release()
    assert await _charged(pool, scene) == (0, CREDIT)


async def test_a_retry_queued_behind_the_row_lock_replays_the_first_answer(
    scene: Scene, pool: asyncpg.Pool
) -> None:
    """The first call's lock expires while it holds the order row; the retry
    (same key) takes the lock, waits for the row, and must answer what the
    first call answered, not "already paid"."""
    key = "same-key"
    scene.settlements.pause_next = "in-transaction"
    first = asyncio.create_task(scene.service.process_payment(scene.payer, scene.order.id, key))
    await asyncio.sleep(LOCK_TTL * 2)
    retry = await scene.service.process_payment(scene.payer, scene.order.id, key)
    assert retry == await first
    assert retry.status == "paid"
    assert await _charged(pool, scene) == (1, CREDIT - PRICE)
