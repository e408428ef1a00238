"""The domain error hierarchy. Each error carries a stable machine code; the
transports map codes to statuses in one table (``delivery``), never here."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class FieldViolation:
    field: str
    message: str


class DomainError(Exception):
    """Base of every error the service raises on purpose."""

    code = "internal"
    default_message = "internal server error"

    def __init__(self, message: str | None = None) -> None:
        self.message = message or self.default_message
        super().__init__(self.message)


class InvalidArgumentError(DomainError):
    code = "invalid_argument"
    default_message = "invalid argument"

    def __init__(
        self, message: str | None = None, details: tuple[FieldViolation, ...] = ()
    ) -> None:
        super().__init__(message)
        self.details = details

    @classmethod
    def for_field(cls, name: str, message: str) -> InvalidArgumentError:
        return cls(f"{name}: {message}", (FieldViolation(name, message),))


class UnauthenticatedError(DomainError):
    code = "unauthenticated"
    default_message = "not authenticated"


class PermissionDeniedError(DomainError):
    code = "permission_denied"
    default_message = "permission denied"


class NotFoundError(DomainError):
    code = "not_found"
    default_message = "not found"


class ConflictError(DomainError):
    code = "conflict"
    default_message = "already exists"


class PaymentInProgressError(DomainError):
    code = "payment_in_progress"
    default_message = "payment in progress"


class FailedPreconditionError(DomainError):
    code = "failed_precondition"
    default_message = "the resource is not in a state that allows this"


class IdempotencyMismatchError(DomainError):
    code = "idempotency_mismatch"
    default_message = "idempotency key was used with a different request"


class InsufficientFundsError(DomainError):
    code = "insufficient_funds"
    default_message = "insufficient funds"


class RateLimitedError(DomainError):
    """Over a rate limit; the call may be tried again after
    ``retry_after_seconds`` (whole seconds, at least 1)."""

    code = "rate_limited"
    default_message = "too many requests; try again later"

    def __init__(self, message: str | None = None, *, retry_after_seconds: int = 1) -> None:
        super().__init__(message)
        self.retry_after_seconds = max(1, retry_after_seconds)


class DeadlineExceededError(DomainError):
    code = "deadline_exceeded"
    default_message = "deadline exceeded"


class UnavailableError(DomainError):
    code = "unavailable"
    default_message = "service unavailable"
