"""Wallets, orders and exactly-once payments.

The rules are here and in the domain: who may act, the order's state
machine, what moves where, the event and the answer kept under the
idempotency key. A pay, a refund or a credit decided by them is committed
whole in one step by the Settlements port (one database round trip), which
re-reads the order under a row lock and commits only if it is still what
the decision was made from; otherwise it says what it found, and the rules
decide again. The database's constraints are the last word. The
distributed lock in front of it only keeps two processors from doing the
same work at once, and answers a concurrent caller at once."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from ledgerline.domain.errors import (
    IdempotencyMismatchError,
    InvalidArgumentError,
    NotFoundError,
    PaymentInProgressError,
    PermissionDeniedError,
)
from ledgerline.domain.events import OrderCreated, OrderPaid, OrderRefunded, WalletCredited
from ledgerline.domain.idempotency import (
    ORDER_PAY,
    ORDER_REFUND,
    WALLET_CREDIT,
    IdempotencyRecord,
    IdempotentRequest,
    parse_idempotency_key,
)
from ledgerline.domain.ledger import Balance, Credit, EntryPage, Transfer, TransferKind
from ledgerline.domain.money import Money
from ledgerline.domain.order import Order, OrderId, OrderStatus, parse_description
from ledgerline.domain.ports import (
    Clock,
    IdempotencyStore,
    LedgerRepository,
    LockManager,
    OrderRepository,
    Settlements,
    UnitOfWorkFactory,
    UserRepository,
)
from ledgerline.domain.settlement import (
    CreditSettlement,
    KeyTaken,
    OrderSettlement,
    Replayed,
    Settled,
    Stale,
)
from ledgerline.domain.user import Principal, UserId
from ledgerline.domain.validation import collect_violations

ENTRIES_MAX_LIMIT = 100
ENTRIES_DEFAULT_LIMIT = 50


@dataclass(frozen=True, slots=True)
class PaymentSettings:
    lock_ttl_seconds: float = 10.0
    idempotency_retention: timedelta = timedelta(hours=24)


@dataclass(frozen=True, slots=True)
class NewOrder:
    payee_id: UserId
    amount: int
    currency: str
    description: str | None = None


# A settlement that finds its order changed decides again from what it
# found; an order that changes under it this often is answered "retry".
_STALE_RETRIES = 3


def _lookup_key(raw: str) -> str:
    """The key to look up before it is validated (it is, after the caller's
    permission): an invalid one, which no record can hold, as ""."""
    try:
        return parse_idempotency_key(raw)
    except InvalidArgumentError:
        return ""


class PaymentService:
    def __init__(
        self,
        *,
        users: UserRepository,
        orders: OrderRepository,
        ledger: LedgerRepository,
        idempotency: IdempotencyStore,
        settlements: Settlements,
        uow: UnitOfWorkFactory,
        locks: LockManager,
        clock: Clock,
        settings: PaymentSettings | None = None,
    ) -> None:
        self._users = users
        self._orders = orders
        self._ledger = ledger
        self._idempotency = idempotency
        self._settlements = settlements
        self._uow = uow
        self._locks = locks
        self._clock = clock
        self._settings = settings or PaymentSettings()
        self._releasing: set[asyncio.Future[bool]] = set()

    # Orders -----------------------------------------------------------------

    async def create_order(self, caller: Principal, request: NewOrder) -> Order:
        money, description = collect_violations(
            lambda: Money.parse(request.amount, request.currency),
            lambda: parse_description(request.description),
        )
        if request.payee_id == caller.user_id:
            raise InvalidArgumentError.for_field("payee_id", "must differ from the payer")
        if await self._users.get_by_id(request.payee_id) is None:
            raise NotFoundError("payee not found")
        now = self._clock.now()
        order = Order(
            id=uuid.uuid4(),
            payer_id=caller.user_id,
            payee_id=request.payee_id,
            money=money,
            description=description,
            status=OrderStatus.PENDING,
            created_at=now,
            updated_at=now,
        )
        async with self._uow() as uow:
            await uow.orders.add(order)
            await uow.outbox.add(OrderCreated.of(order))
            await uow.commit()
        return order

    async def get_order(self, caller: Principal, order_id: OrderId) -> Order:
        order = await self._orders.get(order_id)
        if order is None or not (caller.is_admin or order.is_party(caller.user_id)):
            raise NotFoundError("order not found")
        return order

    async def process_payment(self, caller: Principal, order_id: OrderId, key: str) -> Order:
        """Moves the order's amount from payer to payee exactly once per
        idempotency ``key``."""
        return await self._order_transition(caller, order_id, key, TransferKind.PAYMENT)

    async def refund(self, caller: Principal, order_id: OrderId, key: str) -> Order:
        """Moves a paid order's amount back from payee to payer exactly once
        per idempotency ``key``."""
        return await self._order_transition(caller, order_id, key, TransferKind.REFUND)

    async def _order_transition(
        self,
        caller: Principal,
        order_id: OrderId,
        key: str,
        kind: TransferKind,
    ) -> Order:
        operation = ORDER_PAY if kind is TransferKind.PAYMENT else ORDER_REFUND
        request = IdempotentRequest.of(key, operation, caller.user_id, {"order_id": str(order_id)})
        # One read before the lock: the order, and what this caller stored
        # under the key, in one snapshot. Who may act on an order never
        # changes, so it is checked here: a caller who may not act gets
        # 403/404 whatever key they send, and never takes the order's lock.
        order, record = await self._settlements.order_and_record(
            order_id, caller.user_id, _lookup_key(key), self._clock.now()
        )
        order = self.authorize_transition(caller, order, kind)
        parse_idempotency_key(key)
        if record is not None:
            return Order.from_snapshot(self._replayed(request, record))
        # A move the order cannot make now fails here, without the lock: the
        # answer is true of the order as it was during the request.
        settlement = self.decide_transition(caller, order, kind, request)
        async with self._hold(f"payment-lock-{order_id}"):
            for _ in range(_STALE_RETRIES):
                outcome = await self._settlements.settle_order(settlement)
                match outcome:
                    case Settled():
                        return settlement.after
                    case Replayed(record):
                        return Order.from_snapshot(self._replayed(request, record))
                    case Stale(current):
                        # Changed since it was read (paid under another key,
                        # expired...): the rules decide again from what it is.
                        order = self.authorize_transition(caller, current, kind)
                        settlement = self.decide_transition(caller, order, kind, request)
                    case KeyTaken():
                        break
            else:
                raise PaymentInProgressError("the order keeps changing; retry the request")
        return Order.from_snapshot(await self._replay_taken(caller, request))

    def decide_transition(
        self, caller: Principal, order: Order, kind: TransferKind, request: IdempotentRequest
    ) -> OrderSettlement:
        """What paying or refunding ``order`` as it is does, by the domain's
        rules (raises what they raise), for a settlement to commit."""
        now = self._clock.now()
        if kind is TransferKind.PAYMENT:
            moved = order.pay(now)
            source, destination = order.payer_id, order.payee_id
        else:
            moved = order.refund(now)
            source, destination = order.payee_id, order.payer_id
        transfer = Transfer(uuid.uuid4(), kind, source, destination, order.money, order.id, now)
        event = OrderPaid if kind is TransferKind.PAYMENT else OrderRefunded
        return OrderSettlement(
            before=order,
            after=moved,
            transfer=transfer,
            source_entry=uuid.uuid4(),
            destination_entry=uuid.uuid4(),
            event=event.of(moved, transfer.id),
            record=self._record(caller, request, moved.snapshot(), now),
        )

    @staticmethod
    def authorize_transition(caller: Principal, order: Order | None, kind: TransferKind) -> Order:
        """Who may pay (the payer) or refund (the payee, an admin) the order;
        anyone else may not know it exists."""
        if order is None or not (caller.is_admin or order.is_party(caller.user_id)):
            raise NotFoundError("order not found")
        if kind is TransferKind.PAYMENT and caller.user_id != order.payer_id:
            raise PermissionDeniedError("only the payer may pay an order")
        if kind is TransferKind.REFUND and not (
            caller.is_admin or caller.user_id == order.payee_id
        ):
            raise PermissionDeniedError("only the payee or an admin may refund an order")
        return order

    # Wallets ----------------------------------------------------------------

    async def credit(
        self,
        caller: Principal,
        user_id: UserId,
        amount: int,
        currency: str,
        key: str,
    ) -> Credit:
        """An operator's top-up: the only way money enters the system, once
        per idempotency ``key``."""
        self.authorize_credit(caller)
        money = Money.parse(amount, currency)
        params = {"user_id": str(user_id), "amount": amount, "currency": currency}
        request = IdempotentRequest.of(key, WALLET_CREDIT, caller.user_id, params)
        parse_idempotency_key(key)
        exists, record = await self._settlements.user_and_record(
            user_id, caller.user_id, key, self._clock.now()
        )
        if record is not None:
            return Credit.from_snapshot(self._replayed(request, record))
        if not exists:
            raise NotFoundError("user not found")
        async with self._hold(f"credit-lock-{caller.user_id}-{request.key}"):
            now = self._clock.now()
            transfer = Transfer(uuid.uuid4(), TransferKind.CREDIT, None, user_id, money, None, now)
            entry = uuid.uuid4()
            # The balance after the credit is the store's to write in.
            credit = Credit(entry, user_id, money, balance=0)
            outcome = await self._settlements.settle_credit(
                CreditSettlement(
                    transfer=transfer,
                    source_entry=uuid.uuid4(),
                    destination_entry=entry,
                    event=WalletCredited.of(credit, now),
                    record=self._record(caller, request, credit.snapshot(), now),
                )
            )
            match outcome:
                case Settled(balance):
                    return replace(credit, balance=balance)
                case Replayed(record):
                    return Credit.from_snapshot(self._replayed(request, record))
                case KeyTaken() | Stale():
                    pass
        return Credit.from_snapshot(await self._replay_taken(caller, request))

    @staticmethod
    def authorize_credit(caller: Principal) -> None:
        """Credits are for admins. A transport may ask before it reads the
        request, so a caller who may not credit gets 403 whatever they send."""
        if not caller.is_admin:
            raise PermissionDeniedError("only admins may credit wallets")

    async def balances(self, caller: Principal) -> list[Balance]:
        return await self._ledger.balances(caller.user_id)

    async def entries(
        self, caller: Principal, limit: int = ENTRIES_DEFAULT_LIMIT, cursor: str | None = None
    ) -> EntryPage:
        if not 1 <= limit <= ENTRIES_MAX_LIMIT:
            raise InvalidArgumentError.for_field("limit", f"must be from 1 to {ENTRIES_MAX_LIMIT}")
        return await self._ledger.entries(caller.user_id, limit, cursor)

    # Idempotency ------------------------------------------------------------

    @staticmethod
    def _replayed(request: IdempotentRequest, record: IdempotencyRecord) -> dict[str, Any]:
        """What ``record`` answered, if this same request stored it."""
        if not request.matches(record):
            raise IdempotencyMismatchError("this Idempotency-Key was used with a different request")
        return record.result

    async def _replay_taken(self, caller: Principal, request: IdempotentRequest) -> dict[str, Any]:
        """Another request stored an answer under the key while this one
        ran, and this one was rolled back: answer with what it stored."""
        record = await self._idempotency.get(caller.user_id, request.key, self._clock.now())
        if record is None:  # the other request's record expired meanwhile
            raise PaymentInProgressError("retry the request")
        return self._replayed(request, record)

    def _record(
        self,
        caller: Principal,
        request: IdempotentRequest,
        result: dict[str, Any],
        now: datetime,
    ) -> IdempotencyRecord:
        return IdempotencyRecord(
            caller_id=caller.user_id,
            key=request.key,
            fingerprint=request.fingerprint,
            operation=request.operation,
            result=result,
            created_at=now,
            expires_at=now + self._settings.idempotency_retention,
        )

    async def settle(self) -> None:
        """Waits for lock releases still under way, so that a stopping
        process does not close the lock service beneath them. (Each release
        is bounded by its adapter's own timeouts; callers may bound this.)"""
        if self._releasing:
            await asyncio.wait(set(self._releasing))

    @asynccontextmanager
    async def _hold(self, key: str) -> AsyncIterator[None]:
        lease = await self._locks.try_acquire(key, self._settings.lock_ttl_seconds)
        if lease is None:
            raise PaymentInProgressError("a request for this resource is in progress")
        try:
            yield
        finally:
            # Released on every path, cancellation included: shielded so a
            # cancellation cannot leave the lock to its TTL, and referenced
            # until done so the release task cannot be collected mid-way.
            release = asyncio.ensure_future(lease.release())
            self._releasing.add(release)
            release.add_done_callback(self._releasing.discard)
            await asyncio.shield(release)
