"""The single-statement settlement and the domain's rules agree on every
outcome, on real PostgreSQL.

Table-driven: every order state, every caller (payer, payee, an admin, a
stranger), pay and refund, with and without the money on the paying side.
What the domain's rules say (who may act, the state machine, funds) is
worked out in memory; the service, which settles in one call of
settle_order() (migration 0005), must answer the same, and the database
must then hold exactly that change or none at all. Then the settlement
itself: decided from one state and run against each other one, it settles
only when they are the same, and otherwise reports what it found and
changes nothing."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, replace
from datetime import UTC, datetime

import asyncpg
import pytest

from ledgerline.domain.errors import DomainError, InsufficientFundsError
from ledgerline.domain.idempotency import ORDER_PAY, IdempotentRequest
from ledgerline.domain.ledger import TransferKind
from ledgerline.domain.order import Order, OrderStatus
from ledgerline.domain.settlement import OrderSettlement, Replayed, Settled, Stale
from ledgerline.domain.user import Email, Principal, User
from ledgerline.main.core import Core
from ledgerline.repository.postgres.settlements import PostgresSettlements
from ledgerline.repository.postgres.users import PostgresUserRepository
from ledgerline.usecase.payments import NewOrder, PaymentService

PRICE = 2_500
CALLERS = ("payer", "payee", "admin", "stranger")
OPERATIONS = {"pay": TransferKind.PAYMENT, "refund": TransferKind.REFUND}


@dataclass(frozen=True)
class Cast:
    payer: Principal
    payee: Principal
    admin: Principal
    stranger: Principal

    def __getitem__(self, who: str) -> Principal:
        return getattr(self, who)  # type: ignore[no-any-return]


async def _cast(pool: asyncpg.Pool) -> Cast:
    users = PostgresUserRepository(pool)
    people = {}
    for name in CALLERS:
        now = datetime.now(UTC)
        user = User(
            uuid.uuid4(), Email(f"{name}@example.com"), name, "$argon2id$x", False, now, now
        )
        await users.add(user)
        people[name] = Principal(user.id, is_admin=name == "admin")
    return Cast(**people)


async def _order_in(pool: asyncpg.Pool, core: Core, cast: Cast, status: OrderStatus) -> Order:
    order = await core.payments.create_order(cast.payer, NewOrder(cast.payee.user_id, PRICE, "EUR"))
    paid_at = order.created_at if status in (OrderStatus.PAID, OrderStatus.REFUNDED) else None
    await pool.execute(
        "UPDATE orders SET status = $2, paid_at = $3 WHERE id = $1", order.id, str(status), paid_at
    )
    return replace(order, status=status, paid_at=paid_at)


def _domain_says(
    order: Order, caller: Principal, kind: TransferKind, source_funded: bool
) -> type[DomainError] | Order:
    """The rules, in memory: the moved order, or the error they raise."""
    now = datetime.now(UTC)
    try:
        PaymentService.authorize_transition(caller, order, kind)
        moved = order.pay(now) if kind is TransferKind.PAYMENT else order.refund(now)
    except DomainError as exc:
        return type(exc)
    if not source_funded:
        return InsufficientFundsError
    return moved


@dataclass(frozen=True)
class Books:
    """Everything a settlement of an order would change."""

    status: str
    wallets: dict[uuid.UUID, int]
    transfers: int  # of the order
    events: int  # of the order
    records: int  # idempotency records, all callers


async def _books(pool: asyncpg.Pool, order: Order) -> Books:
    wallets = await pool.fetch("SELECT owner_id, balance FROM accounts WHERE kind = 'wallet'")
    return Books(
        status=await pool.fetchval("SELECT status FROM orders WHERE id = $1", order.id),
        wallets={row["owner_id"]: row["balance"] for row in wallets},
        transfers=await pool.fetchval(
            "SELECT count(*) FROM transfers WHERE order_id = $1", order.id
        ),
        events=await pool.fetchval("SELECT count(*) FROM outbox WHERE aggregate_id = $1", order.id),
        records=await pool.fetchval("SELECT count(*) FROM idempotency_keys"),
    )


@pytest.mark.parametrize("funded", [True, False], ids=["funded", "unfunded"])
@pytest.mark.parametrize("operation", list(OPERATIONS))
@pytest.mark.parametrize("caller", CALLERS)
@pytest.mark.parametrize("status", list(OrderStatus), ids=[str(s) for s in OrderStatus])
async def test_the_service_answers_what_the_rules_say(
    core: Core, pool: asyncpg.Pool, status: OrderStatus, caller: str, operation: str, funded: bool
) -> None:
    cast = await _cast(pool)
    kind = OPERATIONS[operation]
    order = await _order_in(pool, core, cast, status)
    source = cast.payer if kind is TransferKind.PAYMENT else cast.payee
    destination = cast.payee if kind is TransferKind.PAYMENT else cast.payer
    admin = Principal(uuid.uuid4(), is_admin=True)
    if funded:
        await core.payments.credit(admin, source.user_id, PRICE, "EUR", "fund")
    expected = _domain_says(order, cast[caller], kind, funded)
    before = await _books(pool, order)
    act = core.payments.process_payment if kind is TransferKind.PAYMENT else core.payments.refund

    if not isinstance(expected, Order):
        with pytest.raises(expected):
            await act(cast[caller], order.id, "the-key")
        assert await _books(pool, order) == before, "a refused move changed something"
        return

    moved = await act(cast[caller], order.id, "the-key")
    assert (moved.status, moved.paid_at is not None) == (expected.status, True)
    after = await _books(pool, order)
    assert after.status == str(expected.status)
    assert after.wallets[source.user_id] == 0
    assert after.wallets[destination.user_id] == PRICE
    assert (after.transfers, after.events, after.records) == (1, 2, before.records + 1)
    # ... and the same call again answers the same, changing nothing.
    assert await act(cast[caller], order.id, "the-key") == moved
    assert await _books(pool, order) == after


def _pay_decided_from(core: Core, order: Order, payer: Principal) -> OrderSettlement:
    """The settlement the service makes of paying ``order`` as it is."""
    request = IdempotentRequest.of("k", ORDER_PAY, payer.user_id, {"order_id": str(order.id)})
    return core.payments.decide_transition(payer, order, TransferKind.PAYMENT, request)


@pytest.mark.parametrize("actual", list(OrderStatus), ids=[str(s) for s in OrderStatus])
async def test_a_settlement_commits_only_what_it_was_decided_from(
    core: Core, pool: asyncpg.Pool, actual: OrderStatus
) -> None:
    """A pay decided from a pending order, settled against the order in
    each state: it settles only a pending one."""
    cast = await _cast(pool)
    await core.payments.credit(cast.admin, cast.payer.user_id, PRICE, "EUR", "fund")
    pending = await _order_in(pool, core, cast, OrderStatus.PENDING)
    settlement = _pay_decided_from(core, pending, cast.payer)
    now_is = await _order_in(pool, core, cast, actual)
    settlement = replace(settlement, before=replace(pending, id=now_is.id))
    settlement = replace(settlement, after=replace(settlement.after, id=now_is.id))
    settlement = replace(settlement, transfer=replace(settlement.transfer, order_id=now_is.id))
    before = await _books(pool, now_is)

    outcome = await PostgresSettlements(pool).settle_order(settlement)

    if actual is OrderStatus.PENDING:
        assert outcome == Settled(PRICE)
        assert await pool.fetchval("SELECT status FROM orders WHERE id = $1", now_is.id) == "paid"
    else:
        assert isinstance(outcome, Stale)
        assert outcome.current is not None
        assert (outcome.current.id, outcome.current.status) == (now_is.id, actual)
        assert await _books(pool, now_is) == before


async def test_a_settlement_of_a_key_that_holds_an_answer_replays_it(
    core: Core, pool: asyncpg.Pool
) -> None:
    cast = await _cast(pool)
    await core.payments.credit(cast.admin, cast.payer.user_id, 2 * PRICE, "EUR", "fund")
    first = await _order_in(pool, core, cast, OrderStatus.PENDING)
    settlement = _pay_decided_from(core, first, cast.payer)
    settlements = PostgresSettlements(pool)
    assert await settlements.settle_order(settlement) == Settled(PRICE)
    before = await _books(pool, first)

    again = await settlements.settle_order(settlement)

    assert isinstance(again, Replayed)
    assert again.record.result == settlement.after.snapshot()
    assert await _books(pool, first) == before


async def test_a_settlement_of_a_missing_order_is_stale_with_nothing(
    core: Core, pool: asyncpg.Pool
) -> None:
    cast = await _cast(pool)
    order = await _order_in(pool, core, cast, OrderStatus.PENDING)
    settlement = _pay_decided_from(core, replace(order, id=uuid.uuid4()), cast.payer)

    assert await PostgresSettlements(pool).settle_order(settlement) == Stale(None)
