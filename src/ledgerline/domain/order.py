"""Orders and their state machine: pending -> paid -> refunded, and
pending -> expired. Any other move is a failed precondition."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum
from typing import Any

from ledgerline.domain.errors import FailedPreconditionError, InvalidArgumentError
from ledgerline.domain.money import Money
from ledgerline.domain.user import UserId
from ledgerline.domain.validation import check_text

OrderId = uuid.UUID
DESCRIPTION_MAX_LENGTH = 500


class OrderStatus(StrEnum):
    PENDING = "pending"
    PAID = "paid"
    REFUNDED = "refunded"
    EXPIRED = "expired"


_TRANSITIONS: dict[OrderStatus, frozenset[OrderStatus]] = {
    OrderStatus.PENDING: frozenset({OrderStatus.PAID, OrderStatus.EXPIRED}),
    OrderStatus.PAID: frozenset({OrderStatus.REFUNDED}),
    OrderStatus.REFUNDED: frozenset(),
    OrderStatus.EXPIRED: frozenset(),
}


def parse_description(raw: str | None) -> str | None:
    if raw is None:
        return None
    text = check_text("description", raw).strip()
    if len(text) > DESCRIPTION_MAX_LENGTH:
        raise InvalidArgumentError.for_field(
            "description", f"must be at most {DESCRIPTION_MAX_LENGTH} characters"
        )
    return text or None


@dataclass(frozen=True, slots=True)
class Order:
    id: OrderId
    payer_id: UserId
    payee_id: UserId
    money: Money
    description: str | None
    status: OrderStatus
    created_at: datetime
    updated_at: datetime
    paid_at: datetime | None = None

    def can_become(self, status: OrderStatus) -> bool:
        return status in _TRANSITIONS[self.status]

    def _move(self, status: OrderStatus, at: datetime) -> Order:
        if not self.can_become(status):
            raise FailedPreconditionError(f"order is {self.status}; it cannot become {status}")
        return replace(self, status=status, updated_at=at)

    def pay(self, at: datetime) -> Order:
        return replace(self._move(OrderStatus.PAID, at), paid_at=at)

    def refund(self, at: datetime) -> Order:
        return self._move(OrderStatus.REFUNDED, at)

    def expire(self, at: datetime) -> Order:
        return self._move(OrderStatus.EXPIRED, at)

    def is_party(self, user_id: UserId) -> bool:
        return user_id in (self.payer_id, self.payee_id)

    def snapshot(self) -> dict[str, Any]:
        """A plain-JSON picture of the order, kept with an idempotency key so
        a replay answers exactly what the first call answered."""
        return {
            "id": str(self.id),
            "payer_id": str(self.payer_id),
            "payee_id": str(self.payee_id),
            "amount": self.money.amount,
            "currency": self.money.currency,
            "description": self.description,
            "status": str(self.status),
            "created_at": self.created_at.isoformat(),
            "updated_at": self.updated_at.isoformat(),
            "paid_at": self.paid_at.isoformat() if self.paid_at else None,
        }

    @classmethod
    def from_snapshot(cls, data: dict[str, Any]) -> Order:
        return cls(
            id=uuid.UUID(data["id"]),
            payer_id=uuid.UUID(data["payer_id"]),
            payee_id=uuid.UUID(data["payee_id"]),
            money=Money(int(data["amount"]), data["currency"]),
            description=data["description"],
            status=OrderStatus(data["status"]),
            created_at=datetime.fromisoformat(data["created_at"]),
            updated_at=datetime.fromisoformat(data["updated_at"]),
            paid_at=datetime.fromisoformat(data["paid_at"]) if data["paid_at"] else None,
        )
