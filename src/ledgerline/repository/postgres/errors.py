"""The one place where database constraint names become domain errors."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import asyncpg

from ledgerline.domain.errors import (
    ConflictError,
    DeadlineExceededError,
    DomainError,
    FailedPreconditionError,
    InsufficientFundsError,
    NotFoundError,
)

CONSTRAINT_ERRORS: dict[str, DomainError] = {
    "uq_users_email_lower": ConflictError("a user with this email already exists"),
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
        raise type(known)(known.message) from exc
    except asyncpg.QueryCanceledError as exc:
        # statement_timeout or a cancelled query: the caller's deadline ran out.
        raise DeadlineExceededError() from exc
