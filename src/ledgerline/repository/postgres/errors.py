"""The one place where database constraint names become domain errors."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import asyncpg

from ledgerline.domain.errors import ConflictError, DeadlineExceededError, DomainError

CONSTRAINT_ERRORS: dict[str, DomainError] = {
    "uq_users_email_lower": ConflictError("a user with this email already exists"),
    "pk_users": ConflictError("a user with this id already exists"),
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
