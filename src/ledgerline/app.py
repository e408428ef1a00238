"""The composition root: the only module that knows every layer. It turns
Settings into a running object graph and tears it down again."""

from __future__ import annotations

import asyncio
import secrets
import signal
import socket
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import uvloop
from starlette.types import ASGIApp

from ledgerline.config import Settings
from ledgerline.delivery.http.app import HTTPDependencies, create_http_app
from ledgerline.delivery.http.server import HTTPServer, bind_socket
from ledgerline.domain.ports import Clock, PasswordHasher
from ledgerline.platform.clock import SystemClock
from ledgerline.platform.database import EmbeddedPostgres, create_pool, migrate
from ledgerline.platform.health import Readiness
from ledgerline.platform.logging import configure_logging, get_logger
from ledgerline.platform.metrics import HTTPMetrics
from ledgerline.platform.passwords import Argon2Hasher, Argon2Params
from ledgerline.platform.supervisor import Supervisor
from ledgerline.platform.tokens import JWTIssuer
from ledgerline.repository.postgres.unit_of_work import PostgresUnitOfWorkFactory
from ledgerline.repository.postgres.users import PostgresUserRepository
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


def _jwt_secret(settings: Settings) -> str:
    if settings.jwt_secret is not None:
        return settings.jwt_secret.get_secret_value()
    path: Path = settings.data_dir / JWT_SECRET_FILE
    if path.exists():
        return path.read_text().strip()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_urlsafe(48)
    # O_EXCL: if two processes race, one writes and both read the winner's.
    try:
        with path.open("x") as handle:
            path.chmod(0o600)
            handle.write(secret)
    except FileExistsError:
        return path.read_text().strip()
    get_logger("ledgerline.app").warning(
        "LEDGERLINE_JWT_SECRET is not set: made a new secret and kept it in the data directory",
        path=str(path),
    )
    return secret


@dataclass
class Overrides:
    """Parts a test may swap in one line."""

    clock: Clock | None = None
    hasher: PasswordHasher | None = None


@dataclass
class Application:
    settings: Settings
    runtime: Runtime
    overrides: Overrides = field(default_factory=Overrides)

    pool: asyncpg.Pool | None = None
    readiness: Readiness | None = None
    users: UserService | None = None
    http: ASGIApp | None = None
    _executor: ThreadPoolExecutor | None = None

    async def start(self) -> None:
        s = self.settings
        log = get_logger("ledgerline.app")
        self.pool = await create_pool(
            self.runtime.database_url,
            min_size=s.db_pool_min_size,
            max_size=s.db_pool_max_size,
            command_timeout=s.request_timeout_seconds,
        )
        clock = self.overrides.clock or SystemClock()
        hasher = self.overrides.hasher
        if hasher is None:
            self._executor = ThreadPoolExecutor(s.hash_workers, thread_name_prefix="argon2")
            params = Argon2Params(s.argon2_time_cost, s.argon2_memory_kib, s.argon2_parallelism)
            hasher = Argon2Hasher(params, self._executor)
        self.users = UserService(
            users=PostgresUserRepository(self.pool),
            uow=PostgresUnitOfWorkFactory(self.pool),
            hasher=hasher,
            tokens=JWTIssuer(self.runtime.jwt_secret, s.jwt_ttl_seconds, clock),
            clock=clock,
        )
        pool = self.pool
        self.readiness = Readiness({"database": lambda: pool.fetchval("SELECT 1")})
        self.http = create_http_app(
            HTTPDependencies(
                users=self.users,
                readiness=self.readiness,
                metrics=HTTPMetrics(),
                logger=get_logger("ledgerline.http"),
                request_timeout=s.request_timeout_seconds,
            )
        )
        log.debug("application started")

    async def stop(self) -> None:
        if self.pool is not None:
            try:
                await asyncio.wait_for(self.pool.close(), timeout=5)
            except TimeoutError:
                self.pool.terminate()
            self.pool = None
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None


def serve(settings: Settings, workers: int) -> int:
    """`ledgerline serve`: resolve the runtime once, bind the port once, then
    serve in this process or in ``workers`` processes sharing the socket."""
    runtime = prepare_runtime(settings, run_migrations=False)
    try:
        sock = bind_socket(settings.http_host, settings.http_port)
        try:
            args = (settings, runtime.database_url, runtime.jwt_secret, sock)
            if workers == 1:
                return run_worker(*args)
            supervisor = Supervisor(worker_main, args, workers, settings.shutdown_timeout_seconds)
            return supervisor.run()
        finally:
            sock.close()
    finally:
        runtime.close()


def worker_main(
    settings: Settings, database_url: str, jwt_secret: str, sock: socket.socket
) -> None:
    """Entry point of a worker process (spawned: it starts from scratch)."""
    configure_logging(settings.log_level, settings.log_format)
    sys.exit(run_worker(settings, database_url, jwt_secret, sock))


def run_worker(settings: Settings, database_url: str, jwt_secret: str, sock: socket.socket) -> int:
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(_serve(Application(settings, Runtime(database_url, jwt_secret)), sock))


async def _serve(app: Application, sock: socket.socket) -> int:
    log = get_logger("ledgerline.app")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await app.start()
    try:
        assert app.http is not None
        assert app.readiness is not None
        server = HTTPServer(
            app.http,
            sock,
            readiness=app.readiness,
            shutdown_timeout=app.settings.shutdown_timeout_seconds,
            drain_seconds=app.settings.shutdown_drain_seconds,
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
