"""The database, not the code, decides between registrations that race."""

from __future__ import annotations

import asyncio

import asyncpg
import httpx
import pytest

RACERS = 16


@pytest.mark.parametrize(
    "emails",
    [
        pytest.param(["race@example.com"] * RACERS, id="same-spelling"),
        pytest.param(
            [f"{'RACE' if i % 2 else 'race'}@Example.com" for i in range(RACERS)],
            id="differing-case",
        ),
    ],
)
async def test_one_registration_wins(
    client: httpx.AsyncClient, pool: asyncpg.Pool, emails: list[str]
) -> None:
    async def register(email: str) -> httpx.Response:
        return await client.post(
            "/v1/users", json={"email": email, "password": "password123", "name": "Racer"}
        )

    responses = await asyncio.gather(*(register(email) for email in emails))
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [201] + [409] * (RACERS - 1)
    assert all(r.json()["code"] == "conflict" for r in responses if r.status_code == 409)
    assert await pool.fetchval("SELECT count(*) FROM users") == 1
