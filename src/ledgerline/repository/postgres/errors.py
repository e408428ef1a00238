"""The one place where database constraint names become domain errors."""

from __future__ import annotations

import functools
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from typing import Any, ParamSpec, TypeVar

import asyncpg

from ledgerline.domain.errors import (
    ConflictError,
    DeadlineExceededError,
    DomainError,
    FailedPreconditionError,
    InsufficientFundsError,
    InvalidArgumentError,
    NotFoundError,
    UnavailableError,
)

P = ParamSpec("P")
R = TypeVar("R")

CONSTRAINT_ERRORS: dict[str, DomainError] = {
    "uq_users_email_key": ConflictError("a user with this email already exists"),
    "pk_users": ConflictError("a user with this id already exists"),
    "uq_transfers_order_kind": FailedPreconditionError(
        "the order has already been moved this way (paid or refunded)"
    ),
    "ck_balances_non_negative": InsufficientFundsError("the wallet does not hold enough money"),
    "fk_accounts_owner": NotFoundError("user not found"),
    "fk_orders_payee": NotFoundError("payee not found"),
    "fk_orders_payer": NotFoundError("payer not found"),
}


@contextmanager
def translate_errors() -> Iterator[None]:
    try:
        yield
    except asyncpg.IntegrityConstraintViolationError as exc:
        name = getattr(exc, "constraint_name", None)
        known = CONSTRAINT_ERRORS.get(name or "")
        if known is None:
            raise
        # Not chained: the driver's detail names the row's values (an
        # email), which would follow the error into tracebacks and spans.
        raise type(known)(known.message) from None
    except (asyncpg.QueryCanceledError, asyncpg.LockNotAvailableError, TimeoutError) as exc:
        # A cancelled query, a lock wait past the deadline's lock_timeout,
        # or the driver's timeout: the caller's deadline ran out.
        # (TimeoutError is an OSError: this clause must come first.)
        raise DeadlineExceededError() from exc
    except asyncpg.NumericValueOutOfRangeError as exc:
        # A balance past what a bigint holds: refuse the movement, change nothing.
        raise InvalidArgumentError("the amount would overflow a balance") from exc
    except _UNAVAILABLE as exc:
        raise UnavailableError("the database is unavailable") from exc


# The database cannot be reached, dropped the connection, or will not take
# more work right now. (QueryCanceledError is an OperatorInterventionError
# too; it is caught first, as a deadline.)
_UNAVAILABLE = (
    asyncpg.PostgresConnectionError,  # SQLSTATE class 08
    asyncpg.OperatorInterventionError,  # 57P01 admin shutdown, 57P03 cannot connect now
    asyncpg.TooManyConnectionsError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,  # a connection cut in the middle of an operation
    asyncpg.ReadOnlySQLTransactionError,  # a replica promoted elsewhere / failing over
    asyncpg.TransactionRollbackError,  # deadlock or serialization failure: retry later
    ConnectionError,
    OSError,
)


def translated(
    method: Callable[P, Coroutine[Any, Any, R]],
) -> Callable[P, Coroutine[Any, Any, R]]:
    """translate_errors() around a whole repository method."""

    @functools.wraps(method)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        with translate_errors():
            return await method(*args, **kwargs)

    return wrapper
