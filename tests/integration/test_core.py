"""The transport-free core: built from Settings without any server, and
torn down again, whole or after a failed start."""

from __future__ import annotations

import asyncpg
import pytest

from ledgerline.main.core import Core, NotStartedError
from ledgerline.main.runtime import Runtime
from ledgerline.usecase.users import Registration
from tests.conftest import with_database
from tests.integration.conftest import JWT_SECRET, PASSWORD, cheap_settings


async def test_a_core_serves_the_use_cases_without_a_transport(database_url: str) -> None:
    async with Core(cheap_settings(), Runtime(database_url, JWT_SECRET)) as core:
        made = await core.users.create_admin(Registration("core@example.com", PASSWORD, "Core"))
        issued = await core.users.authenticate("core@example.com", PASSWORD)
        caller = core.users.principal_from_token(issued.token)
        assert (await core.users.get_me(caller)).id == made.user.id
        assert core.payments is not None
        assert await core.readiness.check() == {"database": "ok"}


async def test_a_users_only_core_builds_no_payments(database_url: str) -> None:
    """What `users create-admin` builds: users, not the lock service."""
    settings = cheap_settings(redis_url="redis://127.0.0.1:1/0")  # would not answer
    async with Core(settings, Runtime(database_url, JWT_SECRET), with_payments=False) as core:
        await core.users.create_admin(Registration("only@example.com", PASSWORD, "Only"))
        with pytest.raises(NotStartedError):
            _ = core.payments
        assert await core.readiness.check() == {"database": "ok"}  # Redis never asked


async def test_a_stopped_core_refuses_to_be_used(database_url: str) -> None:
    async with Core(cheap_settings(), Runtime(database_url, JWT_SECRET)) as core:
        pass
    with pytest.raises(NotStartedError):
        _ = core.users


async def test_a_failed_start_leaves_nothing_open(pg_server_url: str) -> None:
    """The database is refused half-way through: what was built is torn down
    and the driver's error is what the caller sees."""
    missing = with_database(pg_server_url, "ledgerline_no_such_database")
    core = Core(cheap_settings(), Runtime(missing, JWT_SECRET))
    with pytest.raises(asyncpg.InvalidCatalogNameError):
        async with core:
            pass
    with pytest.raises(NotStartedError):
        _ = core.users
