"""Wallets, orders and exactly-once payments.

The guarantee is the database transaction: the order row is re-read under a
row lock, its state checked, and the ledger entries, the new status and the
idempotency record committed together, with unique constraints as the last
word. The distributed lock in front of it only keeps two processors from
doing the same work at once, and answers a concurrent caller at once."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
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
    UnitOfWork,
    UnitOfWorkFactory,
    UserRepository,
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


class _KeyTakenError(Exception):
    """Another request stored this idempotency key first; roll back and
    answer with what it stored."""


class PaymentService:
    def __init__(
        self,
        *,
        users: UserRepository,
        orders: OrderRepository,
        ledger: LedgerRepository,
        idempotency: IdempotencyStore,
        uow: UnitOfWorkFactory,
        locks: LockManager,
        clock: Clock,
        settings: PaymentSettings | None = None,
    ) -> None:
        self._users = users
        self._orders = orders
        self._ledger = ledger
        self._idempotency = idempotency
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
        # Who may act on an order never changes, so it is checked first, from
        # a plain read: a caller who may not act gets 403/404 whatever key
        # they send, and cannot take the order's lock from its payer.
        self._authorize(caller, await self._orders.get(order_id), kind)
        replayed = await self._replay(caller, request)
        if replayed is not None:
            return Order.from_snapshot(replayed)
        try:
            async with self._hold(f"payment-lock-{order_id}"), self._uow() as uow:
                order = await uow.orders.get_for_update(order_id)
                # The lock may have expired under a paused holder. With the
                # row locked, whatever that holder did has committed: the
                # record, not the lock, says whether this request already ran.
                if await uow.idempotency.get(caller.user_id, request.key, self._clock.now()):
                    raise _KeyTakenError
                order = self._authorize(caller, order, kind)
                now = self._clock.now()
                if kind is TransferKind.PAYMENT:
                    moved = order.pay(now)
                    source, destination = order.payer_id, order.payee_id
                else:
                    moved = order.refund(now)
                    source, destination = order.payee_id, order.payer_id
                transfer = Transfer(
                    uuid.uuid4(), kind, source, destination, order.money, order.id, now
                )
                await uow.ledger.apply(transfer)
                await uow.orders.update(moved)
                event = OrderPaid if kind is TransferKind.PAYMENT else OrderRefunded
                await uow.outbox.add(event.of(moved, transfer.id))
                await self._remember(uow, caller, request, moved.snapshot())
                await uow.commit()
                return moved
        except _KeyTakenError:
            replayed = await self._replay(caller, request)
            if replayed is None:  # the other request's record expired meanwhile
                raise PaymentInProgressError("retry the request") from None
            return Order.from_snapshot(replayed)

    @staticmethod
    def _authorize(caller: Principal, order: Order | None, kind: TransferKind) -> Order:
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
        replayed = await self._replay(caller, request)
        if replayed is not None:
            return Credit.from_snapshot(replayed)
        if await self._users.get_by_id(user_id) is None:
            raise NotFoundError("user not found")
        try:
            lock = f"credit-lock-{caller.user_id}-{request.key}"
            async with self._hold(lock), self._uow() as uow:
                now = self._clock.now()
                transfer = Transfer(
                    uuid.uuid4(), TransferKind.CREDIT, None, user_id, money, None, now
                )
                _, entry = await uow.ledger.apply(transfer)
                credit = Credit(entry.id, user_id, money, entry.balance_after)
                await uow.outbox.add(WalletCredited.of(credit, now))
                await self._remember(uow, caller, request, credit.snapshot())
                await uow.commit()
                return credit
        except _KeyTakenError:
            replayed = await self._replay(caller, request)
            if replayed is None:
                raise PaymentInProgressError("retry the request") from None
            return Credit.from_snapshot(replayed)

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

    async def _replay(self, caller: Principal, request: IdempotentRequest) -> dict[str, Any] | None:
        parse_idempotency_key(request.key)
        record = await self._idempotency.get(caller.user_id, request.key, self._clock.now())
        if record is None:
            return None
        if not request.matches(record):
            raise IdempotencyMismatchError("this Idempotency-Key was used with a different request")
        return record.result

    async def _remember(
        self,
        uow: UnitOfWork,
        caller: Principal,
        request: IdempotentRequest,
        result: dict[str, Any],
    ) -> None:
        now = self._clock.now()
        record = IdempotencyRecord(
            caller_id=caller.user_id,
            key=request.key,
            fingerprint=request.fingerprint,
            operation=request.operation,
            result=result,
            created_at=now,
            expires_at=now + self._settings.idempotency_retention,
        )
        if not await uow.idempotency.save(record):
            raise _KeyTakenError

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
