"""UserRepository over asyncpg, plain SQL. It works on whatever connection it
is given (a pool for single reads, a transaction's connection in a unit of
work) and never commits."""

from __future__ import annotations

from datetime import datetime

import asyncpg

from ledgerline.domain.user import Email, User, UserId
from ledgerline.repository.postgres.executor import Database, Executor, database

_COLUMNS = "id, email, name, password_hash, is_admin, created_at, updated_at"
_READ = f"{_COLUMNS}, email_key"


def _to_user(row: asyncpg.Record) -> User:
    return User(
        id=row["id"],
        email=Email(row["email"], row["email_key"]),
        name=row["name"],
        password_hash=row["password_hash"],
        is_admin=row["is_admin"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


class PostgresUserRepository:
    def __init__(self, db: Executor | Database) -> None:
        self._db = database(db)

    async def add(self, user: User) -> None:
        await self._db.execute(
            f"INSERT INTO users ({_READ}) "  # noqa: S608
            "VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            user.id,
            user.email.value,
            user.name,
            user.password_hash,
            user.is_admin,
            user.created_at,
            user.updated_at,
            user.email.normalized,
        )

    async def get_by_id(self, user_id: UserId) -> User | None:
        row = await self._db.fetchrow(
            f"SELECT {_READ} FROM users WHERE id = $1",  # noqa: S608
            user_id,
        )
        return None if row is None else _to_user(row)

    async def get_by_email(self, email: Email) -> User | None:
        row = await self._db.fetchrow(
            f"SELECT {_READ} FROM users WHERE email_key = $1",  # noqa: S608
            email.normalized,
        )
        return None if row is None else _to_user(row)

    async def set_admin(self, user_id: UserId, is_admin: bool, at: datetime) -> None:
        await self._db.execute(
            "UPDATE users SET is_admin = $2, updated_at = $3 WHERE id = $1",
            user_id,
            is_admin,
            at,
        )
