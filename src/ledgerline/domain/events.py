"""Domain events: what happened, recorded by the use cases in the same
transaction as the change (``uow.outbox.add(event)``), so that an event
exists if and only if its change committed.

Each event belongs to an aggregate (a user, an order, a wallet); the outbox
numbers an aggregate's events 1, 2, 3, ... in commit order, so consumers can
check that they see them in order."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field, fields
from datetime import datetime
from enum import StrEnum
from typing import Any, ClassVar, Self

from ledgerline.domain.ids import uuid7
from ledgerline.domain.ledger import Credit
from ledgerline.domain.order import Order
from ledgerline.domain.user import User, UserId


class Aggregate(StrEnum):
    USER = "user"
    ORDER = "order"
    WALLET = "wallet"


@dataclass(frozen=True, slots=True, kw_only=True)
class DomainEvent:
    TYPE: ClassVar[str]
    AGGREGATE: ClassVar[Aggregate]

    occurred_at: datetime
    # Time-ordered, so that the outbox's key grows at its end (domain/ids.py).
    id: uuid.UUID = field(default_factory=uuid7)

    @property
    def aggregate_id(self) -> uuid.UUID:
        raise NotImplementedError

    @property
    def subject(self) -> str:
        """The thing the event is about, as CloudEvents' ``subject``."""
        return f"{self.AGGREGATE}s/{self.aggregate_id}"

    def data(self) -> dict[str, Any]:
        """The event's own fields as plain JSON (ids and times as strings);
        the id and the time travel in the envelope."""
        return {
            f.name: _plain(getattr(self, f.name))
            for f in fields(self)
            if f.name not in ("id", "occurred_at")
        }


def _plain(value: object) -> object:
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    return value


@dataclass(frozen=True, slots=True, kw_only=True)
class UserRegistered(DomainEvent):
    TYPE: ClassVar[str] = "user.registered"
    AGGREGATE: ClassVar[Aggregate] = Aggregate.USER

    user_id: UserId
    email: str
    name: str
    is_admin: bool

    @property
    def aggregate_id(self) -> uuid.UUID:
        return self.user_id

    @classmethod
    def of(cls, user: User) -> UserRegistered:
        return cls(
            occurred_at=user.created_at,
            user_id=user.id,
            email=user.email.value,
            name=user.name,
            is_admin=user.is_admin,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class _OrderEvent(DomainEvent):
    AGGREGATE: ClassVar[Aggregate] = Aggregate.ORDER

    order_id: uuid.UUID
    payer_id: UserId
    payee_id: UserId
    amount: int
    currency: str

    @property
    def aggregate_id(self) -> uuid.UUID:
        return self.order_id


@dataclass(frozen=True, slots=True, kw_only=True)
class OrderCreated(_OrderEvent):
    TYPE: ClassVar[str] = "order.created"

    description: str | None

    @classmethod
    def of(cls, order: Order) -> OrderCreated:
        return cls(occurred_at=order.created_at, description=order.description, **_parties(order))


@dataclass(frozen=True, slots=True, kw_only=True)
class _OrderTransferEvent(_OrderEvent):
    """The order's money moved, by the ledger transfer ``transfer_id``."""

    transfer_id: uuid.UUID

    @classmethod
    def of(cls, order: Order, transfer_id: uuid.UUID) -> Self:
        return cls(occurred_at=order.updated_at, transfer_id=transfer_id, **_parties(order))


@dataclass(frozen=True, slots=True, kw_only=True)
class OrderPaid(_OrderTransferEvent):
    TYPE: ClassVar[str] = "order.paid"


@dataclass(frozen=True, slots=True, kw_only=True)
class OrderRefunded(_OrderTransferEvent):
    TYPE: ClassVar[str] = "order.refunded"


@dataclass(frozen=True, slots=True, kw_only=True)
class OrderExpired(_OrderEvent):
    TYPE: ClassVar[str] = "order.expired"

    @classmethod
    def of(cls, order: Order) -> OrderExpired:
        return cls(occurred_at=order.updated_at, **_parties(order))


def _parties(order: Order) -> dict[str, Any]:
    return {
        "order_id": order.id,
        "payer_id": order.payer_id,
        "payee_id": order.payee_id,
        "amount": order.money.amount,
        "currency": order.money.currency,
    }


@dataclass(frozen=True, slots=True, kw_only=True)
class WalletCredited(DomainEvent):
    """An operator's top-up. The wallet aggregate is the user's wallets."""

    TYPE: ClassVar[str] = "wallet.credited"
    AGGREGATE: ClassVar[Aggregate] = Aggregate.WALLET

    user_id: UserId
    entry_id: uuid.UUID
    amount: int
    currency: str
    balance: int

    @property
    def aggregate_id(self) -> uuid.UUID:
        return self.user_id

    @classmethod
    def of(cls, credit: Credit, at: datetime) -> WalletCredited:
        return cls(
            occurred_at=at,
            user_id=credit.user_id,
            entry_id=credit.entry_id,
            amount=credit.money.amount,
            currency=credit.money.currency,
            balance=credit.balance,
        )


EVENT_TYPES: tuple[type[DomainEvent], ...] = (
    UserRegistered,
    OrderCreated,
    OrderPaid,
    OrderRefunded,
    OrderExpired,
    WalletCredited,
)


@dataclass(frozen=True, slots=True)
class OutboxEvent:
    """An event as the outbox holds it, on its way to the bus."""

    id: uuid.UUID
    type: str
    subject: str
    aggregate_type: str
    aggregate_id: uuid.UUID
    version: int
    occurred_at: datetime
    data: dict[str, Any]
    attempts: int = 0
    # W3C trace context of the change that recorded the event, if any.
    trace_context: dict[str, str] | None = None

    @property
    def aggregate(self) -> tuple[str, uuid.UUID]:
        return (self.aggregate_type, self.aggregate_id)


@dataclass(frozen=True, slots=True)
class OutboxStats:
    pending: int
    dead: int
    # Seconds since the oldest pending event occurred; 0 when none is.
    lag_seconds: float


class PublishError(Exception):
    """The bus refused or lost this event: counted as one failed attempt."""


class BusUnavailableError(PublishError):
    """The bus cannot be reached at all: no event is to blame, none is
    counted; the relay waits for the bus instead."""
