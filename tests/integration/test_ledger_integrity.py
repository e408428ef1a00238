"""The database, not only the service, keeps the books: SQL run by anyone
else that would break the double entry is refused (at the statement or at
commit), and a correct hand-written transfer still goes through."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg
import pytest
from asyncpg.pool import PoolConnectionProxy

from ledgerline.domain.user import Email, User
from ledgerline.repository.postgres.users import PostgresUserRepository

Conn = asyncpg.Connection | PoolConnectionProxy


@dataclass(frozen=True)
class Books:
    ada: uuid.UUID  # holds 1000 EUR
    bob: uuid.UUID  # holds 500 EUR
    ada_account: uuid.UUID
    bob_account: uuid.UUID


@dataclass(frozen=True)
class Leg:
    account: uuid.UUID
    owner: uuid.UUID | None
    amount: int
    balance_after: int
    currency: str = "EUR"


async def _credit(pool: asyncpg.Pool, user: uuid.UUID, amount: int) -> None:
    """A credit as the settlements write one (ledger_transfer(), migration 0005)."""
    await pool.execute(
        "SELECT ledger_transfer($1, 'credit', NULL, NULL, $2, 'EUR', $3, now(), $4, $5)",
        uuid.uuid4(),
        user,
        amount,
        uuid.uuid4(),
        uuid.uuid4(),
    )


@pytest.fixture
async def books(pool: asyncpg.Pool) -> Books:
    users = PostgresUserRepository(pool)
    ids = []
    for name in ("ada", "bob"):
        now = datetime.now(UTC)
        user = User(
            uuid.uuid4(), Email(f"{name}@example.com"), name, "$argon2id$x", False, now, now
        )
        await users.add(user)
        ids.append(user.id)
    await _credit(pool, ids[0], 1000)
    await _credit(pool, ids[1], 500)
    accounts = {
        row["owner_id"]: row["id"]
        for row in await pool.fetch("SELECT id, owner_id FROM accounts WHERE kind = 'wallet'")
    }
    return Books(ids[0], ids[1], accounts[ids[0]], accounts[ids[1]])


async def _transfer(
    conn: Conn, legs: list[Leg], *, amount: int | None = None, move: bool = True
) -> None:
    """Writes a transfer of ``legs`` by hand; ``move`` also updates each
    account's balance to its leg's ``balance_after``."""
    transfer = uuid.uuid4()
    now = datetime.now(UTC)
    moved = amount if amount is not None else max(abs(leg.amount) for leg in legs)
    await conn.execute(
        "INSERT INTO transfers (id, kind, order_id, currency, amount, created_at) "
        "VALUES ($1, 'credit', NULL, 'EUR', $2, $3)",
        transfer,
        moved,
        now,
    )
    for leg in legs:
        if move:
            await conn.execute(
                "UPDATE accounts SET balance = $2 WHERE id = $1", leg.account, leg.balance_after
            )
        await conn.execute(
            "INSERT INTO ledger_entries (id, transfer_id, account_id, owner_id, kind, amount, "
            "currency, balance_after, order_id, created_at) "
            "VALUES ($1, $2, $3, $4, 'credit', $5, $6, $7, NULL, $8)",
            uuid.uuid4(),
            transfer,
            leg.account,
            leg.owner,
            leg.amount,
            leg.currency,
            leg.balance_after,
            now,
        )


Tamper = Callable[[Conn, Books], Awaitable[object]]


async def _entry_for_a_committed_transfer(conn: Conn, b: Books) -> None:
    """A third entry, balance moved with it, for ada's committed credit."""
    transfer = await conn.fetchval(
        "SELECT transfer_id FROM ledger_entries WHERE owner_id = $1", b.ada
    )
    await conn.execute("UPDATE accounts SET balance = 1005 WHERE id = $1", b.ada_account)
    await conn.execute(
        "INSERT INTO ledger_entries (id, transfer_id, account_id, owner_id, kind, amount, "
        "currency, balance_after, order_id, created_at) "
        "VALUES ($1, $2, $3, $4, 'credit', 5, 'EUR', 1005, NULL, now())",
        uuid.uuid4(),
        transfer,
        b.ada_account,
        b.ada,
    )


def _legs(b: Books, *, ada: int = -7, bob: int = 7) -> list[Leg]:
    return [
        Leg(b.ada_account, b.ada, ada, 1000 + ada),
        Leg(b.bob_account, b.bob, bob, 500 + bob),
    ]


TAMPERING: dict[str, Tamper] = {
    "balance-changed-without-an-entry": lambda c, b: c.execute(
        "UPDATE accounts SET balance = balance + 5 WHERE id = $1", b.ada_account
    ),
    "entries-not-summing-to-zero": lambda c, b: _transfer(c, _legs(b, ada=-7, bob=8)),
    "transfer-amount-not-what-the-entries-move": lambda c, b: _transfer(c, _legs(b), amount=999),
    "entries-in-another-currency": lambda c, b: _transfer(
        c,
        [
            Leg(b.ada_account, b.ada, -7, 993, currency="USD"),
            Leg(b.bob_account, b.bob, 7, 507, currency="USD"),
        ],
    ),
    "entry-naming-another-owner": lambda c, b: _transfer(
        c, [Leg(b.ada_account, b.bob, -7, 993), Leg(b.bob_account, b.bob, 7, 507)]
    ),
    "three-legs": lambda c, b: _transfer(
        c,
        [
            Leg(b.ada_account, b.ada, -7, 993),
            Leg(b.bob_account, b.bob, 4, 504),
            Leg(b.bob_account, b.bob, 3, 507),
        ],
        amount=7,
    ),
    "one-leg": lambda c, b: _transfer(c, [Leg(b.bob_account, b.bob, 7, 507)], amount=7),
    "entry-added-to-a-committed-transfer": _entry_for_a_committed_transfer,
    "one-account-both-sides": lambda c, b: _transfer(
        c, [Leg(b.ada_account, b.ada, -7, 993), Leg(b.ada_account, b.ada, 7, 1000)]
    ),
    "entry-off-its-accounts-chain": lambda c, b: _transfer(
        c, [Leg(b.ada_account, b.ada, -7, 990), Leg(b.bob_account, b.bob, 7, 510)]
    ),
    "transfer-without-entries": lambda c, b: c.execute(
        "INSERT INTO transfers (id, kind, currency, amount, created_at) "
        "VALUES ($1, 'credit', 'EUR', 5, now())",
        uuid.uuid4(),
    ),
    "transfer-updated": lambda c, b: c.execute("UPDATE transfers SET amount = amount + 1"),
    "transfer-deleted": lambda c, b: c.execute("DELETE FROM transfers"),
    "entry-updated": lambda c, b: c.execute("UPDATE ledger_entries SET amount = amount * 2"),
    "entries-truncated": lambda c, b: c.execute("TRUNCATE ledger_entries"),
    "transfers-truncated": lambda c, b: c.execute("TRUNCATE transfers CASCADE"),
    "account-given-to-someone-else": lambda c, b: c.execute(
        "UPDATE accounts SET owner_id = $2 WHERE id = $1", b.ada_account, b.bob
    ),
    "account-currency-changed": lambda c, b: c.execute(
        "UPDATE accounts SET currency = 'USD' WHERE id = $1", b.ada_account
    ),
}


@pytest.mark.parametrize("tamper", TAMPERING.values(), ids=list(TAMPERING))
async def test_sql_that_would_break_the_books_is_refused(
    pool: asyncpg.Pool, books: Books, tamper: Tamper
) -> None:
    async with pool.acquire() as conn:
        with pytest.raises(asyncpg.PostgresError):
            async with conn.transaction():
                await tamper(conn, books)
    balances = await pool.fetch(
        "SELECT owner_id, balance FROM accounts WHERE kind = 'wallet' ORDER BY balance"
    )
    assert [(r["owner_id"], r["balance"]) for r in balances] == [
        (books.bob, 500),
        (books.ada, 1000),
    ]


async def test_a_correct_transfer_written_by_hand_is_accepted(
    pool: asyncpg.Pool, books: Books
) -> None:
    async with pool.acquire() as conn, conn.transaction():
        await _transfer(conn, _legs(books))
    balances = {
        r["owner_id"]: r["balance"]
        for r in await pool.fetch("SELECT owner_id, balance FROM accounts WHERE kind = 'wallet'")
    }
    assert balances == {books.ada: 993, books.bob: 507}
