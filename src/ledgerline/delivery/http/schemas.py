"""Wire shapes of the REST API. Validation of business rules stays in the
domain; these only say what types arrive and leave."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from ledgerline.domain.ledger import Balance, Credit, EntryPage
from ledgerline.domain.order import Order
from ledgerline.domain.user import User

# Generous ceilings against abuse; the precise rules live in the domain.
_MAX_TEXT = 1024


class RegisterRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    email: str = Field(max_length=_MAX_TEXT, examples=["ada@example.com"])
    password: str = Field(max_length=_MAX_TEXT, examples=["correct horse battery"])
    name: str = Field(max_length=_MAX_TEXT, examples=["Ada Lovelace"])


class TokenRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    email: str = Field(max_length=_MAX_TEXT)
    password: str = Field(max_length=_MAX_TEXT)


class TokenResponse(BaseModel):
    access_token: str
    token_type: Literal["Bearer"] = "Bearer"  # noqa: S105
    expires_in: int


class UserResponse(BaseModel):
    id: uuid.UUID
    email: str
    name: str
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, user: User) -> UserResponse:
        return cls(
            id=user.id,
            email=user.email.value,
            name=user.name,
            created_at=user.created_at,
            updated_at=user.updated_at,
        )


class ErrorDetail(BaseModel):
    field: str
    message: str


class ErrorResponse(BaseModel):
    message: str
    code: str
    details: list[ErrorDetail] | None = None


class HealthResponse(BaseModel):
    status: Literal["ok"] = "ok"


class ReadinessResponse(BaseModel):
    status: Literal["ok"] = "ok"
    checks: dict[str, str]


class NotReadyResponse(ErrorResponse):
    checks: dict[str, str]


# Wallets and payments --------------------------------------------------------

# Strict: a JSON 12.0, "12" or true is not an amount. Money is never a float.
Amount = Annotated[int, Field(strict=True, examples=[1299])]
Currency = Annotated[str, Field(max_length=16, examples=["EUR"])]


class CreditRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    user_id: uuid.UUID
    amount: Amount
    currency: Currency


class CreditResponse(BaseModel):
    entry_id: uuid.UUID
    user_id: uuid.UUID
    amount: int
    currency: str
    balance: int

    @classmethod
    def of(cls, credit: Credit) -> CreditResponse:
        return cls(
            entry_id=credit.entry_id,
            user_id=credit.user_id,
            amount=credit.money.amount,
            currency=credit.money.currency,
            balance=credit.balance,
        )


class BalanceResponse(BaseModel):
    currency: str
    amount: int


class WalletResponse(BaseModel):
    balances: list[BalanceResponse]

    @classmethod
    def of(cls, balances: list[Balance]) -> WalletResponse:
        return cls(
            balances=[BalanceResponse(currency=b.currency, amount=b.amount) for b in balances]
        )


class EntryResponse(BaseModel):
    id: uuid.UUID
    kind: str
    amount: int
    currency: str
    balance_after: int
    order_id: uuid.UUID | None
    created_at: datetime


class EntriesResponse(BaseModel):
    entries: list[EntryResponse]
    next_cursor: str | None

    @classmethod
    def of(cls, page: EntryPage) -> EntriesResponse:
        return cls(
            entries=[
                EntryResponse(
                    id=e.id,
                    kind=str(e.kind),
                    amount=e.amount,
                    currency=e.currency,
                    balance_after=e.balance_after,
                    order_id=e.order_id,
                    created_at=e.created_at,
                )
                for e in page.entries
            ],
            next_cursor=page.next_cursor,
        )


class CreateOrderRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    payee_id: uuid.UUID
    amount: Amount
    currency: Currency
    description: str | None = Field(default=None, max_length=_MAX_TEXT)


class OrderResponse(BaseModel):
    id: uuid.UUID
    payer_id: uuid.UUID
    payee_id: uuid.UUID
    amount: int
    currency: str
    description: str | None
    status: Literal["pending", "paid", "refunded", "expired"]
    created_at: datetime
    updated_at: datetime
    paid_at: datetime | None

    @classmethod
    def of(cls, order: Order) -> OrderResponse:
        return cls(
            id=order.id,
            payer_id=order.payer_id,
            payee_id=order.payee_id,
            amount=order.money.amount,
            currency=order.money.currency,
            description=order.description,
            status=order.status.value,
            created_at=order.created_at,
            updated_at=order.updated_at,
            paid_at=order.paid_at,
        )
