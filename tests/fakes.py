"""In-memory fakes of the ports, for unit tests of the use cases. Written
once, here; they behave like the real adapters where the use cases care
(case-insensitive unique emails, rollback unless committed)."""

from __future__ import annotations

import copy
import hashlib
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Self

from ledgerline.domain.errors import ConflictError
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


class InMemoryUnitOfWork:
    """Works on a copy of the store; commit() publishes it."""

    def __init__(self, store: InMemoryUsers) -> None:
        self._store = store
        self._work = InMemoryUsers()
        self.committed = False

    @property
    def users(self) -> InMemoryUsers:
        return self._work

    async def __aenter__(self) -> Self:
        self._work = InMemoryUsers(copy.copy(self._store.rows))
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        return None

    async def commit(self) -> None:
        self._store.rows = self._work.rows
        self.committed = True


class InMemoryUnitOfWorkFactory:
    def __init__(self, store: InMemoryUsers) -> None:
        self.store = store
        self.opened: list[InMemoryUnitOfWork] = []

    def __call__(self) -> InMemoryUnitOfWork:
        uow = InMemoryUnitOfWork(self.store)
        self.opened.append(uow)
        return uow
