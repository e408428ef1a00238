"""Migrations as a stairway: each revision upgrades, downgrades and upgrades
again on a real database, so every downgrade is known to work."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import asyncpg
from alembic.script import ScriptDirectory

from ledgerline.platform.database import alembic_config, downgrade, migrate


def _revisions(url: str) -> list[str]:
    script = ScriptDirectory.from_config(alembic_config(url))
    return [rev.revision for rev in reversed(list(script.walk_revisions()))]


async def _tables(url: str) -> set[str]:
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        return {row["tablename"] for row in rows}
    finally:
        await conn.close()


async def test_stairway(empty_database_url: str) -> None:
    url = empty_database_url
    revisions = _revisions(url)
    assert revisions, "no migrations found"
    previous = "base"
    for revision in revisions:
        await asyncio.to_thread(migrate, url, revision)
        await asyncio.to_thread(downgrade, url, previous)
        await asyncio.to_thread(migrate, url, revision)
        previous = revision
    assert "users" in await _tables(url)
    await asyncio.to_thread(downgrade, url, "base")
    assert await _tables(url) == {"alembic_version"}


async def test_concurrent_migrate_commands_all_succeed(empty_database_url: str) -> None:
    """`ledgerline migrate` run by several processes at once, then again."""
    env = {**os.environ, "LEDGERLINE_DATABASE_URL": empty_database_url}
    ledgerline = str(Path(sys.executable).with_name("ledgerline"))

    async def run() -> int:
        proc = await asyncio.create_subprocess_exec(
            ledgerline, "migrate", env=env, stdout=asyncio.subprocess.DEVNULL
        )
        return await proc.wait()

    assert list(await asyncio.gather(run(), run(), run())) == [0, 0, 0]
    assert await run() == 0
    assert "users" in await _tables(empty_database_url)
