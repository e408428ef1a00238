"""The composition root: the only module that knows every layer. It turns
Settings into a running object graph and tears it down again."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import secrets
import signal
import socket
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import asyncpg
import redis.asyncio as redis
import uvloop
from redis.exceptions import AuthenticationError as RedisAuthenticationError
from redis.exceptions import RedisError
from starlette.types import ASGIApp

from ledgerline.config import ConfigError, Settings
from ledgerline.delivery.http.app import HTTPDependencies, create_http_app
from ledgerline.delivery.http.protocol import ConnectionLimits
from ledgerline.delivery.http.server import HTTPServer, bind_socket
from ledgerline.domain.ports import Clock, LockManager, PasswordHasher
from ledgerline.platform.clock import SystemClock
from ledgerline.platform.database import EmbeddedPostgres, create_pool, migrate, ping
from ledgerline.platform.health import Probe, Readiness
from ledgerline.platform.limits import raise_open_file_limit
from ledgerline.platform.locks import PostgresLockManager, RedisLockManager
from ledgerline.platform.logging import configure_logging, get_logger
from ledgerline.platform.metrics import HTTPMetrics
from ledgerline.platform.passwords import Argon2Hasher, Argon2Params
from ledgerline.platform.periodic import Periodic
from ledgerline.platform.supervisor import (
    EXIT_CONFIG,
    EXIT_UNAVAILABLE,
    Supervisor,
    hold_stop_signals,
    release_stop_signals,
)
from ledgerline.platform.tokens import JWTIssuer
from ledgerline.repository.postgres.idempotency import PostgresIdempotencyStore
from ledgerline.repository.postgres.ledger import PostgresLedgerRepository
from ledgerline.repository.postgres.orders import PostgresOrderRepository
from ledgerline.repository.postgres.unit_of_work import PostgresUnitOfWorkFactory
from ledgerline.repository.postgres.users import PostgresUserRepository
from ledgerline.usecase.payments import PaymentService, PaymentSettings
from ledgerline.usecase.users import UserService

JWT_SECRET_FILE = "jwt_secret"  # noqa: S105 - a file name, not a secret


@dataclass
class Runtime:
    """What `serve` and the CLI resolve once per machine before any worker
    starts: where the database is and which secret signs tokens."""

    database_url: str
    jwt_secret: str
    embedded: EmbeddedPostgres | None = None

    def close(self) -> None:
        if self.embedded is not None:
            self.embedded.stop()
            self.embedded = None


def prepare_runtime(settings: Settings, *, run_migrations: bool) -> Runtime:
    """Starts the embedded PostgreSQL when no database is configured (and
    then always migrates it), and loads or makes the JWT secret."""
    log = get_logger("ledgerline.app")
    embedded = None
    if settings.database_url is None:
        embedded = EmbeddedPostgres(settings.data_dir)
        database_url = embedded.start()
        run_migrations = True
    else:
        database_url = settings.database_url
    try:
        if run_migrations:
            migrate(database_url)
        secret = _jwt_secret(settings)
    except BaseException:
        if embedded is not None:
            embedded.stop()
        raise
    if embedded is not None:
        log.info("using the embedded PostgreSQL", data_dir=str(settings.data_dir))
    return Runtime(database_url, secret, embedded)


MIN_SECRET_LENGTH = 32


def _jwt_secret(settings: Settings) -> str:
    if settings.jwt_secret is not None:
        return settings.jwt_secret.get_secret_value()
    path: Path = settings.data_dir / JWT_SECRET_FILE
    if not path.exists():
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        # Written whole to a file of its own, then linked into place: the
        # link fails if another process got there first, and a reader never
        # sees a half-written secret. Both then use the one that is there.
        draft = path.with_name(f".{JWT_SECRET_FILE}.{os.getpid()}.{secrets.token_hex(4)}")
        try:
            fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(secrets.token_urlsafe(48))
                handle.flush()
                os.fsync(handle.fileno())
            os.link(draft, path)
            get_logger("ledgerline.app").warning(
                "LEDGERLINE_JWT_SECRET is not set: made a new secret and kept it in the data "
                "directory",
                path=str(path),
            )
        except FileExistsError:
            pass
        finally:
            draft.unlink(missing_ok=True)
    secret = path.read_text().strip()
    if len(secret) < MIN_SECRET_LENGTH:
        raise ConfigError(
            f"{path}: the kept JWT secret is shorter than {MIN_SECRET_LENGTH} characters; "
            "delete the file to make a new one, or set LEDGERLINE_JWT_SECRET"
        )
    return secret


@dataclass
class Overrides:
    """Parts a test may swap in one line."""

    clock: Clock | None = None
    hasher: PasswordHasher | None = None
    locks: LockManager | None = None


@dataclass
class Application:
    settings: Settings
    runtime: Runtime
    overrides: Overrides = field(default_factory=Overrides)

    pool: asyncpg.Pool | None = None
    readiness: Readiness | None = None
    users: UserService | None = None
    payments: PaymentService | None = None
    http: ASGIApp | None = None
    _executor: ThreadPoolExecutor | None = None
    _redis: redis.Redis | None = None
    _lock_pool: asyncpg.Pool | None = None
    _jobs: list[Periodic] = field(default_factory=list)

    async def start(self) -> None:
        s = self.settings
        self.pool = pool = await create_pool(
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
        uow = PostgresUnitOfWorkFactory(pool)
        users = PostgresUserRepository(pool)
        self.users = UserService(
            users=users,
            uow=uow,
            hasher=self.overrides.hasher or self._argon2(),
            tokens=JWTIssuer(self.runtime.jwt_secret, s.jwt_ttl_seconds, clock),
            clock=clock,
        )
        locks = self.overrides.locks or await self._lock_manager(probes)
        self.payments = PaymentService(
            users=users,
            orders=PostgresOrderRepository(pool),
            ledger=PostgresLedgerRepository(pool),
            idempotency=PostgresIdempotencyStore(pool),
            uow=uow,
            locks=locks,
            clock=clock,
            settings=PaymentSettings(
                lock_ttl_seconds=s.payment_lock_ttl_ms / 1000,
                idempotency_retention=timedelta(hours=s.idempotency_retention_hours),
            ),
        )
        # Probes end well inside the request's deadline, so that a database
        # that does not answer is a 503 naming it, never a bare 504.
        self.readiness = Readiness(probes, timeout=min(2.0, s.request_timeout_seconds / 2))
        self.http = create_http_app(
            HTTPDependencies(
                users=self.users,
                payments=self.payments,
                readiness=self.readiness,
                metrics=HTTPMetrics(),
                logger=get_logger("ledgerline.http"),
                request_timeout=s.request_timeout_seconds,
            )
        )

    def start_jobs(self) -> None:
        """Background upkeep of a serving process (the worker process of a
        later release takes these over)."""
        assert self.payments is not None
        purge = Periodic(
            "purge-idempotency-keys",
            self.settings.idempotency_purge_interval_seconds,
            self.payments.purge_idempotency_keys,
            # It shares the pool with the requests: held to their deadline,
            # it cannot keep a connection stuck longer than they do. What a
            # run leaves undone (it deletes in batches), the next run does.
            timeout=self.settings.request_timeout_seconds,
        )
        purge.start()
        self._jobs.append(purge)

    def _argon2(self) -> Argon2Hasher:
        s = self.settings
        self._executor = ThreadPoolExecutor(s.hash_workers, thread_name_prefix="argon2")
        params = Argon2Params(s.argon2_time_cost, s.argon2_memory_kib, s.argon2_parallelism)
        return Argon2Hasher(params, self._executor)

    async def _lock_manager(self, probes: dict[str, Probe]) -> LockManager:
        s = self.settings
        if s.redis_url is not None:
            self._redis = client = redis.Redis.from_url(
                s.redis_url, socket_timeout=2, socket_connect_timeout=2
            )
            probes["redis"] = client.ping
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
        for job in self._jobs:
            await job.stop()
        self._jobs.clear()
        if self.payments is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(5):
                    await self.payments.settle()  # before the lock service goes
        for pool in (self._lock_pool, self.pool):
            if pool is not None:
                try:
                    await asyncio.wait_for(pool.close(), timeout=5)
                except TimeoutError:
                    pool.terminate()
        self.pool = self._lock_pool = None
        if self._redis is not None:
            await self._redis.aclose()
            self._redis = None
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
        get_logger("ledgerline.app").warning(
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


def serve(settings: Settings, workers: int) -> int:
    """`ledgerline serve`: resolve the runtime once, bind the port once, then
    serve in this process or in ``workers`` processes sharing the socket."""
    raise_open_file_limit(settings.http_max_connections)  # workers inherit it
    runtime = prepare_runtime(settings, run_migrations=False)
    try:
        sock = bind_socket(settings.http_host, settings.http_port)
        try:
            args = (settings, runtime.database_url, runtime.jwt_secret, sock)
            if workers == 1:
                return 0 if run_worker(*args) == 0 else 1
            budget = settings.shutdown_drain_seconds + settings.shutdown_timeout_seconds
            supervisor = Supervisor(worker_main, args, workers, budget)
            return supervisor.run()
        finally:
            sock.close()
    finally:
        runtime.close()


GC_YOUNG_THRESHOLD = 10_000  # allocations between young-generation collections


def worker_main(
    settings: Settings, database_url: str, jwt_secret: str, sock: socket.socket
) -> None:
    """Entry point of a worker process (spawned: it starts from scratch)."""
    hold_stop_signals()
    configure_logging(settings.log_level, settings.log_format)
    sys.exit(run_worker(settings, database_url, jwt_secret, sock))


def run_worker(settings: Settings, database_url: str, jwt_secret: str, sock: socket.socket) -> int:
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(_serve(Application(settings, Runtime(database_url, jwt_secret)), sock))


def connection_limits(settings: Settings) -> ConnectionLimits:
    return ConnectionLimits(
        max_header_bytes=settings.http_max_header_bytes,
        max_headers=settings.http_max_headers,
        header_timeout=settings.http_header_timeout_seconds,
        keepalive_timeout=settings.http_keepalive_timeout_seconds,
        max_connections=settings.http_max_connections,
    )


async def _serve(app: Application, sock: socket.socket) -> int:
    log = get_logger("ledgerline.app")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    release_stop_signals()  # a stop held back during start-up lands now
    # A stop while the dependencies are still being reached (a database that
    # drops packets takes a minute to time out) ends the start-up at once.
    starting = asyncio.create_task(app.start())
    stopped = asyncio.create_task(stop.wait())
    await asyncio.wait({starting, stopped}, return_when=asyncio.FIRST_COMPLETED)
    if not starting.done():
        starting.cancel()
        with contextlib.suppress(asyncio.CancelledError, *STARTUP_ERRORS):
            await starting
        await app.stop()
        log.info("stopped before serving")
        return 0
    stopped.cancel()
    try:
        starting.result()
    except REFUSED_CONFIGURATION as exc:
        log.error("could not start: a dependency refused the configuration", error=repr(exc))
        await app.stop()
        return EXIT_CONFIG
    except STARTUP_ERRORS as exc:
        # One line, not a traceback: the operator's problem is the address.
        log.error("could not start: a dependency does not answer", error=repr(exc))
        await app.stop()
        return EXIT_UNAVAILABLE
    app.start_jobs()
    # Everything built so far lives as long as the process: keep it out of
    # the garbage collector's scans (fewer, shorter pauses under load).
    gc.freeze()
    # Each request allocates a few hundred objects, nearly all freed by
    # reference counting; at the default threshold (700) a collection ran
    # every few requests and cost about 6 % of a request's CPU.
    gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])
    try:
        assert app.http is not None
        assert app.readiness is not None
        server = HTTPServer(
            app.http,
            sock,
            readiness=app.readiness,
            shutdown_timeout=app.settings.shutdown_timeout_seconds,
            drain_seconds=app.settings.shutdown_drain_seconds,
            limits=connection_limits(app.settings),
        )
        await server.start()
        stopped = asyncio.create_task(stop.wait())
        serving = asyncio.create_task(server.wait())
        await asyncio.wait({stopped, serving}, return_when=asyncio.FIRST_COMPLETED)
        stopped.cancel()
        log.info("shutting down", deadline_seconds=app.settings.shutdown_timeout_seconds)
        await server.shutdown()
    finally:
        await app.stop()
    log.info("stopped")
    return 0
