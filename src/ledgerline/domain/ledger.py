"""The double-entry ledger: every movement of money is a transfer of two
entries that sum to zero; a wallet balance is the sum of its entries."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from ledgerline.domain.money import Money
from ledgerline.domain.order import OrderId
from ledgerline.domain.user import UserId


class TransferKind(StrEnum):
    CREDIT = "credit"  # an operator's top-up: money enters the system
    PAYMENT = "payment"
    REFUND = "refund"


@dataclass(frozen=True, slots=True)
class Transfer:
    """Moves ``money`` from one side to the other. ``source`` None means the
    outside world (the issuance account of the currency)."""

    id: uuid.UUID
    kind: TransferKind
    source: UserId | None
    destination: UserId
    money: Money
    order_id: OrderId | None
    created_at: datetime

    def __post_init__(self) -> None:
        if self.source == self.destination:
            raise ValueError("a transfer moves money between two different accounts")


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    id: uuid.UUID
    transfer_id: uuid.UUID
    owner_id: UserId | None  # None: the currency's issuance account
    kind: TransferKind
    amount: int  # signed: positive in, negative out
    currency: str
    balance_after: int
    order_id: OrderId | None
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Balance:
    currency: str
    amount: int


@dataclass(frozen=True, slots=True)
class EntryPage:
    entries: tuple[LedgerEntry, ...]
    next_cursor: str | None


@dataclass(frozen=True, slots=True)
class Credit:
    """The outcome of an admin credit."""

    entry_id: uuid.UUID
    user_id: UserId
    money: Money
    balance: int

    def snapshot(self) -> dict[str, Any]:
        return {
            "entry_id": str(self.entry_id),
            "user_id": str(self.user_id),
            "amount": self.money.amount,
            "currency": self.money.currency,
            "balance": self.balance,
        }

    @classmethod
    def from_snapshot(cls, data: dict[str, Any]) -> Credit:
        return cls(
            entry_id=uuid.UUID(data["entry_id"]),
            user_id=uuid.UUID(data["user_id"]),
            money=Money(int(data["amount"]), data["currency"]),
            balance=int(data["balance"]),
        )
