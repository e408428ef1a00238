"""Money, the order state machine, order descriptions and idempotency keys."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import cast

import pytest

from ledgerline.domain.errors import FailedPreconditionError, InvalidArgumentError
from ledgerline.domain.idempotency import parse_idempotency_key
from ledgerline.domain.ledger import Transfer, TransferKind
from ledgerline.domain.money import MAX_AMOUNT, Money
from ledgerline.domain.order import (
    DESCRIPTION_MAX_LENGTH,
    Order,
    OrderStatus,
    parse_description,
)

CREATED = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
LATER = CREATED + timedelta(minutes=5)
KEY_HEADER = "Idempotency-Key"

# --- Money.parse ----------------------------------------------------------------

VALID_MONEY: dict[str, tuple[int, str]] = {
    "smallest-amount": (1, "EUR"),
    "largest-amount": (MAX_AMOUNT, "EUR"),
    "ten-to-the-twelve": (10**12, "USD"),
    "zero-decimal-currency": (500, "JPY"),
}


@pytest.mark.parametrize(("amount", "currency"), VALID_MONEY.values(), ids=list(VALID_MONEY))
def test_money_parse_accepts(amount: int, currency: str) -> None:
    assert Money.parse(amount, currency) == Money(amount, currency)


INVALID_MONEY: dict[str, tuple[object, str, list[str]]] = {
    # id: (amount, currency, fields reported)
    "amount-zero": (0, "EUR", ["amount"]),
    "amount-negative": (-1, "EUR", ["amount"]),
    "amount-above-max": (10**12 + 1, "EUR", ["amount"]),
    "amount-true": (True, "EUR", ["amount"]),
    "amount-false": (False, "EUR", ["amount"]),
    "amount-float": (1.0, "EUR", ["amount"]),
    "amount-string": ("100", "EUR", ["amount"]),
    "currency-lower-case": (100, "eur", ["currency"]),
    "currency-mixed-case": (100, "Eur", ["currency"]),
    "currency-four-letters": (100, "EURO", ["currency"]),
    "currency-unknown-xxx": (100, "XXX", ["currency"]),
    "currency-unknown-abc": (100, "ABC", ["currency"]),
    "currency-empty": (100, "", ["currency"]),
    "currency-padded": (100, " EUR", ["currency"]),
    "both-wrong": (0, "eur", ["amount", "currency"]),
}


@pytest.mark.parametrize(
    ("amount", "currency", "fields"), INVALID_MONEY.values(), ids=list(INVALID_MONEY)
)
def test_money_parse_rejects_naming_the_fields(
    amount: object, currency: str, fields: list[str]
) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        Money.parse(cast(int, amount), currency)

    assert [d.field for d in caught.value.details] == fields
    assert all(d.message for d in caught.value.details)


# --- the order state machine ----------------------------------------------------


def _order(status: OrderStatus) -> Order:
    return Order(
        id=uuid.uuid4(),
        payer_id=uuid.uuid4(),
        payee_id=uuid.uuid4(),
        money=Money(1234, "EUR"),
        description="coffee",
        status=status,
        created_at=CREATED,
        updated_at=CREATED,
        paid_at=CREATED if status in (OrderStatus.PAID, OrderStatus.REFUNDED) else None,
    )


P, D, R, E = OrderStatus.PENDING, OrderStatus.PAID, OrderStatus.REFUNDED, OrderStatus.EXPIRED

TRANSITIONS: dict[str, tuple[OrderStatus, str, OrderStatus | None]] = {
    # id: (from status, action, new status; None means FailedPreconditionError)
    "pending-pay": (P, "pay", D),
    "pending-refund": (P, "refund", None),
    "pending-expire": (P, "expire", E),
    "paid-pay": (D, "pay", None),
    "paid-refund": (D, "refund", R),
    "paid-expire": (D, "expire", None),
    "refunded-pay": (R, "pay", None),
    "refunded-refund": (R, "refund", None),
    "refunded-expire": (R, "expire", None),
    "expired-pay": (E, "pay", None),
    "expired-refund": (E, "refund", None),
    "expired-expire": (E, "expire", None),
}


def _act(order: Order, action: str, at: datetime) -> Order:
    actions = {"pay": order.pay, "refund": order.refund, "expire": order.expire}
    return actions[action](at)


def _target(action: str) -> OrderStatus:
    return {"pay": D, "refund": R, "expire": E}[action]


@pytest.mark.parametrize(
    ("start", "action", "expected"), TRANSITIONS.values(), ids=list(TRANSITIONS)
)
def test_order_transition(start: OrderStatus, action: str, expected: OrderStatus | None) -> None:
    order = _order(start)

    if expected is None:
        assert not order.can_become(_target(action))
        with pytest.raises(FailedPreconditionError):
            _act(order, action, LATER)
        return

    assert order.can_become(expected)
    moved = _act(order, action, LATER)

    assert moved.status is expected
    assert moved.updated_at == LATER
    assert moved.paid_at == (LATER if action == "pay" else order.paid_at)
    # Nothing else about the order changes, and the original is untouched.
    keep = ("id", "payer_id", "payee_id", "money", "description", "created_at")
    assert all(getattr(moved, name) == getattr(order, name) for name in keep)
    assert order.status is start
    assert order.updated_at == CREATED


def test_refund_keeps_the_time_the_order_was_paid() -> None:
    paid = _order(P).pay(LATER)

    refunded = paid.refund(LATER + timedelta(hours=1))

    assert refunded.paid_at == LATER
    assert refunded.updated_at == LATER + timedelta(hours=1)


def test_is_party_names_payer_and_payee_only() -> None:
    order = _order(P)

    assert order.is_party(order.payer_id)
    assert order.is_party(order.payee_id)
    assert not order.is_party(uuid.uuid4())


# --- snapshots --------------------------------------------------------------------

SNAPSHOT_ORDERS: dict[str, Order] = {
    "pending-no-description": Order(
        uuid.uuid4(), uuid.uuid4(), uuid.uuid4(), Money(1, "EUR"), None, P, CREATED, CREATED
    ),
    "paid-with-description": _order(P).pay(LATER),
    "refunded": _order(P).pay(LATER).refund(LATER + timedelta(days=1)),
    "expired": _order(P).expire(LATER),
    "microseconds-and-max-amount": Order(
        uuid.uuid4(),
        uuid.uuid4(),
        uuid.uuid4(),
        Money(MAX_AMOUNT, "JPY"),
        "ünïcödé ☕",
        D,
        CREATED.replace(microsecond=123456),
        LATER.replace(microsecond=654321),
        LATER.replace(microsecond=654321),
    ),
    "non-utc-offset": Order(
        uuid.uuid4(),
        uuid.uuid4(),
        uuid.uuid4(),
        Money(99, "GBP"),
        "x",
        P,
        datetime(2026, 3, 1, 9, 30, tzinfo=timezone(timedelta(hours=2))),
        datetime(2026, 3, 1, 9, 30, tzinfo=timezone(timedelta(hours=2))),
    ),
}


@pytest.mark.parametrize("order", SNAPSHOT_ORDERS.values(), ids=list(SNAPSHOT_ORDERS))
def test_snapshot_round_trip(order: Order) -> None:
    snapshot = order.snapshot()

    assert Order.from_snapshot(snapshot) == order
    assert snapshot["id"] == str(order.id)
    assert snapshot["status"] == str(order.status)
    assert snapshot["amount"] == order.money.amount
    assert snapshot["currency"] == order.money.currency


# --- parse_description ------------------------------------------------------------

VALID_DESCRIPTIONS: dict[str, tuple[str | None, str | None]] = {
    # id: (raw, parsed)
    "none": (None, None),
    "empty": ("", None),
    "whitespace-only": ("  \t\n ", None),
    "trimmed": ("  coffee  ", "coffee"),
    "one-char": ("x", "x"),
    "max-length": ("d" * DESCRIPTION_MAX_LENGTH, "d" * DESCRIPTION_MAX_LENGTH),
    "max-length-after-trimming": (
        "  " + "d" * DESCRIPTION_MAX_LENGTH + "  ",
        "d" * DESCRIPTION_MAX_LENGTH,
    ),
    "unicode-counts-characters": ("é" * DESCRIPTION_MAX_LENGTH, "é" * DESCRIPTION_MAX_LENGTH),
}


@pytest.mark.parametrize(
    ("raw", "parsed"), VALID_DESCRIPTIONS.values(), ids=list(VALID_DESCRIPTIONS)
)
def test_parse_description_accepts(raw: str | None, parsed: str | None) -> None:
    assert parse_description(raw) == parsed


INVALID_DESCRIPTIONS: dict[str, str] = {
    "one-over-max": "d" * (DESCRIPTION_MAX_LENGTH + 1),
    "far-over-max": "d" * 10_000,
}


@pytest.mark.parametrize("raw", INVALID_DESCRIPTIONS.values(), ids=list(INVALID_DESCRIPTIONS))
def test_parse_description_rejects(raw: str) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        parse_description(raw)

    assert [d.field for d in caught.value.details] == ["description"]


# --- parse_idempotency_key --------------------------------------------------------

VALID_KEYS: dict[str, str] = {
    "one-char": "k",
    "uuid": "0b9a4e0c-61c4-4a55-9b0e-0d7c0a7b9f21",
    "max-length": "k" * 255,
    "every-visible-ascii": "".join(chr(c) for c in range(0x21, 0x7F)),
}


@pytest.mark.parametrize("raw", VALID_KEYS.values(), ids=list(VALID_KEYS))
def test_parse_idempotency_key_accepts(raw: str) -> None:
    assert parse_idempotency_key(raw) == raw


INVALID_KEYS: dict[str, str | None] = {
    "missing": None,
    "empty": "",
    "one-over-max": "k" * 256,
    "inner-space": "my key",
    "only-space": " ",
    "leading-space": " key",
    "non-ascii": "clé",
    "only-non-ascii": "é",
    "nul": "key\x00",
    "tab": "key\tkey",
    "delete": "key\x7f",
    "leading-newline": "\nkey",
    "inner-newline": "key\nkey",
}


@pytest.mark.parametrize(
    "raw",
    [
        *(pytest.param(raw, id=name) for name, raw in INVALID_KEYS.items()),
        pytest.param("key\n", id="trailing-newline"),
    ],
)
def test_parse_idempotency_key_rejects(raw: str | None) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        parse_idempotency_key(raw)

    assert [d.field for d in caught.value.details] == [KEY_HEADER]


def test_a_transfer_between_one_account_and_itself_is_refused() -> None:
    someone = uuid.uuid4()
    with pytest.raises(ValueError, match="two different accounts"):
        Transfer(
            uuid.uuid4(),
            TransferKind.PAYMENT,
            someone,
            someone,
            Money(5, "EUR"),
            uuid.uuid4(),
            datetime.now(UTC),
        )
