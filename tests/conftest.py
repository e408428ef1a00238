"""Shared fixtures. Integration and end-to-end tests run against a real
PostgreSQL: LEDGERLINE_TEST_DATABASE_URL when set, else an embedded server
this test session starts itself. Each test gets a database of its own,
cloned from a template that the migrations built once per session."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
import redis

from ledgerline.platform.database import EmbeddedPostgres, migrate
from ledgerline.platform.eventbus import EventBusSettings
from tests.event_stream import Bus
from tests.own_postgres import own_postgres, own_postgres_template  # noqa: F401 - fixtures

TEST_DATABASE_ENV = "LEDGERLINE_TEST_DATABASE_URL"
TEST_REDIS_ENV = "LEDGERLINE_TEST_REDIS_URL"
TEST_NATS_ENV = "LEDGERLINE_TEST_NATS_URL"


def with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}"))


async def _admin_execute(server_url: str, *statements: str) -> None:
    conn = await asyncpg.connect(server_url)
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def pg_server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A URL to a PostgreSQL server's maintenance database."""
    configured = os.environ.get(TEST_DATABASE_ENV)
    if configured:
        yield configured
        return
    embedded = EmbeddedPostgres(Path(tmp_path_factory.mktemp("embedded-pg")))
    try:
        yield embedded.start()
    finally:
        embedded.stop()


@pytest.fixture(scope="session")
def template_database(pg_server_url: str) -> Iterator[str]:
    """A database migrated to head, used as the template for each test's."""
    name = f"ledgerline_tpl_{uuid.uuid4().hex[:12]}"
    asyncio.run(_admin_execute(pg_server_url, f'CREATE DATABASE "{name}"'))
    try:
        migrate(with_database(pg_server_url, name))
        yield name
    finally:
        asyncio.run(_admin_execute(pg_server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
async def empty_database_url(pg_server_url: str) -> AsyncIterator[str]:
    """A fresh database with no schema at all (for migration tests)."""
    name = f"ledgerline_test_{uuid.uuid4().hex[:12]}"
    await _admin_execute(pg_server_url, f'CREATE DATABASE "{name}"')
    try:
        yield with_database(pg_server_url, name)
    finally:
        await _admin_execute(pg_server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
async def database_url(pg_server_url: str, template_database: str) -> AsyncIterator[str]:
    """A migrated database owned by one test, dropped after it."""
    name = f"ledgerline_test_{uuid.uuid4().hex[:12]}"
    await _admin_execute(pg_server_url, f'CREATE DATABASE "{name}" TEMPLATE "{template_database}"')
    try:
        yield with_database(pg_server_url, name)
    finally:
        await _admin_execute(pg_server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _start_local_server(
    name: str, args: Callable[[int], list[str]], scheme: str
) -> tuple[subprocess.Popen[bytes], str] | None:
    """The program ``name`` from PATH, listening on a free loopback port
    (``args(port)`` tells it so), once it accepts connections; None when
    it is not on PATH or does not come up."""
    binary = shutil.which(name)
    if binary is None:
        return None
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen(
        [binary, *args(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return proc, f"{scheme}://127.0.0.1:{port}"
        time.sleep(0.05)
    proc.kill()
    return None


def _configured_or_started(
    variable: str,
    start: Callable[[Path], tuple[subprocess.Popen[bytes], str] | None],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[str | None]:
    """The URL in ``variable`` when set; else that of a server started for
    the session (stopped after it), or None when none could be started."""
    configured = os.environ.get(variable)
    if configured:
        yield configured
        return
    started = start(tmp_path_factory.mktemp(variable.lower()))
    if started is None:
        yield None
        return
    proc, url = started
    try:
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


def _start_redis_server(tmp: Path) -> tuple[subprocess.Popen[bytes], str] | None:
    started = _start_local_server(
        "redis-server",
        lambda port: [
            *("--port", str(port), "--bind", "127.0.0.1", "--save", ""),
            *("--appendonly", "no", "--dir", str(tmp)),
        ],
        "redis",
    )
    return None if started is None else (started[0], f"{started[1]}/0")


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str | None]:
    """LEDGERLINE_TEST_REDIS_URL when set, else a redis-server this session
    starts (when one is on PATH), else None: Redis-backed cases then skip,
    saying why, and the PostgreSQL lock adapter is tested alone."""
    yield from _configured_or_started(TEST_REDIS_ENV, _start_redis_server, tmp_path_factory)


def _start_nats_server(tmp: Path) -> tuple[subprocess.Popen[bytes], str] | None:
    return _start_local_server(
        "nats-server",
        lambda port: ["-js", "-a", "127.0.0.1", "-p", str(port), "-sd", str(tmp)],
        "nats",
    )


@pytest.fixture(scope="session")
def nats_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str | None]:
    """LEDGERLINE_TEST_NATS_URL when set (a NATS with JetStream), else a
    `nats-server -js` this session starts (when one is on PATH), else None:
    the tests that need the bus then skip, saying why. Each test works in a
    stream and subjects of its own."""
    yield from _configured_or_started(TEST_NATS_ENV, _start_nats_server, tmp_path_factory)


def require_nats(nats_url: str | None) -> str:
    if nats_url is None:
        pytest.skip(f"no NATS: {TEST_NATS_ENV} is unset and no nats-server is on PATH")
    return nats_url


@pytest.fixture
def bus(nats_url: str | None) -> Iterator[Bus]:
    """A JetStream stream (and subjects) of the test's own, deleted after it."""
    url = require_nats(nats_url)
    tag = uuid.uuid4().hex[:10]
    settings = EventBusSettings(url=url, stream=f"TEST_{tag}", subject_prefix=f"t{tag}.events")
    yield Bus(url, settings)
    asyncio.run(Bus(url, settings).delete())


def delete_redis_keys(url: str, prefix: str) -> None:
    """What a test wrote to the shared Redis under its own key prefix."""
    client = redis.Redis.from_url(url)
    try:
        keys = list(client.scan_iter(match=f"{prefix}:*"))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


def require_redis(redis_url: str | None) -> str:
    if redis_url is None:
        pytest.skip(
            f"no Redis: {TEST_REDIS_ENV} is unset and no redis-server is on PATH; "
            "only the PostgreSQL lock adapter is tested"
        )
    return redis_url


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=20)
    try:
        yield pool
    finally:
        await pool.close()
