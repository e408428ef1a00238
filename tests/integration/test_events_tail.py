"""`ledgerline events tail`: the latest events as CloudEvents, then, when
following, every later one once, one that commits late included."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

import asyncpg
import pytest
from cloudevents.core.formats.json import JSONFormat

from ledgerline.domain.events import UserRegistered
from ledgerline.main.core import Core
from ledgerline.main.events import tail_events
from ledgerline.repository.postgres.outbox import PostgresOutbox
from ledgerline.repository.postgres.unit_of_work import PostgresUnitOfWorkFactory

pytestmark = pytest.mark.timeout(60)


def _registered(name: str) -> UserRegistered:
    return UserRegistered(
        occurred_at=datetime.now(UTC),
        user_id=uuid.uuid4(),
        email="a@b.c",
        name=name,
        is_admin=False,
    )


async def _record(pool: asyncpg.Pool, *names: str) -> None:
    uow = PostgresUnitOfWorkFactory(pool)
    for name in names:
        async with uow() as tx:
            await tx.outbox.add(_registered(name))
            await tx.commit()


def _names(lines: list[str]) -> list[str]:
    names = []
    for line in lines:
        event = JSONFormat().read(None, line)
        data = event.get_data()
        assert isinstance(data, dict)
        names.append(data["name"])
    return names


async def test_tail_prints_the_latest_events_oldest_first(core: Core, pool: asyncpg.Pool) -> None:
    await _record(pool, "one", "two", "three")
    lines: list[str] = []

    await tail_events(core, 2, follow=False, poll_seconds=0.05, write=lines.append)

    assert _names(lines) == ["two", "three"]


async def test_following_prints_each_later_event_once_a_late_commit_included(
    core: Core, pool: asyncpg.Pool
) -> None:
    await _record(pool, "before")
    lines: list[str] = []
    following = asyncio.create_task(
        tail_events(core, 5, follow=True, poll_seconds=0.05, write=lines.append)
    )
    try:
        async with pool.acquire() as conn:
            tx = conn.transaction()
            await tx.start()
            await PostgresOutbox(conn).add(_registered("late"))  # takes its seq first
            await _record(pool, "after")
            await asyncio.sleep(0.3)
            await tx.commit()
        await asyncio.sleep(0.3)
    finally:
        following.cancel()
        with pytest.raises(asyncio.CancelledError):
            await following

    assert _names(lines) == ["before", "after", "late"]
