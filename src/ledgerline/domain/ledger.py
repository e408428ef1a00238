"""The double-entry ledger: every movement of money is a transfer of two
entries that sum to zero; a wallet balance is the sum of its entries."""

from __future__ import annotations

import base64
import re
import uuid
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from ledgerline.domain.errors import InvalidArgumentError
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


# Entry cursors ----------------------------------------------------------------
#
# A cursor is "v1:<seq>" in URL-safe base64 without padding, <seq> a position
# in the ledger's global sequence in decimal without leading zeros. Only that
# exact form is accepted, and CURSOR_PATTERN says it for the OpenAPI document:
# it is the one rule, used by the decoder too. Positions stop at 10**18 - 1 so
# that the pattern can bound the digits (a bigint sequence takes millennia to
# get there at any rate this service sees).
#
# Base64 turns three ASCII digits into four characters, each drawn from a
# small set: "v1:" is "djE6", then whole groups of three digits, then a tail
# of one or two digits. The first digit is never 0.
CURSOR_MAX_SEQ = 10**18 - 1
_CURSOR_PREFIX = "v1:"
_LEAD = "(?:[MN][DTjz]|O[DT])"  # a digit, and the top of the next one
_LEAD_NONZERO = "(?:M[Tjz]|N[DTjz]|O[DT])"  # the same, the digit not 0
_GROUP_REST = "[AEIMQUYcgk][w-z0-5]"  # the rest of the second digit, the third
_TAIL_1 = "(?:[MN][AQgw]|O[AQ])"
_TAIL_1_NONZERO = "(?:M[Qgw]|N[AQgw]|O[AQ])"
_TAIL_2 = f"{_LEAD}[AEIMQUYcgk]"
_GROUP = f"{_LEAD}{_GROUP_REST}"
CURSOR_PATTERN = (
    "^djE6(?:"
    f"{_TAIL_1_NONZERO}|{_LEAD_NONZERO}[AEIMQUYcgk]"  # 1 or 2 digits
    f"|{_LEAD_NONZERO}{_GROUP_REST}(?:(?:{_GROUP}){{0,4}}(?:{_TAIL_1}|{_TAIL_2})?|(?:{_GROUP}){{5}})"
    ")$"
)
_CURSOR = re.compile(CURSOR_PATTERN)


def encode_cursor(seq: int) -> str:
    if not 1 <= seq <= CURSOR_MAX_SEQ:
        raise ValueError(f"ledger position {seq} is outside the cursor's range")
    return base64.urlsafe_b64encode(f"{_CURSOR_PREFIX}{seq}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    """The position a cursor from encode_cursor names; anything else is 400."""
    # fullmatch, not match: "$" alone would let a trailing newline through.
    if not _CURSOR.fullmatch(cursor):
        raise InvalidArgumentError.for_field("cursor", "is not a cursor this API gave")
    padded = cursor + "=" * (-len(cursor) % 4)
    return int(base64.urlsafe_b64decode(padded).decode().removeprefix(_CURSOR_PREFIX))


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
