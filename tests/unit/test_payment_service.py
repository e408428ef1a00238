"""PaymentService with in-memory fakes: orders, exactly-once pay and refund,
credits, wallets and idempotency keys."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import itertools
import json
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta

import pytest

from ledgerline.domain.errors import (
    DomainError,
    FailedPreconditionError,
    IdempotencyMismatchError,
    InsufficientFundsError,
    InvalidArgumentError,
    NotFoundError,
    PaymentInProgressError,
    PermissionDeniedError,
)
from ledgerline.domain.events import OrderExpired, OrderPaid, WalletCredited
from ledgerline.domain.idempotency import ORDER_PAY, IdempotentRequest
from ledgerline.domain.ledger import Balance, LedgerEntry, Transfer, TransferKind
from ledgerline.domain.money import Money
from ledgerline.domain.order import Order, OrderStatus
from ledgerline.domain.user import Email, Principal, User
from ledgerline.usecase.expiry import OrderExpiry
from ledgerline.usecase.payments import NewOrder, PaymentService, PaymentSettings
from ledgerline.usecase.retention import Retention
from tests.fakes import (
    FakeClock,
    InMemoryIdempotency,
    InMemoryLease,
    InMemoryLedger,
    InMemoryLocks,
    InMemoryOrders,
    InMemoryOutboxStore,
    InMemorySettlements,
    InMemoryUnitOfWorkFactory,
    InMemoryUsers,
)

SETTINGS = PaymentSettings(lock_ttl_seconds=5.0, idempotency_retention=timedelta(hours=2))
PRICE = 2_500
EUR = "EUR"


@dataclass
class World:
    clock: FakeClock
    users: InMemoryUsers
    uow: InMemoryUnitOfWorkFactory
    locks: InMemoryLocks
    settlements: InMemorySettlements
    service: PaymentService
    people: dict[str, Principal]
    keys: itertools.count[int]

    @property
    def orders(self) -> InMemoryOrders:
        return self.uow.orders

    @property
    def ledger(self) -> InMemoryLedger:
        return self.uow.ledger

    @property
    def idempotency(self) -> InMemoryIdempotency:
        return self.uow.idempotency

    @property
    def alice(self) -> Principal:  # the payer of the orders made here
        return self.people["alice"]

    @property
    def bob(self) -> Principal:  # the payee
        return self.people["bob"]

    @property
    def carol(self) -> Principal:  # a stranger to the orders
        return self.people["carol"]

    @property
    def admin(self) -> Principal:
        return self.people["admin"]

    def key(self) -> str:
        """A fresh idempotency key."""
        return f"key-{next(self.keys)}"

    def balance(self, who: str, currency: str = EUR) -> int:
        return self.ledger.balance(self.people[who].user_id, currency)

    async def fund(self, who: str, amount: int, currency: str = EUR) -> None:
        await self.service.credit(
            self.admin, self.people[who].user_id, amount, currency, self.key()
        )

    async def order(self, amount: int = PRICE) -> Order:
        return await self.service.create_order(
            self.alice, NewOrder(payee_id=self.bob.user_id, amount=amount, currency=EUR)
        )

    async def paid_order(self) -> Order:
        await self.fund("alice", PRICE)
        order = await self.order()
        return await self.service.process_payment(self.alice, order.id, self.key())


@pytest.fixture
def world() -> World:
    clock = FakeClock()
    users = InMemoryUsers()
    people: dict[str, Principal] = {}
    for name in ("alice", "bob", "carol", "admin"):
        is_admin = name == "admin"
        user = User(
            id=uuid.uuid4(),
            email=Email(f"{name}@example.com"),
            name=name.title(),
            password_hash="unused",
            is_admin=is_admin,
            created_at=clock.now(),
            updated_at=clock.now(),
        )
        users.rows[user.id] = user
        people[name] = Principal(user.id, is_admin)
    uow = InMemoryUnitOfWorkFactory(users)
    locks = InMemoryLocks(clock)
    settlements = InMemorySettlements(uow)
    service = PaymentService(
        users=users,
        orders=uow.orders,
        ledger=uow.ledger,
        idempotency=uow.idempotency,
        settlements=settlements,
        uow=uow,
        locks=locks,
        clock=clock,
        settings=SETTINGS,
    )
    return World(clock, users, uow, locks, settlements, service, people, itertools.count(1))


def _lock_key(order: Order) -> str:
    return f"payment-lock-{order.id}"


async def _lock_is_free(world: World, key: str) -> bool:
    lease = await world.locks.try_acquire(key, 1.0)
    if lease is None:
        return False
    assert await lease.release()
    return True


# --- create_order -----------------------------------------------------------------


async def test_create_order_stores_a_pending_order(world: World) -> None:
    order = await world.service.create_order(
        world.alice,
        NewOrder(payee_id=world.bob.user_id, amount=PRICE, currency=EUR, description="  tea "),
    )

    assert order.status is OrderStatus.PENDING
    assert (order.payer_id, order.payee_id) == (world.alice.user_id, world.bob.user_id)
    assert order.money == Money(PRICE, EUR)
    assert order.description == "tea"
    assert order.created_at == order.updated_at == world.clock.now()
    assert order.paid_at is None
    assert world.orders.rows == {order.id: order}
    assert [u.committed for u in world.uow.opened] == [True]


MISSING = "missing"

INVALID_ORDERS: dict[str, tuple[str, int, str, str | None, type[DomainError], list[str]]] = {
    # id: (payee, amount, currency, description, error, fields reported)
    "payer-is-payee": ("alice", PRICE, EUR, None, InvalidArgumentError, ["payee_id"]),
    "amount-zero": ("bob", 0, EUR, None, InvalidArgumentError, ["amount"]),
    "amount-over-max": ("bob", 10**12 + 1, EUR, None, InvalidArgumentError, ["amount"]),
    "currency-lower-case": ("bob", PRICE, "eur", None, InvalidArgumentError, ["currency"]),
    "amount-and-currency": ("bob", -5, "EURO", None, InvalidArgumentError, ["amount", "currency"]),
    "description-too-long": ("bob", PRICE, EUR, "d" * 501, InvalidArgumentError, ["description"]),
    "every-field": (
        "bob",
        0,
        "",
        "d" * 501,
        InvalidArgumentError,
        ["amount", "currency", "description"],
    ),
    "unknown-payee": (MISSING, PRICE, EUR, None, NotFoundError, []),
}


@pytest.mark.parametrize(
    ("payee", "amount", "currency", "description", "error", "fields"),
    INVALID_ORDERS.values(),
    ids=list(INVALID_ORDERS),
)
async def test_create_order_rejects(
    world: World,
    payee: str,
    amount: int,
    currency: str,
    description: str | None,
    error: type[DomainError],
    fields: list[str],
) -> None:
    payee_id = world.people[payee].user_id if payee != MISSING else uuid.uuid4()

    with pytest.raises(error) as caught:
        await world.service.create_order(
            world.alice, NewOrder(payee_id, amount, currency, description)
        )

    if isinstance(caught.value, InvalidArgumentError):
        assert [d.field for d in caught.value.details] == fields
    assert world.orders.rows == {}
    assert not any(u.committed for u in world.uow.opened)


# --- get_order --------------------------------------------------------------------

GET_ORDER: dict[str, tuple[str, bool]] = {
    # id: (caller, sees the order)
    "payer": ("alice", True),
    "payee": ("bob", True),
    "admin": ("admin", True),
    "stranger": ("carol", False),
}


@pytest.mark.parametrize(("caller", "visible"), GET_ORDER.values(), ids=list(GET_ORDER))
async def test_get_order_visibility(world: World, caller: str, visible: bool) -> None:
    order = await world.order()

    if visible:
        assert await world.service.get_order(world.people[caller], order.id) == order
    else:
        with pytest.raises(NotFoundError):
            await world.service.get_order(world.people[caller], order.id)


@pytest.mark.parametrize("caller", ["alice", "admin"], ids=["user", "admin"])
async def test_get_order_missing_is_not_found(world: World, caller: str) -> None:
    await world.order()

    with pytest.raises(NotFoundError):
        await world.service.get_order(world.people[caller], uuid.uuid4())


async def test_get_order_hides_whether_an_order_exists(world: World) -> None:
    order = await world.order()

    with pytest.raises(NotFoundError) as existing:
        await world.service.get_order(world.carol, order.id)
    with pytest.raises(NotFoundError) as missing:
        await world.service.get_order(world.carol, uuid.uuid4())

    assert existing.value.message == missing.value.message


# --- pay --------------------------------------------------------------------------


async def test_pay_moves_the_amount_from_payer_to_payee(world: World) -> None:
    await world.fund("alice", 10_000)
    order = await world.order()
    world.clock.advance(30)

    paid = await world.service.process_payment(world.alice, order.id, world.key())

    assert paid.status is OrderStatus.PAID
    assert paid.paid_at == paid.updated_at == world.clock.now()
    assert paid.created_at == order.created_at
    assert world.orders.rows[order.id] == paid
    assert (world.balance("alice"), world.balance("bob")) == (10_000 - PRICE, PRICE)
    payments = [e for e in world.ledger.journal if e.kind is TransferKind.PAYMENT]
    assert [(e.owner_id, e.amount, e.order_id) for e in payments] == [
        (world.alice.user_id, -PRICE, order.id),
        (world.bob.user_id, PRICE, order.id),
    ]
    assert [e.balance_after for e in payments] == [10_000 - PRICE, PRICE]
    assert world.locks.acquired[-1] == _lock_key(order)
    assert world.locks.released[-1] == _lock_key(order)


async def test_pay_stores_the_answer_under_the_key_for_the_retention(world: World) -> None:
    await world.fund("alice", PRICE)
    order = await world.order()
    key = world.key()

    paid = await world.service.process_payment(world.alice, order.id, key)

    record = world.idempotency.rows[(world.alice.user_id, key)]
    params = {"order_id": str(order.id)}
    assert record.operation == ORDER_PAY
    assert (
        record.fingerprint
        == IdempotentRequest.of(key, ORDER_PAY, world.alice.user_id, params).fingerprint
    )
    assert Order.from_snapshot(record.result) == paid
    assert record.expires_at == world.clock.now() + SETTINGS.idempotency_retention


async def test_pay_replay_with_the_same_request_returns_the_same_order(world: World) -> None:
    await world.fund("alice", 10_000)
    order = await world.order()
    key = world.key()
    first = await world.service.process_payment(world.alice, order.id, key)
    journal = list(world.ledger.journal)
    world.clock.advance(60)

    again = await world.service.process_payment(world.alice, order.id, key)

    assert again == first
    assert world.ledger.journal == journal
    assert (world.balance("alice"), world.balance("bob")) == (10_000 - PRICE, PRICE)


async def test_pay_replay_with_a_different_request_is_a_mismatch(world: World) -> None:
    await world.fund("alice", 10_000)
    order, other = await world.order(), await world.order()
    key = world.key()
    await world.service.process_payment(world.alice, order.id, key)

    with pytest.raises(IdempotencyMismatchError):
        await world.service.process_payment(world.alice, other.id, key)

    assert (world.balance("alice"), world.balance("bob")) == (10_000 - PRICE, PRICE)
    assert world.orders.rows[other.id] == other


async def test_a_key_used_for_another_operation_is_a_mismatch(world: World) -> None:
    """The admin's credit key, sent again to refund: not the same request."""
    paid = await world.paid_order()
    key = world.key()
    await world.service.credit(world.admin, world.bob.user_id, 700, EUR, key)

    with pytest.raises(IdempotencyMismatchError):
        await world.service.refund(world.admin, paid.id, key)

    assert world.orders.rows[paid.id] == paid


def _earlier_fingerprint(route: str, caller: Principal, params: dict[str, object]) -> str:
    """What the HTTP layer of the previous release stored: the method and
    route template in the operation's place."""
    canonical = json.dumps(
        {"op": route, "caller": str(caller.user_id), "params": params},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=True,
    )
    return f"sha256:{hashlib.sha256(canonical.encode()).hexdigest()}"


async def test_a_key_stored_by_the_previous_release_still_replays(world: World) -> None:
    """A deploy does not turn a client's in-flight retry into a mismatch:
    records stored before the fingerprint moved into the use case replay."""
    await world.fund("alice", 10_000)
    order, other = await world.order(), await world.order()
    key = world.key()
    paid = await world.service.process_payment(world.alice, order.id, key)
    stored = world.idempotency.rows[(world.alice.user_id, key)]
    route = "POST /v1/orders/{order_id}/pay"
    world.idempotency.rows[(world.alice.user_id, key)] = dataclasses.replace(
        stored,
        operation="payment",
        fingerprint=_earlier_fingerprint(route, world.alice, {"order_id": str(order.id)}),
    )
    journal = list(world.ledger.journal)

    assert await world.service.process_payment(world.alice, order.id, key) == paid
    with pytest.raises(IdempotencyMismatchError):
        await world.service.process_payment(world.alice, other.id, key)

    assert world.ledger.journal == journal


async def test_pay_an_order_paid_under_another_key_fails_precondition(world: World) -> None:
    await world.fund("alice", 10_000)
    order = await world.order()
    paid = await world.service.process_payment(world.alice, order.id, world.key())

    with pytest.raises(FailedPreconditionError):
        await world.service.process_payment(world.alice, order.id, world.key())

    assert world.orders.rows[order.id] == paid
    assert (world.balance("alice"), world.balance("bob")) == (10_000 - PRICE, PRICE)


@pytest.mark.parametrize("funds", [0, PRICE - 1], ids=["no-wallet", "one-short"])
async def test_pay_without_funds_changes_nothing_and_a_retry_can_succeed(
    world: World, funds: int
) -> None:
    if funds:
        await world.fund("alice", funds)
    order = await world.order()
    records = dict(world.idempotency.rows)
    key = world.key()

    with pytest.raises(InsufficientFundsError):
        await world.service.process_payment(world.alice, order.id, key)

    assert world.orders.rows[order.id] == order
    assert (world.balance("alice"), world.balance("bob")) == (funds, 0)
    assert world.idempotency.rows == records
    assert world.uow.opened[-1].committed is False

    await world.fund("alice", PRICE - funds)
    paid = await world.service.process_payment(world.alice, order.id, key)

    assert paid.status is OrderStatus.PAID
    assert (world.balance("alice"), world.balance("bob")) == (0, PRICE)


PAY_CALLERS: dict[str, tuple[str, type[DomainError]]] = {
    "payee": ("bob", PermissionDeniedError),
    "admin": ("admin", PermissionDeniedError),
    "stranger": ("carol", NotFoundError),
}


# Permission comes before the key: a caller who may not act is refused the
# same whatever key they send, and never takes the order's lock.
KEYS = {"fresh-key": None, "no-key": "", "bad-key": "has space"}


@pytest.mark.parametrize("key", KEYS.values(), ids=list(KEYS))
@pytest.mark.parametrize(("caller", "error"), PAY_CALLERS.values(), ids=list(PAY_CALLERS))
async def test_pay_by_anyone_but_the_payer_is_refused(
    world: World, caller: str, error: type[DomainError], key: str | None
) -> None:
    await world.fund("alice", PRICE)
    await world.fund(caller, PRICE)
    order = await world.order()
    key = world.key() if key is None else key

    with pytest.raises(error):
        await world.service.process_payment(world.people[caller], order.id, key)

    assert world.orders.rows[order.id] == order
    assert world.balance("alice") == PRICE
    assert world.balance(caller) == PRICE
    assert _lock_key(order) not in world.locks.acquired


async def test_a_stranger_is_not_found_even_while_the_order_is_locked(world: World) -> None:
    order = await world.order()
    holder = await world.locks.try_acquire(_lock_key(order), SETTINGS.lock_ttl_seconds)
    assert holder is not None

    with pytest.raises(NotFoundError):
        await world.service.process_payment(world.carol, order.id, world.key())
    with pytest.raises(NotFoundError):
        await world.service.refund(world.carol, order.id, world.key())


@pytest.mark.parametrize("key", KEYS.values(), ids=list(KEYS))
async def test_pay_a_missing_order_is_not_found(world: World, key: str | None) -> None:
    key = world.key() if key is None else key
    with pytest.raises(NotFoundError):
        await world.service.process_payment(world.alice, uuid.uuid4(), key)


async def test_pay_while_another_holds_the_lock_is_in_progress(world: World) -> None:
    await world.fund("alice", PRICE)
    order = await world.order()
    other = await world.locks.try_acquire(_lock_key(order), SETTINGS.lock_ttl_seconds)
    assert other is not None
    key = world.key()

    with pytest.raises(PaymentInProgressError):
        await world.service.process_payment(world.alice, order.id, key)

    assert world.orders.rows[order.id] == order
    assert world.balance("alice") == PRICE
    assert world.locks.is_held_by(other.key, other.token)  # not released by the loser
    assert await other.release()
    paid = await world.service.process_payment(world.alice, order.id, key)
    assert paid.status is OrderStatus.PAID


async def test_pay_takes_over_a_lock_whose_holder_let_it_expire(world: World) -> None:
    await world.fund("alice", PRICE)
    order = await world.order()
    stalled = await world.locks.try_acquire(_lock_key(order), SETTINGS.lock_ttl_seconds)
    assert stalled is not None
    world.clock.advance(SETTINGS.lock_ttl_seconds + 1)

    paid = await world.service.process_payment(world.alice, order.id, world.key())

    assert paid.status is OrderStatus.PAID
    assert await stalled.release() is False  # the stalled holder frees nothing


async def _pay_succeeds(world: World, order: Order) -> None:
    await world.fund("alice", PRICE)
    await world.service.process_payment(world.alice, order.id, world.key())


async def _pay_lacks_funds(world: World, order: Order) -> None:
    with pytest.raises(InsufficientFundsError):
        await world.service.process_payment(world.alice, order.id, world.key())


async def _pay_twice(world: World, order: Order) -> None:
    await _pay_succeeds(world, order)
    with pytest.raises(FailedPreconditionError):
        await world.service.process_payment(world.alice, order.id, world.key())


async def _pay_expired_meanwhile(world: World, order: Order) -> None:
    async def expire() -> None:
        world.orders.rows[order.id] = order.expire(world.clock.now())

    world.settlements.meanwhile = expire
    with pytest.raises(FailedPreconditionError):
        await world.service.process_payment(world.alice, order.id, world.key())


Outcome = Callable[[World, Order], Awaitable[None]]

LOCK_OUTCOMES: dict[str, Outcome] = {
    "pay-succeeds": _pay_succeeds,
    "pay-lacks-funds": _pay_lacks_funds,
    "pay-already-paid": _pay_twice,
    "pay-order-expired-meanwhile": _pay_expired_meanwhile,
}


@pytest.mark.parametrize("outcome", LOCK_OUTCOMES.values(), ids=list(LOCK_OUTCOMES))
async def test_the_payment_lock_is_released_on_every_outcome(
    world: World, outcome: Outcome
) -> None:
    order = await world.order()

    await outcome(world, order)

    assert _lock_key(order) in world.locks.acquired
    assert await _lock_is_free(world, _lock_key(order))


@pytest.mark.parametrize(
    ("status", "operation"),
    [("pending", "refund"), ("paid", "pay"), ("expired", "pay"), ("expired", "refund")],
)
async def test_a_move_the_order_cannot_make_is_refused_without_the_lock(
    world: World, status: str, operation: str
) -> None:
    order = await world.order()
    world.orders.rows[order.id] = dataclasses.replace(order, status=OrderStatus(status))
    caller = world.alice if operation == "pay" else world.bob
    act = world.service.process_payment if operation == "pay" else world.service.refund

    with pytest.raises(FailedPreconditionError):
        await act(caller, order.id, world.key())

    assert world.locks.acquired == []
    assert world.settlements.settled == 0


async def test_concurrent_pays_with_different_keys_pay_exactly_once(world: World) -> None:
    await world.fund("alice", 10 * PRICE)
    order = await world.order()

    results = await asyncio.gather(
        *(world.service.process_payment(world.alice, order.id, world.key()) for _ in range(10)),
        return_exceptions=True,
    )

    paid = [r for r in results if isinstance(r, Order)]
    refused = [r for r in results if not isinstance(r, Order)]
    assert len(paid) == 1
    assert all(isinstance(r, PaymentInProgressError | FailedPreconditionError) for r in refused)
    assert (world.balance("alice"), world.balance("bob")) == (9 * PRICE, PRICE)
    assert len([e for e in world.ledger.journal if e.kind is TransferKind.PAYMENT]) == 2


async def test_concurrent_pays_with_one_key_pay_once_and_agree(world: World) -> None:
    await world.fund("alice", 10 * PRICE)
    order = await world.order()
    key = world.key()

    results = await asyncio.gather(
        *(world.service.process_payment(world.alice, order.id, key) for _ in range(10)),
        return_exceptions=True,
    )

    paid = [r for r in results if isinstance(r, Order)]
    assert paid
    assert all(p == paid[0] for p in paid)
    assert all(isinstance(r, Order | PaymentInProgressError) for r in results)
    assert (world.balance("alice"), world.balance("bob")) == (9 * PRICE, PRICE)
    assert await world.service.process_payment(world.alice, order.id, key) == paid[0]


async def test_without_a_working_lock_the_transaction_still_pays_once(world: World) -> None:
    # A TTL of zero: every lease has expired by the time it is used, as under
    # a paused process. The lock no longer keeps anyone out.
    service = PaymentService(
        users=world.users,
        orders=world.orders,
        ledger=world.ledger,
        idempotency=world.idempotency,
        settlements=InMemorySettlements(world.uow),
        uow=world.uow,
        locks=world.locks,
        clock=world.clock,
        settings=PaymentSettings(lock_ttl_seconds=0.0),
    )
    await world.fund("alice", 10 * PRICE)
    order = await world.order()

    results = await asyncio.gather(
        *(service.process_payment(world.alice, order.id, world.key()) for _ in range(10)),
        return_exceptions=True,
    )

    paid = [r for r in results if isinstance(r, Order)]
    refused = [r for r in results if not isinstance(r, Order)]
    assert len(paid) == 1
    assert len(refused) == 9
    assert all(isinstance(r, FailedPreconditionError) for r in refused)
    assert (world.balance("alice"), world.balance("bob")) == (9 * PRICE, PRICE)


# --- refund -----------------------------------------------------------------------


@pytest.mark.parametrize("caller", ["bob", "admin"], ids=["payee", "admin"])
async def test_refund_moves_the_money_back(world: World, caller: str) -> None:
    paid = await world.paid_order()
    world.clock.advance(60)

    refunded = await world.service.refund(world.people[caller], paid.id, world.key())

    assert refunded.status is OrderStatus.REFUNDED
    assert refunded.paid_at == paid.paid_at
    assert refunded.updated_at == world.clock.now()
    assert world.orders.rows[paid.id] == refunded
    assert (world.balance("alice"), world.balance("bob")) == (PRICE, 0)
    refunds = [e for e in world.ledger.journal if e.kind is TransferKind.REFUND]
    assert [(e.owner_id, e.amount) for e in refunds] == [
        (world.bob.user_id, -PRICE),
        (world.alice.user_id, PRICE),
    ]


async def test_refund_happens_once(world: World) -> None:
    paid = await world.paid_order()
    key = world.key()
    refunded = await world.service.refund(world.bob, paid.id, key)

    assert await world.service.refund(world.bob, paid.id, key) == refunded
    with pytest.raises(FailedPreconditionError):
        await world.service.refund(world.bob, paid.id, world.key())
    with pytest.raises(FailedPreconditionError):
        await world.service.refund(world.admin, paid.id, world.key())

    assert (world.balance("alice"), world.balance("bob")) == (PRICE, 0)
    assert len([e for e in world.ledger.journal if e.kind is TransferKind.REFUND]) == 2


async def test_refund_replay_with_a_different_request_is_a_mismatch(world: World) -> None:
    paid, other = await world.paid_order(), await world.paid_order()
    key = world.key()
    await world.service.refund(world.bob, paid.id, key)

    with pytest.raises(IdempotencyMismatchError):
        await world.service.refund(world.bob, other.id, key)

    assert world.orders.rows[other.id] == other


async def test_refund_of_a_pending_order_fails_precondition(world: World) -> None:
    order = await world.order()

    with pytest.raises(FailedPreconditionError):
        await world.service.refund(world.bob, order.id, world.key())

    assert world.orders.rows[order.id] == order


REFUND_CALLERS: dict[str, tuple[str, type[DomainError]]] = {
    "payer": ("alice", PermissionDeniedError),
    "stranger": ("carol", NotFoundError),
}


@pytest.mark.parametrize("key", KEYS.values(), ids=list(KEYS))
@pytest.mark.parametrize(("caller", "error"), REFUND_CALLERS.values(), ids=list(REFUND_CALLERS))
async def test_refund_by_payer_or_stranger_is_refused(
    world: World, caller: str, error: type[DomainError], key: str | None
) -> None:
    paid = await world.paid_order()
    locks_before = world.locks.acquired.count(_lock_key(paid))
    key = world.key() if key is None else key

    with pytest.raises(error):
        await world.service.refund(world.people[caller], paid.id, key)

    assert world.orders.rows[paid.id] == paid
    assert (world.balance("alice"), world.balance("bob")) == (0, PRICE)
    assert world.locks.acquired.count(_lock_key(paid)) == locks_before


async def test_refund_when_the_payee_spent_the_money_lacks_funds(world: World) -> None:
    paid = await world.paid_order()
    onward = await world.service.create_order(
        world.bob, NewOrder(payee_id=world.carol.user_id, amount=PRICE, currency=EUR)
    )
    await world.service.process_payment(world.bob, onward.id, world.key())

    with pytest.raises(InsufficientFundsError):
        await world.service.refund(world.bob, paid.id, world.key())

    assert world.orders.rows[paid.id] == paid
    assert (world.balance("alice"), world.balance("bob"), world.balance("carol")) == (0, 0, PRICE)


# --- credit -----------------------------------------------------------------------


async def test_credit_puts_money_in_the_wallet(world: World) -> None:
    credit = await world.service.credit(world.admin, world.bob.user_id, 700, EUR, world.key())
    second = await world.service.credit(world.admin, world.bob.user_id, 300, EUR, world.key())

    assert (credit.user_id, credit.money, credit.balance) == (
        world.bob.user_id,
        Money(700, EUR),
        700,
    )
    assert second.balance == 1_000
    assert await world.service.balances(world.bob) == [Balance(EUR, 1_000)]
    assert world.ledger.balance(None, EUR) == -1_000  # the issuance account
    entry_ids = {e.id for e in world.ledger.journal if e.owner_id == world.bob.user_id}
    assert entry_ids == {credit.entry_id, second.entry_id}


async def test_credit_by_a_non_admin_is_denied(world: World) -> None:
    with pytest.raises(PermissionDeniedError):
        await world.service.credit(world.alice, world.alice.user_id, 700, EUR, world.key())

    assert world.balance("alice") == 0


async def test_credit_to_an_unknown_user_is_not_found(world: World) -> None:
    with pytest.raises(NotFoundError):
        await world.service.credit(world.admin, uuid.uuid4(), 700, EUR, world.key())

    assert world.ledger.journal == []


@pytest.mark.parametrize(
    ("amount", "currency", "fields"),
    [(0, EUR, ["amount"]), (700, "eur", ["currency"]), (-1, "", ["amount", "currency"])],
    ids=["amount-zero", "currency-lower-case", "both"],
)
async def test_credit_invalid_money_is_rejected(
    world: World, amount: int, currency: str, fields: list[str]
) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        await world.service.credit(world.admin, world.bob.user_id, amount, currency, world.key())

    assert [d.field for d in caught.value.details] == fields
    assert world.ledger.journal == []


async def test_credit_replay_returns_the_same_credit_once(world: World) -> None:
    key = world.key()
    first = await world.service.credit(world.admin, world.bob.user_id, 700, EUR, key)

    again = await world.service.credit(world.admin, world.bob.user_id, 700, EUR, key)

    assert again == first
    assert world.balance("bob") == 700
    assert len(world.ledger.journal) == 2
    assert await _lock_is_free(world, f"credit-lock-{world.admin.user_id}-{key}")


async def test_credit_replay_with_a_different_request_is_a_mismatch(world: World) -> None:
    key = world.key()
    await world.service.credit(world.admin, world.bob.user_id, 700, EUR, key)

    with pytest.raises(IdempotencyMismatchError):
        await world.service.credit(world.admin, world.bob.user_id, 900, EUR, key)

    assert world.balance("bob") == 700


async def test_credit_key_is_new_again_after_its_retention(world: World) -> None:
    key = world.key()
    await world.service.credit(world.admin, world.bob.user_id, 700, EUR, key)
    world.clock.advance(SETTINGS.idempotency_retention.total_seconds())

    again = await world.service.credit(world.admin, world.bob.user_id, 700, EUR, key)

    assert again.balance == 1_400
    assert world.balance("bob") == 1_400


# --- balances and entries -------------------------------------------------------


async def test_balances_list_only_the_callers_wallets_by_currency(world: World) -> None:
    await world.fund("alice", 300, "USD")
    await world.fund("alice", 100, EUR)
    await world.fund("bob", 999, "GBP")

    assert await world.service.balances(world.alice) == [Balance(EUR, 100), Balance("USD", 300)]
    assert await world.service.balances(world.carol) == []


@pytest.mark.parametrize("limit", [0, -1, 101], ids=["zero", "negative", "over-max"])
async def test_entries_limit_out_of_range_is_invalid(world: World, limit: int) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        await world.service.entries(world.alice, limit=limit)

    assert [d.field for d in caught.value.details] == ["limit"]


@pytest.mark.parametrize(
    "cursor",
    ["", "not-a-cursor", "djE6MQ", "ZmFrZS12MTow"],
    ids=["empty", "garbage", "another-stores-cursor", "sequence-zero"],
)
async def test_entries_with_a_cursor_it_did_not_make_is_invalid(world: World, cursor: str) -> None:
    await world.fund("alice", 100)

    with pytest.raises(InvalidArgumentError) as caught:
        await world.service.entries(world.alice, limit=10, cursor=cursor)

    assert [d.field for d in caught.value.details] == ["cursor"]


@pytest.mark.parametrize(
    "limit", [1, 3, 5, 7, 100], ids=["one", "three", "exactly-all", "more-than-all", "max"]
)
async def test_entries_pages_return_each_entry_once_newest_first(world: World, limit: int) -> None:
    for amount in (100, 200, 300):
        await world.fund("alice", amount)
        await world.fund("bob", amount)  # entries of someone else in between
    for _ in range(2):
        order = await world.order(amount=50)
        await world.service.process_payment(world.alice, order.id, world.key())
    expected = [e for e in reversed(world.ledger.journal) if e.owner_id == world.alice.user_id]
    assert len(expected) == 5

    seen: list[LedgerEntry] = []
    pages = 0
    cursor: str | None = None
    while True:
        page = await world.service.entries(world.alice, limit=limit, cursor=cursor)
        pages += 1
        assert len(page.entries) <= limit
        seen.extend(page.entries)
        if page.next_cursor is None:
            break
        cursor = page.next_cursor

    assert seen == expected
    assert len({e.id for e in seen}) == len(seen)
    assert pages == -(-len(expected) // limit)
    assert [e.balance_after for e in seen] == [500, 550, 600, 300, 100]


async def test_entries_of_an_empty_wallet_is_one_empty_page(world: World) -> None:
    page = await world.service.entries(world.carol)

    assert page.entries == ()
    assert page.next_cursor is None


# --- purge_idempotency_keys -----------------------------------------------------


def _retention(world: World) -> Retention:
    return Retention(
        idempotency=world.idempotency,
        outbox=InMemoryOutboxStore(),
        clock=world.clock,
        outbox_retention=timedelta(days=7),
        events_are_published=True,
    )


async def test_purge_removes_only_expired_keys(world: World) -> None:
    old = world.key()
    await world.service.credit(world.admin, world.bob.user_id, 100, EUR, old)
    world.clock.advance(3600)
    young = world.key()
    await world.service.credit(world.admin, world.bob.user_id, 100, EUR, young)
    world.clock.advance(SETTINGS.idempotency_retention.total_seconds() - 3600)

    purged = await _retention(world).purge_idempotency_keys()

    assert purged == 1
    assert set(world.idempotency.rows) == {(world.admin.user_id, young)}
    assert await _retention(world).purge_idempotency_keys() == 0


@pytest.mark.parametrize(
    ("max_batches", "purged", "left"),
    [(1, 2, 3), (2, 4, 1), (100, 5, 0)],
    ids=["one-batch", "two-batches", "until-a-short-batch"],
)
async def test_purge_goes_batch_by_batch(
    world: World, max_batches: int, purged: int, left: int
) -> None:
    for _ in range(5):
        await world.fund("bob", 100)
    world.clock.advance(SETTINGS.idempotency_retention.total_seconds() + 1)

    assert (
        await _retention(world).purge_idempotency_keys(batch=2, max_batches=max_batches) == purged
    )
    assert len(world.idempotency.rows) == left
    assert world.balance("bob") == 500  # purging keys never touches money


# --- the fakes behave like the adapters ---------------------------------------


async def test_fake_ledger_refuses_a_second_transfer_of_a_kind_for_an_order(
    world: World,
) -> None:
    paid = await world.paid_order()
    await world.fund("alice", PRICE)  # money is not what stops it
    again = Transfer(
        uuid.uuid4(),
        TransferKind.PAYMENT,
        world.alice.user_id,
        world.bob.user_id,
        paid.money,
        paid.id,
        world.clock.now(),
    )

    async with world.uow() as uow:
        with pytest.raises(FailedPreconditionError):
            await uow.ledger.apply(again)

    assert (world.balance("alice"), world.balance("bob")) == (PRICE, PRICE)


async def test_fake_unit_of_work_discards_what_it_did_not_commit(world: World) -> None:
    order = await world.order()

    async with world.uow() as uow:
        await uow.orders.update(order.pay(world.clock.now()))
        await uow.ledger.apply(
            Transfer(
                uuid.uuid4(),
                TransferKind.CREDIT,
                None,
                world.alice.user_id,
                Money(5, EUR),
                None,
                world.clock.now(),
            )
        )

    assert world.orders.rows[order.id] == order
    assert world.ledger.journal == []
    assert world.balance("alice") == 0


async def test_fake_lease_releases_only_its_own_lock(world: World) -> None:
    first = await world.locks.try_acquire("k", 1.0)
    assert first is not None
    assert await world.locks.try_acquire("k", 1.0) is None
    world.clock.advance(2)
    second = await world.locks.try_acquire("k", 1.0)
    assert second is not None

    assert await first.release() is False
    assert await first.extend(10) is False
    assert world.locks.is_held_by("k", second.token)
    assert await second.release() is True
    assert not world.locks.is_held("k")


class _GatedLease:
    """A lease whose release waits for a gate: a slow lock service."""

    def __init__(self, inner: InMemoryLease, gate: asyncio.Event, started: asyncio.Event) -> None:
        self._inner, self._gate, self._started = inner, gate, started
        self.key = inner.key

    async def extend(self, ttl_seconds: float) -> bool:
        return await self._inner.extend(ttl_seconds)

    async def release(self) -> bool:
        self._started.set()
        await self._gate.wait()
        return await self._inner.release()


class _GatedLocks:
    def __init__(self, inner: InMemoryLocks) -> None:
        self._inner = inner
        self.gate, self.release_started = asyncio.Event(), asyncio.Event()

    async def try_acquire(self, key: str, ttl_seconds: float) -> _GatedLease | None:
        lease = await self._inner.try_acquire(key, ttl_seconds)
        return None if lease is None else _GatedLease(lease, self.gate, self.release_started)


async def test_settle_waits_for_a_release_that_outlived_its_cancelled_request(
    world: World,
) -> None:
    """A cancelled pay leaves its (shielded) release running; a stopping
    process settles it before it closes the lock service."""
    await world.fund("alice", PRICE)
    order = await world.order()
    locks = _GatedLocks(world.locks)
    service = PaymentService(
        users=world.users,
        orders=world.uow.orders,
        ledger=world.uow.ledger,
        idempotency=world.uow.idempotency,
        settlements=InMemorySettlements(world.uow),
        uow=world.uow,
        locks=locks,
        clock=world.clock,
        settings=SETTINGS,
    )
    pay = asyncio.create_task(service.process_payment(world.alice, order.id, world.key()))
    await locks.release_started.wait()
    pay.cancel()
    with pytest.raises(asyncio.CancelledError):
        await pay
    settling = asyncio.create_task(service.settle())
    await asyncio.sleep(0.05)
    assert not settling.done()
    assert _lock_key(order) in world.locks.held

    locks.gate.set()
    await settling
    assert _lock_key(order) not in world.locks.held


# --- events -----------------------------------------------------------------------


async def test_each_change_records_its_event_numbered_within_its_aggregate(world: World) -> None:
    await world.fund("alice", PRICE)
    order = await world.order()
    paid = await world.service.process_payment(world.alice, order.id, world.key())
    await world.service.refund(world.bob, order.id, world.key())

    recorded = [(e.TYPE, e.AGGREGATE, e.aggregate_id, v) for e, v in world.uow.outbox.events]
    alice = world.alice.user_id
    assert recorded == [
        ("wallet.credited", "wallet", alice, 1),
        ("order.created", "order", order.id, 1),
        ("order.paid", "order", order.id, 2),
        ("order.refunded", "order", order.id, 3),
    ]
    [credited] = world.uow.outbox.of_type(WalletCredited)
    assert credited.data() == {
        "user_id": str(alice),
        "entry_id": credited.data()["entry_id"],
        "amount": PRICE,
        "currency": EUR,
        "balance": PRICE,
    }
    [paid_event] = world.uow.outbox.of_type(OrderPaid)
    [transfer_id] = {e.transfer_id for e in world.ledger.journal if e.kind is TransferKind.PAYMENT}
    assert paid_event.data() == {
        "order_id": str(order.id),
        "payer_id": str(alice),
        "payee_id": str(world.bob.user_id),
        "amount": PRICE,
        "currency": EUR,
        "transfer_id": str(transfer_id),
    }
    assert paid_event.occurred_at == paid.paid_at


async def test_a_refused_or_replayed_payment_records_no_event(world: World) -> None:
    order = await world.order()
    with pytest.raises(InsufficientFundsError):
        await world.service.process_payment(world.alice, order.id, world.key())
    await world.fund("alice", PRICE)
    key = world.key()
    await world.service.process_payment(world.alice, order.id, key)
    await world.service.process_payment(world.alice, order.id, key)  # a replay
    with pytest.raises(FailedPreconditionError):
        await world.service.process_payment(world.alice, order.id, world.key())

    types = [e.TYPE for e, _ in world.uow.outbox.events]
    assert types == ["order.created", "wallet.credited", "order.paid"]


# --- expiry -----------------------------------------------------------------------


def _expiry(world: World, ttl: timedelta = timedelta(hours=24)) -> OrderExpiry:
    return OrderExpiry(uow=world.uow, clock=world.clock, ttl=ttl)


async def test_expiry_expires_pending_orders_past_their_ttl_once_with_their_event(
    world: World,
) -> None:
    await world.fund("alice", PRICE)
    old = await world.order()
    paid_old = await world.order()
    await world.service.process_payment(world.alice, paid_old.id, world.key())
    world.clock.advance(23 * 3600)
    young = await world.order()
    world.clock.advance(3600 + 1)

    assert await _expiry(world).expire_due() == 1
    assert await _expiry(world).expire_due() == 0

    assert world.orders.rows[old.id].status is OrderStatus.EXPIRED
    assert world.orders.rows[old.id].updated_at == world.clock.now()
    assert world.orders.rows[paid_old.id].status is OrderStatus.PAID
    assert world.orders.rows[young.id].status is OrderStatus.PENDING
    [expired] = world.uow.outbox.of_type(OrderExpired)
    assert expired.aggregate_id == old.id
    assert [v for e, v in world.uow.outbox.events if e is expired] == [2]
    with pytest.raises(FailedPreconditionError):
        await world.service.process_payment(world.alice, old.id, world.key())


async def test_expiry_works_in_batches(world: World) -> None:
    orders = [await world.order() for _ in range(7)]
    world.clock.advance(25 * 3600)

    assert await _expiry(world).expire_due(batch=3) == 7

    assert {world.orders.rows[o.id].status for o in orders} == {OrderStatus.EXPIRED}
    assert [u.committed for u in world.uow.opened[-3:]] == [True, True, True]
