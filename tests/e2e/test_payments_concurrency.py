"""Many concurrent pay calls for one order, spread over two `ledgerline
serve` processes that share the database and the lock service: exactly one
payment, balances exact."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from itertools import cycle

import httpx
import pytest

from tests.conftest import require_redis
from tests.e2e.conftest import JWT_SECRET, LEDGERLINE, Service, clean_env

pytestmark = pytest.mark.e2e
StartService = Callable[..., Service]
CALLS = 40
CREDIT = 10_000
PRICE = 1_299
PASSWORD = "password123"


@dataclass
class Market:
    services: list[Service]
    client: httpx.AsyncClient
    admin: dict[str, str]
    payer: dict[str, str]
    payee: dict[str, str]
    order_id: str

    async def balance(self, auth: dict[str, str]) -> int:
        wallet = await self.client.get(f"{self.services[0].base_url}/v1/wallet", headers=auth)
        amounts = {b["currency"]: b["amount"] for b in wallet.json()["balances"]}
        return int(amounts.get("EUR", 0))


async def _login(client: httpx.AsyncClient, base: str, email: str, password: str) -> dict[str, str]:
    token = await client.post(f"{base}/v1/auth/token", json={"email": email, "password": password})
    assert token.status_code == 200, token.text
    return {"Authorization": f"Bearer {token.json()['access_token']}"}


async def _open_market(
    start_service: StartService, database_url: str, lock_env: dict[str, str]
) -> Market:
    env = {"LEDGERLINE_DATABASE_URL": database_url, "LEDGERLINE_JWT_SECRET": JWT_SECRET}
    made = await asyncio.to_thread(
        subprocess.run,
        [
            LEDGERLINE,
            "users",
            "create-admin",
            "--email",
            "ops@example.com",
            "--name",
            "Ops",
            "--password-stdin",
        ],
        input=f"{PASSWORD}\n",
        env=clean_env(**env),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert made.returncode == 0, made.stderr
    services = [start_service(**env, **lock_env) for _ in range(2)]
    base = services[0].base_url
    client = httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=CALLS * 2))
    ids = {}
    for name in ("payer", "payee"):
        created = await client.post(
            f"{base}/v1/users",
            json={"email": f"{name}@example.com", "password": PASSWORD, "name": name},
        )
        assert created.status_code == 201, created.text
        ids[name] = created.json()["id"]
    admin = await _login(client, base, "ops@example.com", PASSWORD)
    payer = await _login(client, base, "payer@example.com", PASSWORD)
    payee = await _login(client, base, "payee@example.com", PASSWORD)
    credit = await client.post(
        f"{base}/v1/admin/credits",
        json={"user_id": ids["payer"], "amount": CREDIT, "currency": "EUR"},
        headers={**admin, "Idempotency-Key": "top-up-1"},
    )
    assert credit.status_code == 201, credit.text
    order = await client.post(
        f"{base}/v1/orders",
        json={"payee_id": ids["payee"], "amount": PRICE, "currency": "EUR"},
        headers=payer,
    )
    assert order.status_code == 201, order.text
    return Market(services, client, admin, payer, payee, order.json()["id"])


def _lock_env(backend: str, redis_url: str | None) -> dict[str, str]:
    if backend == "redis":
        return {"LEDGERLINE_REDIS_URL": require_redis(redis_url)}
    return {}


@pytest.mark.parametrize("backend", ["redis", "postgres"], ids=["redis-locks", "advisory-locks"])
@pytest.mark.parametrize("shared_key", [False, True], ids=["distinct-keys", "one-key"])
async def test_concurrent_pays_charge_once(
    start_service: StartService,
    database_url: str,
    redis_url: str | None,
    backend: str,
    shared_key: bool,
) -> None:
    market = await _open_market(start_service, database_url, _lock_env(backend, redis_url))
    targets = cycle(market.services)
    try:

        async def pay(i: int) -> httpx.Response:
            key = "the-one-key" if shared_key else f"pay-key-{i}"
            return await market.client.post(
                f"{next(targets).base_url}/v1/orders/{market.order_id}/pay",
                headers={**market.payer, "Idempotency-Key": key},
            )

        responses = await asyncio.gather(*(pay(i) for i in range(CALLS)))
        ok = [r for r in responses if r.status_code == 200]
        refused = [r for r in responses if r.status_code == 409]
        assert len(ok) + len(refused) == CALLS, [r.status_code for r in responses]
        if shared_key:
            # Every 200 is the first answer replayed; the rest were in flight.
            assert ok, "no call succeeded"
            assert len({r.content for r in ok}) == 1
            assert {r.json()["code"] for r in refused} <= {"payment_in_progress"}
        else:
            assert len(ok) == 1
            assert {r.json()["code"] for r in refused} <= {
                "payment_in_progress",
                "failed_precondition",
            }
        assert ok[0].json()["status"] == "paid"
        assert await market.balance(market.payer) == CREDIT - PRICE
        assert await market.balance(market.payee) == PRICE
        order = await market.client.get(
            f"{market.services[1].base_url}/v1/orders/{market.order_id}", headers=market.payer
        )
        assert order.json()["status"] == "paid"
    finally:
        await market.client.aclose()
