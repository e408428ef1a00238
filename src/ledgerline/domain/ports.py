"""Ports: what the use cases need from the outside world, as Protocols."""

from __future__ import annotations

from datetime import datetime
from types import TracebackType
from typing import Protocol, Self

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


class UnitOfWork(Protocol):
    """One database transaction. Leaving the block without ``commit()`` rolls
    back: an exception, a cancellation or a forgotten line never commits."""

    @property
    def users(self) -> UserRepository: ...

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
