"""Ports: what the use cases need from the outside world, as Protocols."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from types import TracebackType
from typing import Protocol, Self

from ledgerline.domain.events import DomainEvent, OutboxEvent, OutboxStats
from ledgerline.domain.idempotency import IdempotencyRecord
from ledgerline.domain.ledger import Balance, EntryPage
from ledgerline.domain.order import Order, OrderId
from ledgerline.domain.settlement import CreditSettlement, OrderSettlement, SettleOutcome
from ledgerline.domain.user import AccessToken, Email, Principal, User, UserId


class Clock(Protocol):
    def now(self) -> datetime: ...


class PasswordHasher(Protocol):
    """Hashing is CPU-bound: implementations must not block the event loop."""

    async def hash(self, password: str) -> str: ...

    async def verify(self, password_hash: str, password: str) -> bool: ...

    async def waste_time(self, password: str) -> None:
        """Spend what one verify costs, so a missing user takes as long as a
        wrong password."""
        ...


class TokenIssuer(Protocol):
    def issue(self, principal: Principal) -> AccessToken: ...

    def verify(self, token: str) -> Principal: ...


class UserRepository(Protocol):
    async def add(self, user: User) -> None:
        """Raises ConflictError when the email is taken (case-insensitively)."""

    async def get_by_id(self, user_id: UserId) -> User | None: ...

    async def get_by_email(self, email: Email) -> User | None: ...

    async def set_admin(self, user_id: UserId, is_admin: bool, at: datetime) -> None: ...


# A new user as a bulk import carries it: (position, id, email, email_key,
# name, password_hash); the position is where it stood in the input (its
# line), which decides between two users with one email key. A plain tuple:
# an import carries millions of them between processes and into COPY.
NewUserRow = tuple[int, str, str, str, str, str]


class UserImportSink(Protocol):
    async def load(
        self,
        users: Sequence[NewUserRow],
        at: datetime,
        *,
        commit_after: Callable[[], Awaitable[None]] | None = None,
    ) -> tuple[int, int]:
        """In one transaction, adds each of ``users`` whose email key is
        not taken (nor by one before it in position order), created at
        ``at``, with its UserRegistered event; returns (added, skipped).
        ``commit_after`` is awaited before the COMMIT: batches loaded at
        once can commit in order. A failure or a cancellation before the
        COMMIT adds none; a COMMIT sent is seen to its end."""


class OrderRepository(Protocol):
    async def add(self, order: Order) -> None: ...

    async def get(self, order_id: OrderId) -> Order | None: ...

    async def update(self, order: Order) -> None: ...

    async def lock_pending_created_before(self, cutoff: datetime, limit: int) -> list[Order]:
        """Up to ``limit`` pending orders created before ``cutoff``, oldest
        first, each locked until the transaction ends; rows another
        transaction holds are skipped, not waited for."""


class LedgerRepository(Protocol):
    async def balances(self, owner_id: UserId) -> list[Balance]: ...

    async def entries(self, owner_id: UserId, limit: int, cursor: str | None) -> EntryPage:
        """Newest first; ``cursor`` is the opaque ``next_cursor`` of the
        previous page. Raises InvalidArgumentError for a cursor it did not make."""


class Settlements(Protocol):
    """Pays, refunds and credits, each committed whole in one step: one
    round trip to the database (domain/settlement.py)."""

    async def order_and_record(
        self, order_id: OrderId, caller_id: UserId, key: str, now: datetime
    ) -> tuple[Order | None, IdempotencyRecord | None]:
        """The order, and what this caller stored under ``key`` and has not
        expired, read together (one snapshot)."""

    async def user_and_record(
        self, user_id: UserId, caller_id: UserId, key: str, now: datetime
    ) -> tuple[bool, IdempotencyRecord | None]:
        """Whether the user exists, and the caller's record, read together."""

    async def settle_order(self, settlement: OrderSettlement) -> SettleOutcome:
        """Commits the pay or refund if the order is still as it was read.
        Raises InsufficientFundsError when the source wallet lacks the money."""

    async def settle_credit(self, settlement: CreditSettlement) -> SettleOutcome:
        """Commits the credit (Settled, Replayed or KeyTaken)."""


class IdempotencyStore(Protocol):
    async def get(self, caller_id: UserId, key: str, now: datetime) -> IdempotencyRecord | None:
        """The unexpired record for this caller's key, if any."""

    async def purge(self, now: datetime, batch: int) -> int:
        """Deletes up to ``batch`` expired records; returns how many."""


class Outbox(Protocol):
    async def add(self, event: DomainEvent) -> None:
        """Records the event in the unit of work's transaction, numbered
        after its aggregate's previous events."""


class OutboxStore(Protocol):
    """The relay's side of the outbox."""

    async def claim(
        self, aggregates: int, per_aggregate: int, lease_seconds: float
    ) -> list[OutboxEvent]:
        """Claims the due events of up to ``aggregates`` aggregates, each
        aggregate's first unpublished event leading and at most
        ``per_aggregate`` of them, for ``lease_seconds``; sorted by
        aggregate, then version. No two claims hold one event."""

    async def mark_published(self, ids: Sequence[uuid.UUID]) -> None: ...

    async def mark_failed(
        self, event_id: uuid.UUID, error: str, retry_in_seconds: float, max_attempts: int
    ) -> bool:
        """Counts a failed attempt and makes the event due again later, or
        dead after ``max_attempts``; True when it is dead."""

    async def release(self, ids: Sequence[uuid.UUID]) -> None:
        """Gives claimed events back unpublished, due at once."""

    async def purge(self, older_than_seconds: float, batch: int, *, unpublished: bool) -> int: ...

    async def stats(self) -> OutboxStats: ...


class EventPublisher(Protocol):
    async def publish(self, event: OutboxEvent) -> None:
        """Returns once the bus has stored the event (a duplicate of one it
        stored already included). Raises BusUnavailableError when the bus
        cannot be reached, PublishError when it refuses or loses the event."""


class Lease(Protocol):
    """A held lock. Only its owner can extend or release it."""

    key: str

    async def extend(self, ttl_seconds: float) -> bool: ...

    async def release(self) -> bool:
        """False when the lock had expired (and may now be someone else's),
        or could not be released (its TTL then frees it). Never raises: the
        work done under the lock must not fail because of its release."""


class LockManager(Protocol):
    async def try_acquire(self, key: str, ttl_seconds: float) -> Lease | None:
        """The lock, or None at once when another holder has it."""


class UnitOfWork(Protocol):
    """One database transaction. Leaving the block without ``commit()`` rolls
    back: an exception, a cancellation or a forgotten line never commits."""

    @property
    def users(self) -> UserRepository: ...

    @property
    def orders(self) -> OrderRepository: ...

    @property
    def outbox(self) -> Outbox: ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...

    async def commit(self) -> None: ...


class UnitOfWorkFactory(Protocol):
    def __call__(self) -> UnitOfWork: ...
