"""Shared fixtures. Integration and end-to-end tests run against a real
PostgreSQL: LEDGERLINE_TEST_DATABASE_URL when set, else an embedded server
this test session starts itself. Each test gets a database of its own,
cloned from a template that the migrations built once per session."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from ledgerline.platform.database import EmbeddedPostgres, migrate

TEST_DATABASE_ENV = "LEDGERLINE_TEST_DATABASE_URL"


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


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=20)
    try:
        yield pool
    finally:
        await pool.close()
