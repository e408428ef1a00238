"""Driver errors become domain errors at the repository edge: one table."""

from __future__ import annotations

import asyncpg
import pytest

from ledgerline.domain.errors import (
    ConflictError,
    DeadlineExceededError,
    DomainError,
    InvalidArgumentError,
    UnavailableError,
)
from ledgerline.repository.postgres.errors import translate_errors


def _unique(constraint: str) -> asyncpg.UniqueViolationError:
    exc = asyncpg.UniqueViolationError("duplicate key")
    exc.constraint_name = constraint
    return exc


TRANSLATIONS: dict[str, tuple[BaseException, type[DomainError]]] = {
    "unique-email": (_unique("uq_users_email_key"), ConflictError),
    "query-cancelled": (asyncpg.QueryCanceledError("canceling statement"), DeadlineExceededError),
    "driver-timeout": (TimeoutError(), DeadlineExceededError),
    "number-out-of-range": (
        asyncpg.NumericValueOutOfRangeError("bigint out of range"),
        InvalidArgumentError,
    ),
    "connection-lost": (asyncpg.ConnectionDoesNotExistError("closed"), UnavailableError),
    "admin-shutdown": (asyncpg.AdminShutdownError("terminating"), UnavailableError),
    "cannot-connect-now": (asyncpg.CannotConnectNowError("starting up"), UnavailableError),
    "too-many-connections": (asyncpg.TooManyConnectionsError("too many"), UnavailableError),
    "interface-error": (asyncpg.InterfaceError("pool is closed"), UnavailableError),
    "cut-mid-operation": (asyncpg.InternalClientError("cannot switch"), UnavailableError),
    "read-only-after-failover": (
        asyncpg.ReadOnlySQLTransactionError("read-only transaction"),
        UnavailableError,
    ),
    "deadlock": (asyncpg.DeadlockDetectedError("deadlock detected"), UnavailableError),
    "serialization": (asyncpg.SerializationError("could not serialize"), UnavailableError),
    "refused": (ConnectionRefusedError(), UnavailableError),
}


@pytest.mark.parametrize(("raised", "expected"), TRANSLATIONS.values(), ids=list(TRANSLATIONS))
def test_driver_errors_become_domain_errors(
    raised: BaseException, expected: type[DomainError]
) -> None:
    with pytest.raises(expected), translate_errors():
        raise raised


def test_an_unknown_constraint_is_not_dressed_up_as_a_domain_error() -> None:
    """A violation no rule names is a bug: it stays what it is (a 500)."""
    with pytest.raises(asyncpg.UniqueViolationError), translate_errors():
        raise _unique("uq_something_else")
