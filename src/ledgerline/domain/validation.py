"""Validate several fields and report every violation at once."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar, overload

from ledgerline.domain.errors import FieldViolation, InvalidArgumentError


def is_storable_text(value: str) -> bool:
    """Text PostgreSQL can store and UTF-8 can encode: no NUL character and
    no lone surrogate (which JSON's \\ud800 escapes can carry)."""
    if "\x00" in value:
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def check_text(field: str, value: str) -> str:
    if not is_storable_text(value):
        raise InvalidArgumentError.for_field(
            field, "must be valid text (no NUL characters or lone surrogates)"
        )
    return value


A = TypeVar("A")
B = TypeVar("B")
C = TypeVar("C")


@overload
def collect_violations(a: Callable[[], A], b: Callable[[], B], /) -> tuple[A, B]: ...


@overload
def collect_violations(
    a: Callable[[], A], b: Callable[[], B], c: Callable[[], C], /
) -> tuple[A, B, C]: ...


def collect_violations(*checks: Callable[[], Any]) -> tuple[Any, ...]:
    """Runs every check; raises one InvalidArgumentError naming all failures."""
    values: list[Any] = []
    details: list[FieldViolation] = []
    for check in checks:
        try:
            values.append(check())
        except InvalidArgumentError as exc:
            details.extend(exc.details or (FieldViolation("", exc.message),))
    if details:
        message = "; ".join(f"{d.field}: {d.message}" if d.field else d.message for d in details)
        raise InvalidArgumentError(message, tuple(details))
    return tuple(values)
