"""Rate limits on the calls an attacker repeats: logins, per email and per
client address, and registrations, per client address. Moving windows
(``limits``): a call is let through when fewer than N calls were let
through in the last window, however they fell in it. The counts live in
Redis when it is configured (one Lua script a hit, so every process on
every machine shares them), else in this process's memory.

A limiter that cannot reach Redis within its timeout lets the call through
(fails open), warns once per outage, counts every check it passed
unchecked, and asks Redis again after a back-off, one call at a time: the
limits protect the service's CPU and its users' passwords, and are not
worth refusing every login over (docs/decisions.md)."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import math
import time
import unicodedata
from dataclasses import dataclass
from typing import Protocol

import limits
import redis.asyncio as redis
from limits.aio.storage import MemoryStorage, RedisStorage, Storage
from limits.aio.strategies import MovingWindowRateLimiter
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from ledgerline.domain.errors import InvalidArgumentError, RateLimitedError
from ledgerline.domain.user import Email
from ledgerline.platform.client_address import IPAddress
from ledgerline.platform.deadline import remaining
from ledgerline.platform.logging import Logger, get_logger

# After a failure, Redis is asked again only this much later, by one call
# at a time; the others pass unchecked at once instead of each waiting out
# the timeout.
BACK_OFF_SECONDS = 1.0
# IPv6 clients get a /64 each from their provider and may use any address
# in it: a limit per address would be a limit per nothing.
IPV6_PREFIX = 64
# Storage errors that mean "not now" (a timeout is an OSError too).
_STORAGE_ERRORS = (RedisError, OSError)


def parse_limits(text: str) -> tuple[limits.RateLimitItem, ...]:
    """``"10/minute"``, or several at once, all of which apply:
    ``"10/minute;60/hour"`` (``per`` and ``,`` work too). ValueError when
    it is not that, or a limit lets nothing through."""
    try:
        items = tuple(limits.parse_many(text))
    except ValueError:
        raise ValueError(
            f"must be limits such as '10/minute' or '10/minute;60/hour', not {text!r}"
        ) from None
    if any(item.amount < 1 for item in items):
        raise ValueError("a limit must let at least 1 call through")
    return items


@dataclass(frozen=True, slots=True)
class RateLimitRules:
    login_per_email: tuple[limits.RateLimitItem, ...]
    login_per_address: tuple[limits.RateLimitItem, ...]
    register_per_address: tuple[limits.RateLimitItem, ...]

    @classmethod
    def parse(
        cls, *, login_per_email: str, login_per_address: str, register_per_address: str
    ) -> RateLimitRules:
        return cls(
            parse_limits(login_per_email),
            parse_limits(login_per_address),
            parse_limits(register_per_address),
        )


class RateLimitObserver(Protocol):
    """What the limiter reports (to metrics)."""

    def refused(self, limit: str) -> None: ...

    def unchecked(self) -> None: ...


class RateLimiter:
    """``check_login`` and ``check_registration`` return when the call may
    go on, and raise RateLimitedError (with the seconds until it may be
    tried again) when it is over a limit. Without storage (limits turned
    off) they return at once."""

    def __init__(
        self,
        storage: Storage | None,
        rules: RateLimitRules,
        *,
        timeout: float,
        pool: redis.ConnectionPool | None = None,
        logger: Logger | None = None,
        back_off: float = BACK_OFF_SECONDS,
        pepper: bytes = b"",
    ) -> None:
        """``pepper``: the key of the hash emails are counted under, so that
        whoever reads the storage cannot test guessed addresses against it."""
        self._pepper = pepper
        self._window = None if storage is None else MovingWindowRateLimiter(storage)
        self._rules = rules
        self._timeout = timeout
        self._pool = pool
        self._log = logger or get_logger("ledgerline.ratelimit")
        self._observer: RateLimitObserver | None = None
        self._back_off = back_off
        self._failing_since: float | None = None
        self._retry_after_failure_at = 0.0
        self._probing = False

    @classmethod
    def disabled(cls) -> RateLimiter:
        return cls(None, RateLimitRules((), (), ()), timeout=1.0)

    @classmethod
    def in_memory(cls, rules: RateLimitRules, *, timeout: float) -> RateLimiter:
        """Counts kept by this process alone: with N processes, a client
        may get up to N times each limit."""
        return cls(MemoryStorage(), rules, timeout=timeout)

    @classmethod
    def on_redis(
        cls,
        url: str,
        rules: RateLimitRules,
        *,
        timeout: float,
        key_prefix: str,
        back_off: float = BACK_OFF_SECONDS,
        pepper: bytes = b"",
    ) -> RateLimiter:
        """Counts shared through the Redis at ``url`` (redis://, rediss:// or
        unix://), under keys that start with ``key_prefix``. Connects on
        first use; no command is retried (the limiter's own timeout and
        back-off decide)."""
        pool = redis.ConnectionPool.from_url(
            url, socket_connect_timeout=timeout, retry=Retry(NoBackoff(), 0)
        )
        scheme, _, rest = url.partition("://")
        storage_uri = f"async+{'redis+unix' if scheme == 'unix' else scheme}://{rest}"
        storage = RedisStorage(
            storage_uri,
            implementation="redispy",
            key_prefix=key_prefix,
            # Typed narrowly by limits, but handed to redis.asyncio.Redis.
            connection_pool=pool,  # type: ignore[arg-type]
        )
        return cls(storage, rules, timeout=timeout, pool=pool, back_off=back_off, pepper=pepper)

    def observe(self, observer: RateLimitObserver) -> None:
        """Reports refusals and unchecked calls to ``observer`` from now on."""
        self._observer = observer

    async def check_login(self, email: str, address: IPAddress | None) -> None:
        """A login for ``email`` from ``address`` (None: unknown, and then
        only the email's limits apply). The address is counted first, so a
        client over its own limit does not use up the email's."""
        if address is not None:
            await self._hit(
                "login_per_address", self._rules.login_per_address, address_key(address)
            )
        await self._hit(
            "login_per_email", self._rules.login_per_email, email_key(email, self._pepper)
        )

    async def check_registration(self, address: IPAddress | None) -> None:
        if address is not None:
            rules = self._rules.register_per_address
            await self._hit("register_per_address", rules, address_key(address))

    async def _hit(self, name: str, items: tuple[limits.RateLimitItem, ...], subject: str) -> None:
        window = self._window
        if window is None or not items:
            return
        probing = self._failing_since is not None
        if probing and (self._probing or time.monotonic() < self._retry_after_failure_at):
            # The storage is failing: after the back-off, one call at a
            # time asks it again (half-open); the others pass at once.
            self._unchecked()
            return
        if probing:
            self._probing = True
        # The limiter's own timeout, or what remains of the request's
        # deadline when that is shorter: passing that is the request's
        # timeout (504), not the storage's fault.
        left = remaining()
        request_bound = left is not None and left < self._timeout
        try:
            async with asyncio.timeout(left if request_bound else self._timeout):
                retry_after = await self._refusal(window, name, items, subject)
        except TimeoutError as exc:
            if request_bound:
                raise
            self._storage_failed(exc)
            return
        except _STORAGE_ERRORS as exc:
            self._storage_failed(exc)
            return
        finally:
            if probing:
                self._probing = False
        self._storage_answered()
        if retry_after is not None:
            if self._observer is not None:
                self._observer.refused(name)
            raise RateLimitedError(retry_after_seconds=retry_after)

    async def _refusal(
        self,
        window: MovingWindowRateLimiter,
        name: str,
        items: tuple[limits.RateLimitItem, ...],
        subject: str,
    ) -> int | None:
        """Counts the call in each limit, in order, up to the first that
        refuses it; None, or the seconds until that one lets a call through."""
        for item in items:
            if not await window.hit(item, name, subject):
                return await self._retry_after(window, item, name, subject)
        return None

    @staticmethod
    async def _retry_after(
        window: MovingWindowRateLimiter, item: limits.RateLimitItem, name: str, subject: str
    ) -> int:
        """Whole seconds until the oldest call in the window leaves it."""
        stats = await window.get_window_stats(item, name, subject)
        return max(1, math.ceil(stats.reset_time - time.time()))

    def _unchecked(self) -> None:
        if self._observer is not None:
            self._observer.unchecked()

    def _storage_failed(self, exc: BaseException) -> None:
        self._unchecked()
        self._retry_after_failure_at = time.monotonic() + self._back_off
        if self._failing_since is None:
            self._failing_since = time.monotonic()
            self._log.warning(
                "rate limits unchecked: their storage does not answer; calls pass until it does",
                error=repr(exc),
            )

    def _storage_answered(self) -> None:
        if self._failing_since is not None:
            self._log.info(
                "rate limits checked again",
                unchecked_for_seconds=round(time.monotonic() - self._failing_since, 1),
            )
            self._failing_since = None

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.aclose()
            self._pool = None


def email_key(email: str, pepper: bytes = b"") -> str:
    """One key per address however it is spelled (the domain's key: case,
    Unicode normalisation, IDNA), hashed with the key ``pepper`` (HMAC-SHA256)
    so that Redis holds no emails, nor anything a guessed one can be checked
    against without the pepper."""
    try:
        key = Email.parse(email).key
    except InvalidArgumentError:  # a login with it fails, but it still counts
        key = unicodedata.normalize("NFC", email.strip()).lower()
    digest = hmac.new(pepper, key.encode("utf-8", "surrogatepass"), hashlib.sha256)
    return digest.hexdigest()[:32]


def address_key(address: IPAddress) -> str:
    if isinstance(address, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((address, IPV6_PREFIX), strict=False))
    return str(address)
