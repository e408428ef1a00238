"""A pay, a refund or a credit as the domain decided it, handed to a store
that commits all of it in one step, and what the store found instead when
it could not.

The domain decides: who may act, whether the order may move (its state
machine), what moves where, the event and the answer to keep under the
idempotency key. The store only compares and sets: it commits the decision
if the order is still what the decision was made from, and otherwise says
what it found (the request already ran under its key, or the order changed),
so that the use case decides again from that."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from ledgerline.domain.events import DomainEvent, WalletCredited
from ledgerline.domain.idempotency import IdempotencyRecord
from ledgerline.domain.ledger import Transfer
from ledgerline.domain.order import Order


@dataclass(frozen=True, slots=True)
class OrderSettlement:
    """A pay or a refund: ``before`` is the order the decision was made
    from; only its status, parties and money are compared (what the rules
    read), so an order touched otherwise meanwhile is still settled."""

    before: Order
    after: Order
    transfer: Transfer
    source_entry: uuid.UUID
    destination_entry: uuid.UUID
    event: DomainEvent
    record: IdempotencyRecord


@dataclass(frozen=True, slots=True)
class CreditSettlement:
    """A credit. The wallet's balance after it is known only once it is
    made: the store writes it into the event's and the record's
    ``balance`` (what the domain put there is a placeholder)."""

    transfer: Transfer
    source_entry: uuid.UUID
    destination_entry: uuid.UUID
    event: WalletCredited
    record: IdempotencyRecord


@dataclass(frozen=True, slots=True)
class Settled:
    """Committed. ``balance``: the destination wallet's, after it."""

    balance: int


@dataclass(frozen=True, slots=True)
class Replayed:
    """This caller's key holds an answer already (a request that ran while
    this one waited, its lock lost): nothing was done."""

    record: IdempotencyRecord


@dataclass(frozen=True, slots=True)
class Stale:
    """The order is not what the decision was made from: ``current`` is it
    now (None: it is gone). Nothing was done."""

    current: Order | None


@dataclass(frozen=True, slots=True)
class KeyTaken:
    """Another request of this caller stored an answer under the key while
    this one ran; this one was rolled back. Replay what it stored."""


SettleOutcome = Settled | Replayed | Stale | KeyTaken
