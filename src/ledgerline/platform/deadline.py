"""The request deadline, carried in a context variable the way Go carries it
in a context.Context, so that database calls can pass what remains of it to
the driver (which then cancels the query on the server), and so that the
clean-up that follows a cut request knows it has no time left to wait."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from contextvars import ContextVar, Token
from types import TracebackType

_deadline: ContextVar[float | None] = ContextVar("ledgerline_deadline", default=None)

# Past its deadline, a request still hands back a lock to a lock service
# that answers (one round trip): left to its TTL instead, the lock would
# refuse the order's retries for seconds. This is the most such clean-up may
# add to the answer; database connections get none of it (see
# platform.database.release).
CLEANUP_GRACE_SECONDS = 0.5

# uvloop's timers count whole milliseconds, so the timeout that cuts a
# request may fire just before the recorded deadline: clean-up that runs
# then is already past it.
_TIMER_SLACK_SECONDS = 0.002


def _record(seconds: float) -> tuple[float, Token[float | None]]:
    """Records a deadline ``seconds`` from now, or keeps the outer one if it
    is sooner; returns it (in loop time) and the token that undoes it."""
    when = asyncio.get_running_loop().time() + seconds
    outer = _deadline.get()
    if outer is not None:
        when = min(outer, when)
    return when, _deadline.set(when)


@contextlib.contextmanager
def deadline_scope(seconds: float) -> Iterator[float]:
    """Records a deadline ``seconds`` from now (or the outer one, if it is
    sooner) for the code inside; yields it, in loop time."""
    when, token = _record(seconds)
    try:
        yield when
    finally:
        _deadline.reset(token)


class within:  # noqa: N801 - used as a function: ``async with within(seconds):``
    """Runs the block under a deadline that is both recorded (for the driver
    and the clean-up) and enforced (the block is cancelled when it passes
    and TimeoutError raised), at one and the same instant. A class rather
    than a generator-based context manager: every request enters one."""

    __slots__ = ("_seconds", "_timeout", "_token")

    def __init__(self, seconds: float) -> None:
        self._seconds = seconds

    async def __aenter__(self) -> None:
        when, self._token = _record(self._seconds)
        self._timeout = asyncio.timeout_at(when)
        await self._timeout.__aenter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            await self._timeout.__aexit__(exc_type, exc, tb)
        finally:
            _deadline.reset(self._token)


def remaining(default: float | None = None) -> float | None:
    """Seconds left before the current deadline (at least a millisecond), or
    ``default`` outside any deadline."""
    when = _deadline.get()
    if when is None:
        return default
    return max(when - asyncio.get_running_loop().time(), 0.001)


def expired() -> bool:
    """Whether the current deadline has passed (never, outside one)."""
    when = _deadline.get()
    return when is not None and asyncio.get_running_loop().time() >= when - _TIMER_SLACK_SECONDS


def cleanup_budget() -> float | None:
    """Seconds a clean-up step that is safe to wait for may take: what
    remains of the deadline plus the grace; None outside any deadline."""
    when = _deadline.get()
    if when is None:
        return None
    return max(when - asyncio.get_running_loop().time(), 0.0) + CLEANUP_GRACE_SECONDS
