"""The transport-free core: pools, repositories and use cases built from
Settings, and torn down again. Every process (the servers, the CLI's
commands) builds one; none of it knows HTTP or gRPC.

    async with Core(settings, runtime) as core:
        await core.users.get_me(...)
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from types import TracebackType
from typing import TypeVar

import asyncpg
import redis.asyncio as redis
from opentelemetry.instrumentation.redis import RedisInstrumentor
from redis.exceptions import AuthenticationError as RedisAuthenticationError
from redis.exceptions import RedisError

from ledgerline.config import Settings
from ledgerline.domain.ports import Clock, LockManager, PasswordHasher
from ledgerline.main.runtime import Runtime
from ledgerline.platform.clock import SystemClock
from ledgerline.platform.database import create_pool, ping
from ledgerline.platform.health import Probe, Readiness
from ledgerline.platform.locks import PostgresLockManager, RedisLockManager
from ledgerline.platform.logging import Logger, get_logger
from ledgerline.platform.metrics import BusinessMetrics
from ledgerline.platform.passwords import Argon2Hasher, Argon2Params
from ledgerline.platform.ratelimit import RateLimiter, RateLimitRules
from ledgerline.platform.supervisor import EXIT_CONFIG, EXIT_UNAVAILABLE
from ledgerline.platform.tokens import JWTIssuer
from ledgerline.platform.tracing import TracedLockManager, Tracing, traced_methods
from ledgerline.repository.postgres.executor import Database
from ledgerline.repository.postgres.idempotency import PostgresIdempotencyStore
from ledgerline.repository.postgres.ledger import PostgresLedgerRepository
from ledgerline.repository.postgres.orders import PostgresOrderRepository
from ledgerline.repository.postgres.outbox import PostgresOutboxStore
from ledgerline.repository.postgres.settlements import PostgresSettlements
from ledgerline.repository.postgres.unit_of_work import PostgresUnitOfWorkFactory
from ledgerline.repository.postgres.users import PostgresUserRepository
from ledgerline.usecase.expiry import OrderExpiry
from ledgerline.usecase.payments import PaymentService, PaymentSettings
from ledgerline.usecase.retention import Retention
from ledgerline.usecase.users import UserService


@dataclass
class Overrides:
    """Parts a test may swap in one line."""

    clock: Clock | None = None
    hasher: PasswordHasher | None = None
    locks: LockManager | None = None


_T = TypeVar("_T")


class NotStartedError(RuntimeError):
    """A part of the core was used before start() or after stop()."""


@dataclass
class Core:
    """Go's ``NewApplication``: ``start()`` builds the graph (raising what a
    dependency that does not answer, or refuses, raises), ``stop()`` tears
    it down and may be called after a partial start. Also an async context
    manager doing both."""

    settings: Settings
    runtime: Runtime
    overrides: Overrides = field(default_factory=Overrides)
    # False: users only (a CLI command), without the lock service.
    with_payments: bool = True
    # The process's tracing (platform/tracing.py); None: nothing is traced.
    tracing: Tracing | None = None
    # Where the use cases' outcomes are counted; None: they are not.
    metrics: BusinessMetrics | None = None

    _pool: asyncpg.Pool | None = None
    _readiness: Readiness | None = None
    _outbox: PostgresOutboxStore | None = None
    _expiry: OrderExpiry | None = None
    _retention: Retention | None = None
    _users: UserService | None = None
    _payments: PaymentService | None = None
    _executor: ThreadPoolExecutor | None = None
    _redis: redis.Redis | None = None
    _lock_pool: asyncpg.Pool | None = None
    _rate_limiter: RateLimiter | None = None

    @property
    def users(self) -> UserService:
        return _started(self._users)

    @property
    def payments(self) -> PaymentService:
        return _started(self._payments)

    @property
    def outbox(self) -> PostgresOutboxStore:
        """The relay's side of the outbox."""
        return _started(self._outbox)

    @property
    def expiry(self) -> OrderExpiry:
        return _started(self._expiry)

    @property
    def retention(self) -> Retention:
        return _started(self._retention)

    @property
    def rate_limiter(self) -> RateLimiter:
        """One per process, shared by its transports."""
        return _started(self._rate_limiter)

    @property
    def database_pools(self) -> dict[str, asyncpg.Pool]:
        """The PostgreSQL pools by name, for their gauges: ``queries``, and
        ``locks`` when the payment locks are advisory locks."""
        pools = {"queries": _started(self._pool)}
        if self._lock_pool is not None:
            pools["locks"] = self._lock_pool
        return pools

    @property
    def readiness(self) -> Readiness:
        """The dependencies' probes: what /readyz and gRPC health report."""
        return _started(self._readiness)

    async def __aenter__(self) -> Core:
        try:
            await self.start()
        except BaseException:
            await self.stop()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        s = self.settings
        self._pool = pool = await create_pool(
            self.runtime.database_url,
            min_size=s.db_pool_min_size,
            max_size=s.db_pool_max_size,
            command_timeout=s.request_timeout_seconds,
        )
        # With a pool that opens nothing at first (min size 0), this is where
        # a database that refuses the configuration is found out.
        await ping(pool)
        probes: dict[str, Probe] = {"database": lambda: ping(pool)}
        clock = self.overrides.clock or SystemClock()
        tracer = self.tracing.tracer if self.tracing is not None else None
        db = Database(pool, tracer)
        uow = PostgresUnitOfWorkFactory(pool, tracer)
        users = PostgresUserRepository(db)
        self._users = traced_methods(
            UserService(
                users=users,
                uow=uow,
                hasher=self.overrides.hasher or self._argon2(),
                tokens=JWTIssuer(self.runtime.jwt_secret, s.jwt_ttl_seconds, clock),
                clock=clock,
            ),
            tracer,
            "UserService",
        )
        if self.metrics is not None:
            m = self.metrics
            self.metrics.count_outcomes(
                self._users,
                {"register": (m.registrations, "registered"), "authenticate": (m.logins, "ok")},
            )
        self._outbox = outbox = PostgresOutboxStore(db)
        self._expiry = traced_methods(
            OrderExpiry(uow=uow, clock=clock, ttl=s.order_ttl), tracer, "OrderExpiry"
        )
        self._retention = traced_methods(
            Retention(
                idempotency=PostgresIdempotencyStore(db),
                outbox=outbox,
                clock=clock,
                outbox_retention=timedelta(hours=s.outbox_retention_hours),
                events_are_published=s.event_bus_url is not None,
            ),
            tracer,
            "Retention",
        )
        if self.with_payments:
            await self._start_payments(db, uow, users, clock, probes)
        self._rate_limiter = self._build_rate_limiter()
        # Probes end well inside the request's deadline, so that a database
        # that does not answer is a 503 naming it, never a bare 504.
        self._readiness = Readiness(probes, timeout=min(2.0, s.request_timeout_seconds / 2))

    async def _start_payments(
        self,
        db: Database,
        uow: PostgresUnitOfWorkFactory,
        users: PostgresUserRepository,
        clock: Clock,
        probes: dict[str, Probe],
    ) -> None:
        s = self.settings
        locks = self.overrides.locks or await self._lock_manager(probes)
        if self.metrics is not None:
            locks = self.metrics.count_lock_failures(locks)
        if db.tracer is not None:
            locks = TracedLockManager(locks, db.tracer)
        self._payments = traced_methods(
            PaymentService(
                users=users,
                orders=PostgresOrderRepository(db),
                ledger=PostgresLedgerRepository(db),
                idempotency=PostgresIdempotencyStore(db),
                settlements=PostgresSettlements(db),
                uow=uow,
                locks=locks,
                clock=clock,
                settings=PaymentSettings(
                    lock_ttl_seconds=s.payment_lock_ttl_ms / 1000,
                    idempotency_retention=timedelta(hours=s.idempotency_retention_hours),
                ),
            ),
            db.tracer,
            "PaymentService",
        )
        if self.metrics is not None:
            m = self.metrics
            m.count_outcomes(
                self._payments,
                {
                    "process_payment": (m.payments, "paid"),
                    "refund": (m.refunds, "refunded"),
                    "credit": (m.credits, "credited"),
                },
            )

    def _argon2(self) -> Argon2Hasher:
        s = self.settings
        self._executor = ThreadPoolExecutor(s.hash_workers, thread_name_prefix="argon2")
        params = Argon2Params(s.argon2_time_cost, s.argon2_memory_kib, s.argon2_parallelism)
        return Argon2Hasher(params, self._executor)

    def _build_rate_limiter(self) -> RateLimiter:
        """In Redis when it is configured, so that every process and machine
        shares the counts; it is not a readiness probe: the limiter passes
        calls while Redis is down (see platform/ratelimit.py)."""
        s = self.settings
        if not s.rate_limits_enabled:
            return RateLimiter.disabled()
        rules = RateLimitRules.parse(
            login_per_email=s.rate_limit_login_per_email,
            login_per_address=s.rate_limit_login_per_address,
            register_per_address=s.rate_limit_register_per_address,
        )
        if s.redis_url is None:
            return RateLimiter.in_memory(rules, timeout=s.rate_limit_timeout_seconds)
        return RateLimiter.on_redis(
            s.redis_url,
            rules,
            timeout=s.rate_limit_timeout_seconds,
            key_prefix=s.rate_limit_key_prefix,
            # Shared by every serving process (the JWT secret must be), and
            # derived, so that neither key says anything of the other.
            pepper=hmac.digest(
                self.runtime.jwt_secret.encode(), b"ledgerline rate-limit keys", "sha256"
            ),
        )

    async def _lock_manager(self, probes: dict[str, Probe]) -> LockManager:
        s = self.settings
        if s.redis_url is not None:
            # No socket timeout: every lock command has an asyncio timeout
            # of its own (platform/locks.py), and the probe its own too.
            self._redis = client = redis.Redis.from_url(
                s.redis_url, socket_timeout=None, socket_connect_timeout=2
            )
            probes["redis"] = client.ping
            if self.tracing is not None:
                RedisInstrumentor().instrument_client(client, tracer_provider=self.tracing.provider)
            await _check_redis(client)
            return RedisLockManager(client)
        # Advisory locks hold a connection each: a pool of their own keeps
        # them from starving the queries.
        self._lock_pool = await create_pool(
            self.runtime.database_url,
            min_size=0,
            max_size=s.db_pool_max_size,
            command_timeout=s.request_timeout_seconds,
            full_reset=True,  # a lease lost mid-way must not leave its lock held
        )
        return PostgresLockManager(self._lock_pool)

    async def stop(self) -> None:
        payments = self._payments
        self._users = self._payments = self._readiness = None
        self._outbox = self._expiry = self._retention = None
        if payments is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(5):
                    await payments.settle()  # before the lock service goes
        for pool in (self._lock_pool, self._pool):
            if pool is not None:
                try:
                    await asyncio.wait_for(pool.close(), timeout=5)
                except TimeoutError:
                    pool.terminate()
        self._pool = self._lock_pool = None
        if self._redis is not None:
            await self._redis.aclose()
            self._redis = None
        if self._rate_limiter is not None:
            await self._rate_limiter.close()
            self._rate_limiter = None
        if self._executor is not None:
            # No hash is in flight once the server has drained; don't block the loop.
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None


async def _check_redis(client: redis.Redis) -> None:
    """Redis connects on first use: ask it once at start so that a refused
    password stops the process (it never would serve a payment). Redis not
    answering is no reason not to start: payments answer 503 until it does,
    and readiness names it."""
    try:
        async with asyncio.timeout(2):
            await client.ping()
    except RedisAuthenticationError:
        raise
    except (RedisError, OSError, TimeoutError) as exc:
        get_logger("ledgerline.core").warning(
            "Redis does not answer; payments answer 503 until it does", error=repr(exc)
        )


# What a database or Redis that does not answer raises while the pools and
# clients are built.
STARTUP_ERRORS = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, RedisError)
# Of those, the answers that retrying will not change: the credentials or the
# database name are wrong.
REFUSED_CONFIGURATION = (
    asyncpg.InvalidAuthorizationSpecificationError,
    asyncpg.InvalidCatalogNameError,
    RedisAuthenticationError,
)


async def start_unless_stopped(core: Core, stop: asyncio.Event, log: Logger) -> int | None:
    """Starts the core, unless ``stop`` is set first: a stop while the
    dependencies are still being reached (a database that drops packets
    takes a minute to time out) ends the start-up at once. None once
    started; otherwise the process's exit code, the core stopped again."""
    starting = asyncio.create_task(core.start())
    stopped = asyncio.create_task(stop.wait())
    await asyncio.wait({starting, stopped}, return_when=asyncio.FIRST_COMPLETED)
    if not starting.done():
        starting.cancel()
        with contextlib.suppress(asyncio.CancelledError, *STARTUP_ERRORS):
            await starting
        await core.stop()
        log.info("stopped before starting")
        return 0
    stopped.cancel()
    try:
        starting.result()
    except REFUSED_CONFIGURATION as exc:
        log.error("could not start: a dependency refused the configuration", error=repr(exc))
        await core.stop()
        return EXIT_CONFIG
    except STARTUP_ERRORS as exc:
        # One line, not a traceback: the operator's problem is the address.
        log.error("could not start: a dependency does not answer", error=repr(exc))
        await core.stop()
        return EXIT_UNAVAILABLE
    return None


def _started(part: _T | None) -> _T:
    if part is None:
        raise NotStartedError("the core is not started")
    return part
