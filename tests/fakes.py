"""In-memory fakes of the ports, for unit tests of the use cases. Written
once, here; they behave like the real adapters where the use cases care
(case-insensitive unique emails, non-negative wallets, one transfer of a
kind per order, idempotency records that expire, locks with owner tokens and
a TTL, rollback unless committed).

Each repository fake is also the committed state: a use case may read it
directly, and a unit of work works on copies of all of them and publishes the
copies together on commit."""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import itertools
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Self

from ledgerline.domain.errors import (
    ConflictError,
    FailedPreconditionError,
    InsufficientFundsError,
    InvalidArgumentError,
    UnavailableError,
)
from ledgerline.domain.events import (
    BusUnavailableError,
    DomainEvent,
    OutboxEvent,
    OutboxStats,
    PublishError,
)
from ledgerline.domain.idempotency import IdempotencyRecord
from ledgerline.domain.ledger import Balance, EntryPage, LedgerEntry, Transfer, TransferKind
from ledgerline.domain.order import Order, OrderId, OrderStatus
from ledgerline.domain.ports import NewUserRow
from ledgerline.domain.settlement import (
    CreditSettlement,
    KeyTaken,
    OrderSettlement,
    Replayed,
    Settled,
    SettleOutcome,
    Stale,
)
from ledgerline.domain.user import Email, User, UserId


class FakeClock:
    def __init__(self, start: datetime | None = None) -> None:
        self.current = start or datetime(2026, 1, 1, 12, 0, tzinfo=UTC)

    def now(self) -> datetime:
        return self.current

    def advance(self, seconds: float) -> None:
        self.current += timedelta(seconds=seconds)


class FakeHasher:
    """Deterministic and cheap; counts the work it does so tests can check
    that a failed login spends a hash either way."""

    def __init__(self) -> None:
        self.verifications = 0

    async def hash(self, password: str) -> str:
        return "fake$" + hashlib.sha256(password.encode()).hexdigest()

    async def verify(self, password_hash: str, password: str) -> bool:
        self.verifications += 1
        return password_hash == await self.hash(password)

    async def waste_time(self, password: str) -> None:
        self.verifications += 1


@dataclass
class InMemoryUsers:
    rows: dict[UserId, User] = field(default_factory=dict)

    async def add(self, user: User) -> None:
        if any(u.email.normalized == user.email.normalized for u in self.rows.values()):
            raise ConflictError("a user with this email already exists")
        self.rows[user.id] = user

    async def get_by_id(self, user_id: UserId) -> User | None:
        return self.rows.get(user_id)

    async def get_by_email(self, email: Email) -> User | None:
        return next((u for u in self.rows.values() if u.email.normalized == email.normalized), None)

    async def set_admin(self, user_id: UserId, is_admin: bool, at: datetime) -> None:
        if user_id in self.rows:
            self.rows[user_id] = replace(self.rows[user_id], is_admin=is_admin, updated_at=at)

    def copy(self) -> InMemoryUsers:
        return InMemoryUsers(dict(self.rows))

    def adopt(self, other: InMemoryUsers) -> None:
        self.rows = other.rows


@dataclass
class InMemoryUserImportSink:
    """The bulk loader: users by email key (the first of a load's rows with
    a key wins, by position), each load all or nothing, committed in the
    order commit_after imposes. It holds the use case to its promise that
    two loads in flight never share an email (in the database, the later
    would wait for the earlier's commit while the earlier waits for it).
    ``fail_load`` (1-based) makes that load fail before its commit;
    ``work_seconds`` says how long each load works before it may commit
    (by call, 1-based; 0 when not listed)."""

    users: dict[str, NewUserRow] = field(default_factory=dict)
    created_at: dict[str, datetime] = field(default_factory=dict)
    commits: list[list[NewUserRow]] = field(default_factory=list)
    fail_load: int | None = None
    work_seconds: dict[int, float] = field(default_factory=dict)
    calls: int = 0
    _in_flight: list[set[str]] = field(default_factory=list)

    async def load(
        self,
        users: Sequence[NewUserRow],
        at: datetime,
        *,
        commit_after: Callable[[], Awaitable[None]] | None = None,
    ) -> tuple[int, int]:
        self.calls += 1
        call = self.calls
        keys = {user[3] for user in users}
        for other in self._in_flight:
            assert not keys & other, f"two loads in flight share {sorted(keys & other)}"
        self._in_flight.append(keys)
        try:
            await asyncio.sleep(self.work_seconds.get(call, 0))  # others may start meanwhile
            if commit_after is not None:
                await commit_after()
            if call == self.fail_load:
                raise UnavailableError("the database is unavailable")
            added: list[NewUserRow] = []
            taken = set(self.users)
            for user in sorted(users):  # by position
                if user[3] not in taken:
                    taken.add(user[3])
                    added.append(user)
        finally:
            self._in_flight.remove(keys)
        for user in added:
            self.users[user[3]] = user
            self.created_at[user[3]] = at
        self.commits.append(added)
        return len(added), len(users) - len(added)


@dataclass
class InMemoryOrders:
    rows: dict[OrderId, Order] = field(default_factory=dict)

    async def add(self, order: Order) -> None:
        if order.id in self.rows:
            raise ConflictError("an order with this id already exists")
        self.rows[order.id] = order

    async def get(self, order_id: OrderId) -> Order | None:
        return self.rows.get(order_id)

    async def update(self, order: Order) -> None:
        # Like UPDATE ... WHERE id = $1: a missing row changes nothing.
        if order.id in self.rows:
            self.rows[order.id] = order

    async def lock_pending_created_before(self, cutoff: datetime, limit: int) -> list[Order]:
        due = [
            o
            for o in self.rows.values()
            if o.status is OrderStatus.PENDING and o.created_at < cutoff
        ]
        return sorted(due, key=lambda o: o.created_at)[:limit]

    def copy(self) -> InMemoryOrders:
        return InMemoryOrders(dict(self.rows))

    def adopt(self, other: InMemoryOrders) -> None:
        self.rows = other.rows


Account = tuple[UserId | None, str]  # (owner, None for the issuance account; currency)

_CURSOR_PREFIX = "fake-v1:"


def _encode_cursor(seq: int) -> str:
    return base64.urlsafe_b64encode(f"{_CURSOR_PREFIX}{seq}".encode()).decode()


def _decode_cursor(cursor: str) -> int:
    try:
        text = base64.urlsafe_b64decode(cursor.encode("ascii")).decode()
        if not text.startswith(_CURSOR_PREFIX):
            raise ValueError(cursor)
        seq = int(text.removeprefix(_CURSOR_PREFIX))
        if seq < 1:
            raise ValueError(cursor)
    except (ValueError, UnicodeError, binascii.Error) as exc:
        raise InvalidArgumentError.for_field("cursor", "is not a cursor this API gave") from exc
    return seq


@dataclass
class InMemoryLedger:
    """Double-entry ledger. ``journal`` holds every entry in the order it was
    written (its index + 1 is the entry's sequence number); ``accounts`` the
    balance of each account that has seen money."""

    accounts: dict[Account, int] = field(default_factory=dict)
    journal: list[LedgerEntry] = field(default_factory=list)
    order_transfers: set[tuple[OrderId, TransferKind]] = field(default_factory=set)

    async def apply(
        self, transfer: Transfer, entry_ids: tuple[uuid.UUID, uuid.UUID] | None = None
    ) -> tuple[LedgerEntry, LedgerEntry]:
        """Writes the transfer's two entries (source first; with ``entry_ids``
        if given) and moves the balances."""
        if transfer.source == transfer.destination:
            raise ValueError("a transfer needs two different accounts")
        currency, amount = transfer.money.currency, transfer.money.amount
        if transfer.order_id is not None:
            once = (transfer.order_id, transfer.kind)
            if once in self.order_transfers:
                raise FailedPreconditionError(f"the order already has a {transfer.kind} transfer")
        source: Account = (transfer.source, currency)
        destination: Account = (transfer.destination, currency)
        source_after = self.accounts.get(source, 0) - amount
        # Only wallets are kept non-negative; the issuance account goes below
        # zero by exactly the money that entered the system.
        if transfer.source is not None and source_after < 0:
            raise InsufficientFundsError("the wallet does not hold enough money")
        destination_after = self.accounts.get(destination, 0) + amount
        self.accounts[source] = source_after
        self.accounts[destination] = destination_after
        if transfer.order_id is not None:
            self.order_transfers.add((transfer.order_id, transfer.kind))

        ids = entry_ids or (uuid.uuid4(), uuid.uuid4())

        def entry(
            entry_id: uuid.UUID, owner: UserId | None, signed: int, balance: int
        ) -> LedgerEntry:
            return LedgerEntry(
                id=entry_id,
                transfer_id=transfer.id,
                owner_id=owner,
                kind=transfer.kind,
                amount=signed,
                currency=currency,
                balance_after=balance,
                order_id=transfer.order_id,
                created_at=transfer.created_at,
            )

        legs = (
            entry(ids[0], transfer.source, -amount, source_after),
            entry(ids[1], transfer.destination, amount, destination_after),
        )
        self.journal.extend(legs)
        return legs

    async def balances(self, owner_id: UserId) -> list[Balance]:
        return sorted(
            (
                Balance(currency, amount)
                for (owner, currency), amount in self.accounts.items()
                if owner == owner_id
            ),
            key=lambda balance: balance.currency,
        )

    async def entries(self, owner_id: UserId, limit: int, cursor: str | None) -> EntryPage:
        before = _decode_cursor(cursor) if cursor is not None else len(self.journal) + 1
        newest_first = [
            (seq, entry)
            for seq, entry in reversed(list(enumerate(self.journal, start=1)))
            if seq < before and entry.owner_id == owner_id
        ]
        page = newest_first[:limit]
        next_cursor = _encode_cursor(page[-1][0]) if len(newest_first) > limit else None
        return EntryPage(tuple(entry for _, entry in page), next_cursor)

    def balance(self, owner_id: UserId | None, currency: str) -> int:
        """A test's look at one account (0 when it never saw money)."""
        return self.accounts.get((owner_id, currency), 0)

    def copy(self) -> InMemoryLedger:
        return InMemoryLedger(dict(self.accounts), list(self.journal), set(self.order_transfers))

    def adopt(self, other: InMemoryLedger) -> None:
        self.accounts = other.accounts
        self.journal = other.journal
        self.order_transfers = other.order_transfers


@dataclass
class InMemoryIdempotency:
    rows: dict[tuple[UserId, str], IdempotencyRecord] = field(default_factory=dict)

    async def get(self, caller_id: UserId, key: str, now: datetime) -> IdempotencyRecord | None:
        record = self.rows.get((caller_id, key))
        return record if record is not None and record.expires_at > now else None

    async def save(self, record: IdempotencyRecord) -> bool:
        existing = self.rows.get((record.caller_id, record.key))
        # An expired record under the same key may be taken over.
        if existing is not None and existing.expires_at > record.created_at:
            return False
        self.rows[(record.caller_id, record.key)] = record
        return True

    async def purge(self, now: datetime, batch: int) -> int:
        expired = [key for key, record in self.rows.items() if record.expires_at <= now][:batch]
        for key in expired:
            del self.rows[key]
        return len(expired)

    def copy(self) -> InMemoryIdempotency:
        return InMemoryIdempotency(dict(self.rows))

    def adopt(self, other: InMemoryIdempotency) -> None:
        self.rows = other.rows


@dataclass
class InMemoryOutbox:
    """The events recorded, in commit order, with their aggregate's numbers."""

    events: list[tuple[DomainEvent, int]] = field(default_factory=list)

    async def add(self, event: DomainEvent) -> None:
        aggregate = (event.AGGREGATE, event.aggregate_id)
        version = 1 + sum(1 for e, _ in self.events if (e.AGGREGATE, e.aggregate_id) == aggregate)
        self.events.append((event, version))

    def of_type(self, event_type: type[DomainEvent]) -> list[DomainEvent]:
        return [e for e, _ in self.events if isinstance(e, event_type)]

    def copy(self) -> InMemoryOutbox:
        return InMemoryOutbox(list(self.events))

    def adopt(self, other: InMemoryOutbox) -> None:
        self.events = other.events


class InMemoryLease:
    def __init__(self, locks: InMemoryLocks, key: str, token: int) -> None:
        self._locks = locks
        self.key = key
        self.token = token

    async def extend(self, ttl_seconds: float) -> bool:
        if not self._locks.is_held_by(self.key, self.token):
            return False
        self._locks.held[self.key] = (self.token, self._locks.expiry(ttl_seconds))
        return True

    async def release(self) -> bool:
        if not self._locks.is_held_by(self.key, self.token):
            return False
        del self._locks.held[self.key]
        self._locks.released.append(self.key)
        return True


class InMemoryLocks:
    """LockManager with owner tokens. With a clock, a lock expires ``ttl``
    seconds after it was taken (or last extended), as a Redis key would;
    without one it is simply held until released."""

    def __init__(self, clock: FakeClock | None = None) -> None:
        self._clock = clock
        self._tokens = itertools.count(1)
        self.held: dict[str, tuple[int, datetime | None]] = {}
        self.acquired: list[str] = []  # every key handed out, in order
        self.released: list[str] = []  # every key released by its owner, in order

    async def try_acquire(self, key: str, ttl_seconds: float) -> InMemoryLease | None:
        if self.is_held(key):
            return None
        token = next(self._tokens)
        self.held[key] = (token, self.expiry(ttl_seconds))
        self.acquired.append(key)
        return InMemoryLease(self, key, token)

    def is_held(self, key: str) -> bool:
        holder = self.held.get(key)
        if holder is None:
            return False
        _, expires_at = holder
        return expires_at is None or self._clock is None or self._clock.now() < expires_at

    def is_held_by(self, key: str, token: int) -> bool:
        return self.is_held(key) and self.held[key][0] == token

    def expiry(self, ttl_seconds: float) -> datetime | None:
        return None if self._clock is None else self._clock.now() + timedelta(seconds=ttl_seconds)


class InMemoryUnitOfWork:
    """One transaction over copies of every store; commit() publishes them
    all at once, and leaving the block without it discards them (so a failed
    payment leaves balances, order and idempotency keys as they were).

    Transactions are serial: committing after another transaction committed
    since this one began raises, rather than silently losing that write."""

    def __init__(self, factory: InMemoryUnitOfWorkFactory) -> None:
        self._factory = factory
        self._users = InMemoryUsers()
        self._orders = InMemoryOrders()
        self._ledger = InMemoryLedger()
        self._idempotency = InMemoryIdempotency()
        self._outbox = InMemoryOutbox()
        self._began_at_version = -1
        self.committed = False

    @property
    def users(self) -> InMemoryUsers:
        return self._users

    @property
    def orders(self) -> InMemoryOrders:
        return self._orders

    @property
    def ledger(self) -> InMemoryLedger:
        return self._ledger

    @property
    def idempotency(self) -> InMemoryIdempotency:
        return self._idempotency

    @property
    def outbox(self) -> InMemoryOutbox:
        return self._outbox

    async def __aenter__(self) -> Self:
        factory = self._factory
        self._users = factory.store.copy()
        self._orders = factory.orders.copy()
        self._ledger = factory.ledger.copy()
        self._idempotency = factory.idempotency.copy()
        self._outbox = factory.outbox.copy()
        self._began_at_version = factory.version
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        return None

    async def commit(self) -> None:
        factory = self._factory
        if factory.version != self._began_at_version:
            raise RuntimeError("another transaction committed since this one began")
        # Publish copies, so a write after commit cannot leak into the store.
        factory.store.adopt(self._users.copy())
        factory.orders.adopt(self._orders.copy())
        factory.ledger.adopt(self._ledger.copy())
        factory.idempotency.adopt(self._idempotency.copy())
        factory.outbox.adopt(self._outbox.copy())
        factory.version += 1
        self._began_at_version = factory.version
        self.committed = True


class InMemoryUnitOfWorkFactory:
    """Holds the committed state of every store; ``store`` is the users one
    (the name the user tests know it by)."""

    def __init__(
        self,
        store: InMemoryUsers | None = None,
        *,
        orders: InMemoryOrders | None = None,
        ledger: InMemoryLedger | None = None,
        idempotency: InMemoryIdempotency | None = None,
    ) -> None:
        self.store = store if store is not None else InMemoryUsers()
        self.orders = orders if orders is not None else InMemoryOrders()
        self.ledger = ledger if ledger is not None else InMemoryLedger()
        self.idempotency = idempotency if idempotency is not None else InMemoryIdempotency()
        self.outbox = InMemoryOutbox()
        self.version = 0
        self.opened: list[InMemoryUnitOfWork] = []

    @property
    def users(self) -> InMemoryUsers:
        return self.store

    def __call__(self) -> InMemoryUnitOfWork:
        uow = InMemoryUnitOfWork(self)
        self.opened.append(uow)
        return uow


class InMemorySettlements:
    """Settlements over the stores of a unit-of-work factory, with the
    database functions' rules: the caller's key is looked at first, then the
    order is compared and set; a key another request took is KeyTaken, and
    nothing is kept unless all of it is. A settlement runs in one piece (the
    stores' transactions are serial); the reads and each settlement give
    way to other tasks first, as a round trip would."""

    def __init__(self, uow: InMemoryUnitOfWorkFactory) -> None:
        self._uow = uow
        # Runs before each settlement, as whatever another process commits
        # between a request's read and its settlement.
        self.meanwhile: Callable[[], Awaitable[None]] | None = None
        self.settled = 0  # settlements attempted

    async def _round_trip(self) -> None:
        self.settled += 1
        await asyncio.sleep(0)
        if self.meanwhile is not None:
            await self.meanwhile()

    async def order_and_record(
        self, order_id: OrderId, caller_id: UserId, key: str, now: datetime
    ) -> tuple[Order | None, IdempotencyRecord | None]:
        await asyncio.sleep(0)
        record = await self._uow.idempotency.get(caller_id, key, now)
        return self._uow.orders.rows.get(order_id), record

    async def user_and_record(
        self, user_id: UserId, caller_id: UserId, key: str, now: datetime
    ) -> tuple[bool, IdempotencyRecord | None]:
        await asyncio.sleep(0)
        record = await self._uow.idempotency.get(caller_id, key, now)
        return user_id in self._uow.store.rows, record

    async def settle_order(self, settlement: OrderSettlement) -> SettleOutcome:
        await self._round_trip()
        before, record = settlement.before, settlement.record
        async with self._uow() as uow:
            current = uow.orders.rows.get(before.id)
            if current is None:
                return Stale(None)
            stored = await uow.idempotency.get(record.caller_id, record.key, record.created_at)
            if stored is not None:
                return Replayed(stored)
            read = (before.status, before.payer_id, before.payee_id, before.money)
            if (current.status, current.payer_id, current.payee_id, current.money) != read:
                return Stale(current)
            ids = (settlement.source_entry, settlement.destination_entry)
            _, destination = await uow.ledger.apply(settlement.transfer, ids)
            await uow.orders.update(settlement.after)
            await uow.outbox.add(settlement.event)
            if not await uow.idempotency.save(record):
                return KeyTaken()
            await uow.commit()
            return Settled(destination.balance_after)

    async def settle_credit(self, settlement: CreditSettlement) -> SettleOutcome:
        await self._round_trip()
        record = settlement.record
        async with self._uow() as uow:
            stored = await uow.idempotency.get(record.caller_id, record.key, record.created_at)
            if stored is not None:
                return Replayed(stored)
            ids = (settlement.source_entry, settlement.destination_entry)
            _, destination = await uow.ledger.apply(settlement.transfer, ids)
            balance = destination.balance_after
            await uow.outbox.add(replace(settlement.event, balance=balance))
            result = {**record.result, "balance": balance}
            if not await uow.idempotency.save(replace(record, result=result)):
                return KeyTaken()
            await uow.commit()
            return Settled(balance)


@dataclass
class _StoredEvent:
    event: OutboxEvent
    state: str = "pending"
    claimed: bool = False
    due_in: float = 0.0  # the last retry delay asked for; due again when reset to 0
    last_error: str | None = None


@dataclass
class InMemoryOutboxStore:
    """The relay's store, with the real one's rules: an aggregate's first
    unpublished event leads it, a claimed lead keeps its aggregate from
    other claims, a dead lead holds it back. Retry delays are recorded, not
    waited for: ``make_due()`` makes every delayed event due."""

    rows: list[_StoredEvent] = field(default_factory=list)
    claims: int = 0
    # What was recorded, in order: ("published", version) and ("failed", version).
    history: list[tuple[str, int]] = field(default_factory=list)

    def record(self, event: OutboxEvent) -> None:
        self.rows.append(_StoredEvent(event))

    def state(self, event_id: uuid.UUID) -> str:
        return self._row(event_id).state

    def delays(self) -> list[float]:
        return [r.due_in for r in self.rows if r.due_in]

    def make_due(self) -> None:
        for row in self.rows:
            row.due_in = 0.0

    def _row(self, event_id: uuid.UUID) -> _StoredEvent:
        return next(r for r in self.rows if r.event.id == event_id)

    async def claim(
        self, aggregates: int, per_aggregate: int, lease_seconds: float
    ) -> list[OutboxEvent]:
        self.claims += 1
        unpublished = sorted(
            (r for r in self.rows if r.state != "published"),
            key=lambda r: (r.event.aggregate_type, r.event.aggregate_id, r.event.version),
        )
        leads: dict[tuple[str, uuid.UUID], _StoredEvent] = {}
        for row in unpublished:
            leads.setdefault(row.event.aggregate, row)
        ready = [
            lead
            for lead in leads.values()
            if lead.state == "pending" and not lead.claimed and not lead.due_in
        ][:aggregates]
        claimed: list[OutboxEvent] = []
        for lead in ready:
            chain = [
                r
                for r in unpublished
                if r.event.aggregate == lead.event.aggregate and r.state == "pending"
            ][:per_aggregate]
            for row in chain:
                row.claimed = True
                claimed.append(row.event)
        return claimed

    async def mark_published(self, ids: Sequence[uuid.UUID]) -> None:
        for event_id in ids:
            row = self._row(event_id)
            row.state, row.claimed = "published", False
            self.history.append(("published", row.event.version))

    async def mark_failed(
        self, event_id: uuid.UUID, error: str, retry_in_seconds: float, max_attempts: int
    ) -> bool:
        row = self._row(event_id)
        self.history.append(("failed", row.event.version))
        attempts = row.event.attempts + 1
        row.event = replace(row.event, attempts=attempts)
        row.claimed, row.due_in, row.last_error = False, retry_in_seconds, error
        if attempts >= max_attempts:
            row.state = "dead"
        return row.state == "dead"

    async def release(self, ids: Sequence[uuid.UUID]) -> None:
        for event_id in ids:
            self._row(event_id).claimed = False

    async def purge(self, older_than_seconds: float, batch: int, *, unpublished: bool) -> int:
        gone = [
            r for r in self.rows if r.state == "published" or (unpublished and r.state == "pending")
        ]
        gone = gone[:batch]
        for row in gone:
            self.rows.remove(row)
        return len(gone)

    async def stats(self) -> OutboxStats:
        pending = sum(r.state == "pending" for r in self.rows)
        dead = sum(r.state == "dead" for r in self.rows)
        return OutboxStats(pending=pending, dead=dead, lag_seconds=0.0)


class InMemoryBus:
    """An event bus: keeps what it stored, in order; may be down, may refuse
    chosen events, and drops a repeated id as a duplicate."""

    def __init__(self) -> None:
        self.stored: list[OutboxEvent] = []
        self.duplicates = 0
        self.down = False
        self.refused: set[uuid.UUID] = set()
        self.calls = 0

    async def publish(self, event: OutboxEvent) -> None:
        self.calls += 1
        if self.down:
            raise BusUnavailableError("the bus is down")
        if event.id in self.refused:
            raise PublishError("refused")
        if any(e.id == event.id for e in self.stored):
            self.duplicates += 1
            return
        self.stored.append(event)
