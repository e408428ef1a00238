"""The use cases' outcomes as /metrics counts them: payments, refunds and
credits by outcome (replays included), lock acquisitions that found the
lock taken, idempotency replays, registrations and logins by outcome; every
request over the real API and database, each counted once."""

from __future__ import annotations

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from ledgerline.main.core import Core, Overrides
from ledgerline.main.runtime import Runtime
from ledgerline.main.serve import http_app
from ledgerline.platform.metrics import BusinessMetrics, HTTPMetrics
from ledgerline.usecase.users import Registration
from tests.fakes import InMemoryLocks
from tests.integration.conftest import JWT_SECRET, PASSWORD, cheap_settings

pytestmark = pytest.mark.timeout(120)


def _counts(text: str) -> dict[tuple[str, str], float]:
    counts: dict[tuple[str, str], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.endswith("_total"):
                counts[(sample.name, sample.labels.get("outcome", ""))] = sample.value
    return counts


async def test_each_outcome_is_counted_once_under_its_label(database_url: str) -> None:
    metrics = HTTPMetrics()
    locks = InMemoryLocks()
    core = Core(
        cheap_settings(),
        Runtime(database_url, JWT_SECRET),
        Overrides(locks=locks),
        metrics=BusinessMetrics(metrics.registry),
    )
    async with (
        core,
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=http_app(core, metrics)), base_url="http://test"
        ) as client,
    ):

        async def register(email: str) -> int:
            body = {"email": email, "password": PASSWORD, "name": "N"}
            return (await client.post("/v1/users", json=body)).status_code

        async def login(email: str, password: str = PASSWORD) -> dict[str, str]:
            answer = await client.post(
                "/v1/auth/token", json={"email": email, "password": password}
            )
            if answer.status_code != 200:
                return {}
            return {"Authorization": f"Bearer {answer.json()['access_token']}"}

        async def post(path: str, auth: dict[str, str], key: str, **body: object) -> int:
            answer = await client.post(path, json=body, headers={**auth, "Idempotency-Key": key})
            return answer.status_code

        assert await register("alice@example.com") == 201
        assert await register("bob@example.com") == 201
        assert await register("alice@example.com") == 409
        await core.users.create_admin(Registration("ops@example.com", PASSWORD, "Ops"))
        admin, alice, bob = [await login(f"{n}@example.com") for n in ("ops", "alice", "bob")]
        assert await login("alice@example.com", "wrong password!") == {}
        me = (await client.get("/v1/users/me", headers=alice)).json()["id"]
        bob_id = (await client.get("/v1/users/me", headers=bob)).json()["id"]

        credit = {"user_id": me, "amount": 1_000, "currency": "EUR"}
        assert await post("/v1/admin/credits", admin, "c1", **credit) == 201
        assert await post("/v1/admin/credits", admin, "c1", **credit) == 201  # replayed

        async def order(amount: int) -> str:
            body = {"payee_id": bob_id, "amount": amount, "currency": "EUR"}
            answer = await client.post("/v1/orders", json=body, headers=alice)
            assert answer.status_code == 201, answer.text
            return str(answer.json()["id"])

        first, second, third = await order(600), await order(600), await order(100)
        assert await post(f"/v1/orders/{first}/pay", alice, "p1") == 200
        assert await post(f"/v1/orders/{first}/pay", alice, "p1") == 200  # replayed
        assert await post(f"/v1/orders/{first}/pay", alice, "p2") == 409  # already paid
        assert await post(f"/v1/orders/{second}/pay", alice, "p3") == 402
        assert await post(f"/v1/orders/{second}/pay", alice, "p1") == 422  # mismatch
        assert await locks.try_acquire(f"payment-lock-{third}", 60) is not None
        assert await post(f"/v1/orders/{third}/pay", alice, "p4") == 409  # in progress
        assert await post(f"/v1/orders/{first}/refund", bob, "r1") == 200

        counts = _counts((await client.get("/metrics")).text)

    expected = {
        ("ledgerline_registrations_total", "registered"): 2,
        ("ledgerline_registrations_total", "conflict"): 1,
        ("ledgerline_logins_total", "ok"): 3,
        ("ledgerline_logins_total", "unauthenticated"): 1,
        ("ledgerline_credits_total", "credited"): 1,
        ("ledgerline_credits_total", "replayed"): 1,
        ("ledgerline_payments_total", "paid"): 1,
        ("ledgerline_payments_total", "replayed"): 1,
        ("ledgerline_payments_total", "failed_precondition"): 1,
        ("ledgerline_payments_total", "insufficient_funds"): 1,
        ("ledgerline_payments_total", "mismatch"): 1,
        ("ledgerline_payments_total", "in_progress"): 1,
        ("ledgerline_refunds_total", "refunded"): 1,
        ("ledgerline_idempotency_replays_total", ""): 2,
        ("ledgerline_lock_acquire_failures_total", ""): 1,
    }
    business = {
        key: value
        for key, value in counts.items()
        if not key[0].startswith(("ledgerline_http", "ledgerline_grpc"))
    }
    assert business == expected
