"""The test-owned PostgreSQL server does what fault tests rely on."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from tests.own_postgres import OwnPostgres


async def _select_one(url: str, seconds: float) -> int:
    conn = await asyncpg.connect(url, timeout=seconds)
    try:
        return int(await conn.fetchval("SELECT 1", timeout=seconds))
    finally:
        conn.terminate()


async def test_it_serves_a_migrated_database_over_loopback_tcp(own_postgres: OwnPostgres) -> None:
    url = await asyncio.to_thread(own_postgres.create_database)
    assert url.startswith(f"postgresql://postgres@127.0.0.1:{own_postgres.port}/")
    conn = await asyncpg.connect(url)
    try:
        assert await conn.fetchval("SELECT to_regclass('ledger_entries') IS NOT NULL")
    finally:
        await conn.close()


async def test_a_stopped_server_starts_again_on_its_port_with_its_data(
    own_postgres: OwnPostgres,
) -> None:
    url = await asyncio.to_thread(own_postgres.create_database, "kept")
    port = own_postgres.port
    await asyncio.to_thread(own_postgres.stop)
    with pytest.raises(ConnectionRefusedError):
        await _select_one(url, seconds=2)
    await asyncio.to_thread(own_postgres.start)
    assert own_postgres.port == port
    assert await _select_one(url, seconds=5) == 1


async def test_a_frozen_server_answers_nothing_until_thawed(own_postgres: OwnPostgres) -> None:
    conn = await asyncpg.connect(own_postgres.url)
    try:
        own_postgres.freeze()
        # Neither an open connection nor a new one gets an answer.
        with pytest.raises(TimeoutError):
            await conn.fetchval("SELECT 1", timeout=0.5)
        with pytest.raises(TimeoutError):
            await _select_one(own_postgres.url, seconds=0.5)
        own_postgres.thaw()
        assert await _select_one(own_postgres.url, seconds=5) == 1
    finally:
        conn.terminate()
