"""Between the wire types of ledgerline.v1 and the domain: parse what a
client sent (a bad id is invalid_argument, as over REST) and render
entities."""

from __future__ import annotations

import uuid
from datetime import datetime

from google.protobuf.timestamp_pb2 import Timestamp

from ledgerline.domain.errors import InvalidArgumentError
from ledgerline.domain.ledger import Balance, Credit, LedgerEntry, TransferKind
from ledgerline.domain.order import Order, OrderStatus
from ledgerline.domain.user import User
from ledgerline.v1 import payments_pb2, users_pb2, wallet_pb2


def parse_id(value: str, field: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        raise InvalidArgumentError.for_field(field, "must be a UUID") from None


def timestamp(at: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(at)
    return stamp


def user_message(user: User) -> users_pb2.User:
    return users_pb2.User(
        id=str(user.id),
        email=user.email.value,
        name=user.name,
        create_time=timestamp(user.created_at),
        update_time=timestamp(user.updated_at),
    )


_ORDER_STATUS = {
    OrderStatus.PENDING: payments_pb2.ORDER_STATUS_PENDING,
    OrderStatus.PAID: payments_pb2.ORDER_STATUS_PAID,
    OrderStatus.REFUNDED: payments_pb2.ORDER_STATUS_REFUNDED,
    OrderStatus.EXPIRED: payments_pb2.ORDER_STATUS_EXPIRED,
}


def order_message(order: Order) -> payments_pb2.Order:
    message = payments_pb2.Order(
        id=str(order.id),
        payer_id=str(order.payer_id),
        payee_id=str(order.payee_id),
        amount=order.money.amount,
        currency=order.money.currency,
        description=order.description or "",
        status=_ORDER_STATUS[order.status],
        create_time=timestamp(order.created_at),
        update_time=timestamp(order.updated_at),
    )
    if order.paid_at is not None:
        message.pay_time.CopyFrom(timestamp(order.paid_at))
    return message


def balance_message(balance: Balance) -> wallet_pb2.Balance:
    return wallet_pb2.Balance(currency=balance.currency, amount=balance.amount)


_ENTRY_KIND = {
    TransferKind.CREDIT: wallet_pb2.ENTRY_KIND_CREDIT,
    TransferKind.PAYMENT: wallet_pb2.ENTRY_KIND_PAYMENT,
    TransferKind.REFUND: wallet_pb2.ENTRY_KIND_REFUND,
}


def entry_message(entry: LedgerEntry) -> wallet_pb2.Entry:
    message = wallet_pb2.Entry(
        id=str(entry.id),
        kind=_ENTRY_KIND[entry.kind],
        amount=entry.amount,
        currency=entry.currency,
        balance_after=entry.balance_after,
        create_time=timestamp(entry.created_at),
    )
    if entry.order_id is not None:
        message.order_id = str(entry.order_id)
    return message


def credit_message(credit: Credit) -> wallet_pb2.CreditResponse:
    return wallet_pb2.CreditResponse(
        entry_id=str(credit.entry_id),
        user_id=str(credit.user_id),
        amount=credit.money.amount,
        currency=credit.money.currency,
        balance=credit.balance,
    )
