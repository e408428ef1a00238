"""The request deadline holds when the database freezes.

A real `ledgerline serve` on the test's own PostgreSQL, which the test
freezes (SIGSTOP: its sockets stay open and nothing answers). Every request
caught by the freeze, whether it was in flight or arrived afterwards, and
whatever it was waiting on (a free connection, a new one, a query, a commit,
a rollback, a lock), is answered by its deadline plus a small margin. After
the thaw the same process serves again and the books are exact."""

from __future__ import annotations

import asyncio
import functools
import subprocess
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import asyncpg
import httpx
import pytest

from tests.conftest import require_redis
from tests.e2e.conftest import JWT_SECRET, LEDGERLINE, Service, clean_env
from tests.own_postgres import OwnPostgres

pytestmark = pytest.mark.e2e
StartService = Callable[..., Service]

DEADLINE = 2.0  # LEDGERLINE_REQUEST_TIMEOUT_SECONDS
# What the answer may take past the deadline: clean-up is bounded, and the
# test's client and a 2-core machine shared with others need some slack.
MARGIN = 1.5
ORDERS = 20
PRICE = 100
CREDIT = ORDERS * PRICE
PASSWORD = "password123"
# What a request caught by the freeze may answer: 504 once its deadline is
# out; 503 where the service knows sooner that the database is not there
# (readiness: its probe ends at half the deadline).
FROZEN_ANSWERS = {(504, "deadline_exceeded"), (503, "unavailable")}


@dataclass
class Shop:
    service: Service
    client: httpx.AsyncClient
    database_url: str
    payer: dict[str, str]
    payee_id: str
    orders: list[str]

    @property
    def base(self) -> str:
        return self.service.base_url


@dataclass(frozen=True)
class Answer:
    request: str
    status: int
    code: str | None
    seconds: float


async def _create_admin(database_url: str) -> None:
    command = ["users", "create-admin", "--email", "ops@example.com", "--name", "Ops"]
    made = await asyncio.to_thread(
        subprocess.run,
        [LEDGERLINE, *command, "--password-stdin"],
        input=f"{PASSWORD}\n",
        env=clean_env(LEDGERLINE_DATABASE_URL=database_url, LEDGERLINE_JWT_SECRET=JWT_SECRET),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert made.returncode == 0, made.stderr


async def _login(client: httpx.AsyncClient, base: str, email: str) -> dict[str, str]:
    token = await client.post(f"{base}/v1/auth/token", json={"email": email, "password": PASSWORD})
    assert token.status_code == 200, token.text
    return {"Authorization": f"Bearer {token.json()['access_token']}"}


async def _open_shop(
    start_service: StartService, own_postgres: OwnPostgres, lock_env: dict[str, str]
) -> Shop:
    """A service, a payer with money, a payee and ORDERS pending orders."""
    database_url = await asyncio.to_thread(own_postgres.create_database)
    await _create_admin(database_url)
    service = start_service(
        LEDGERLINE_DATABASE_URL=database_url,
        LEDGERLINE_JWT_SECRET=JWT_SECRET,
        LEDGERLINE_REQUEST_TIMEOUT_SECONDS=str(DEADLINE),
        # Few connections kept open: requests caught by the freeze need new
        # ones, and more of them than the pool holds queue for one.
        LEDGERLINE_DB_POOL_MIN_SIZE="1",
        LEDGERLINE_DB_POOL_MAX_SIZE="8",
        LEDGERLINE_ARGON2_TIME_COST="1",
        LEDGERLINE_ARGON2_MEMORY_KIB=str(8 * 1024),
        **lock_env,
    )
    client = httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=200))
    base = service.base_url
    ids = {}
    for name in ("payer", "payee"):
        created = await client.post(
            f"{base}/v1/users",
            json={"email": f"{name}@example.com", "password": PASSWORD, "name": name},
        )
        assert created.status_code == 201, created.text
        ids[name] = created.json()["id"]
    admin = await _login(client, base, "ops@example.com")
    payer = await _login(client, base, "payer@example.com")
    credit = await client.post(
        f"{base}/v1/admin/credits",
        json={"user_id": ids["payer"], "amount": CREDIT, "currency": "EUR"},
        headers={**admin, "Idempotency-Key": "top-up"},
    )
    assert credit.status_code == 201, credit.text
    orders = []
    for _ in range(ORDERS):
        order = await _create_order(client, base, payer, ids["payee"])
        assert order.status_code == 201, order.text
        orders.append(order.json()["id"])
    return Shop(service, client, database_url, payer, ids["payee"], orders)


async def _create_order(
    client: httpx.AsyncClient, base: str, payer: dict[str, str], payee_id: str
) -> httpx.Response:
    return await client.post(
        f"{base}/v1/orders",
        json={"payee_id": payee_id, "amount": PRICE, "currency": "EUR"},
        headers=payer,
    )


async def _pay(shop: Shop, order_id: str) -> httpx.Response:
    return await shop.client.post(
        f"{shop.base}/v1/orders/{order_id}/pay",
        headers={**shop.payer, "Idempotency-Key": f"pay-{order_id}"},
    )


async def _timed(request: str, call: Awaitable[httpx.Response]) -> Answer:
    started = time.monotonic()
    response = await call
    seconds = time.monotonic() - started
    code = response.json().get("code") if response.status_code >= 400 else None
    return Answer(request, response.status_code, code, seconds)


def _burst(shop: Shop) -> list[Awaitable[Answer]]:
    """Every kind of request: pays (order read, key lookup, lock, row lock,
    ledger writes, commit), wallet reads, new orders, readiness."""
    base, payer = shop.base, shop.payer
    return [
        *(_timed("pay", _pay(shop, order_id)) for order_id in shop.orders),
        *(_timed("wallet", shop.client.get(f"{base}/v1/wallet", headers=payer)) for _ in range(5)),
        *(
            _timed("new order", _create_order(shop.client, base, payer, shop.payee_id))
            for _ in range(5)
        ),
        *(_timed("readiness", shop.client.get(f"{base}/readyz")) for _ in range(2)),
    ]


async def _warm_up(shop: Shop) -> None:
    """Fills the service's pools with open connections, so that the freeze
    finds requests on connections that were working a moment before."""
    reads = [shop.client.get(f"{shop.base}/v1/wallet", headers=shop.payer) for _ in range(16)]
    assert {r.status_code for r in await asyncio.gather(*reads)} == {200}


async def _freeze_during(own_postgres: OwnPostgres, burst: list[Awaitable[Answer]]) -> list[Answer]:
    """The burst is on its way, some of it at the database, when it freezes."""
    tasks = [asyncio.ensure_future(call) for call in burst]
    await asyncio.sleep(0.03)  # some are sent, some are at the database
    own_postgres.freeze()
    return list(await asyncio.gather(*tasks))


async def _freeze_before(own_postgres: OwnPostgres, burst: list[Awaitable[Answer]]) -> list[Answer]:
    """The burst arrives at a frozen database: its pool's connections are
    stuck and new ones are never answered."""
    own_postgres.freeze()
    return list(await asyncio.gather(*burst))


async def _until(
    call: Callable[[], Awaitable[httpx.Response]], ok: int, within: float
) -> httpx.Response:
    """Retries ``call`` until it answers ``ok``; the last answer otherwise."""
    give_up = time.monotonic() + within
    while True:
        response = await call()
        if response.status_code == ok or time.monotonic() > give_up:
            return response
        await asyncio.sleep(0.2)


async def _assert_books_exact(database_url: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        paid_twice = await conn.fetch(
            "SELECT order_id FROM transfers WHERE kind = 'payment' "
            "GROUP BY order_id HAVING count(*) > 1"
        )
        assert paid_twice == []
        # A balance is the sum of its account's entries, and money is conserved.
        off = await conn.fetch(
            "SELECT a.id FROM accounts a LEFT JOIN ledger_entries e ON e.account_id = a.id "
            "GROUP BY a.id, a.balance HAVING a.balance <> coalesce(sum(e.amount), 0)"
        )
        assert off == []
        assert await conn.fetchval("SELECT coalesce(sum(balance), 0) FROM accounts") == 0
        # Paid orders and payment transfers are the same set.
        mismatched = await conn.fetchval(
            "SELECT count(*) FROM orders o FULL JOIN transfers t "
            "ON t.order_id = o.id AND t.kind = 'payment' "
            "WHERE (o.status = 'paid') <> (t.id IS NOT NULL)"
        )
        assert mismatched == 0
    finally:
        await conn.close()


def _lock_env(backend: str, redis_url: str | None) -> dict[str, str]:
    if backend == "redis":
        return {"LEDGERLINE_REDIS_URL": require_redis(redis_url)}
    return {}


Freeze = Callable[[OwnPostgres, list[Awaitable[Answer]]], Awaitable[list[Answer]]]


@pytest.mark.parametrize("backend", ["postgres", "redis"], ids=["advisory-locks", "redis-locks"])
@pytest.mark.parametrize(
    "freeze",
    [_freeze_during, _freeze_before],
    ids=["requests-in-flight", "requests-arriving"],
)
async def test_a_frozen_database_is_answered_at_the_deadline_and_served_after_the_thaw(
    start_service: StartService,
    own_postgres: OwnPostgres,
    redis_url: str | None,
    backend: str,
    freeze: Freeze,
) -> None:
    shop = await _open_shop(start_service, own_postgres, _lock_env(backend, redis_url))
    try:
        await _warm_up(shop)
        answers = await freeze(own_postgres, _burst(shop))
        timings = sorted(round(a.seconds, 2) for a in answers)
        print(f"answers under the freeze ({freeze.__name__}, {backend}): seconds {timings}")

        late = [a for a in answers if a.seconds > DEADLINE + MARGIN]
        assert late == [], f"answered after deadline + margin: {late}"
        caught = [a for a in answers if a.status >= 300]
        assert caught, "the freeze caught no request"
        unexpected = [a for a in caught if (a.status, a.code) not in FROZEN_ANSWERS]
        assert unexpected == []
        # Readiness names the database: its probe ends inside the deadline.
        probes = [(a.status, a.code) for a in caught if a.request == "readiness"]
        assert set(probes) <= {(503, "unavailable")}, probes
        if freeze is _freeze_before:
            assert caught == answers, "a request was answered by a frozen database"

        own_postgres.thaw()
        ready = await _until(lambda: shop.client.get(f"{shop.base}/readyz"), 200, within=10)
        assert ready.status_code == 200, ready.text
        # Every pay retried with its key ends paid, exactly once.
        for order_id in shop.orders:
            paid = await _until(functools.partial(_pay, shop, order_id), 200, within=15)
            assert paid.status_code == 200, paid.text
            assert paid.json()["status"] == "paid"
        wallet = await shop.client.get(f"{shop.base}/v1/wallet", headers=shop.payer)
        assert wallet.status_code == 200
        assert wallet.json()["balances"] == [{"currency": "EUR", "amount": 0}]
        await _assert_books_exact(shop.database_url)
        assert shop.service.proc.poll() is None, "the service restarted or died"
    finally:
        await shop.client.aclose()
