"""The request deadline, carried in a context variable the way Go carries it
in a context.Context, so that database calls can pass what remains of it to
the driver (which then cancels the query on the server)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from contextvars import ContextVar

_deadline: ContextVar[float | None] = ContextVar("ledgerline_deadline", default=None)


@contextlib.contextmanager
def deadline_scope(seconds: float) -> Iterator[None]:
    when = asyncio.get_running_loop().time() + seconds
    outer = _deadline.get()
    token = _deadline.set(when if outer is None else min(outer, when))
    try:
        yield
    finally:
        _deadline.reset(token)


def remaining(default: float | None = None) -> float | None:
    """Seconds left before the current deadline (at least a millisecond), or
    ``default`` outside any deadline."""
    when = _deadline.get()
    if when is None:
        return default
    return max(when - asyncio.get_running_loop().time(), 0.001)
