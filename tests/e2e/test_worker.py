"""`ledgerline worker` processes beside `ledgerline serve`, against the real
database and a real NATS JetStream: every event arrives once, as a
CloudEvent, under an id that survives a restart, in its aggregate's order,
whatever happens to the bus or to the workers."""

from __future__ import annotations

import asyncio
import itertools
import socket
import subprocess
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import urlsplit

import asyncpg
import httpx
import pytest
from cloudevents.core.formats.json import JSONFormat

from tests.e2e.conftest import JWT_SECRET, LEDGERLINE, Service, Worker, clean_env
from tests.event_stream import Bus, in_aggregate_order
from tests.tcp_proxy import TcpProxy

pytestmark = pytest.mark.timeout(240)
PASSWORD = "correct horse battery"


class StartService(Protocol):
    def __call__(self, *args: str, **env: str) -> Service: ...


class StartWorker(Protocol):
    def __call__(self, **env: str) -> Worker: ...


async def _until(done: Callable[[], Awaitable[bool]], timeout: float = 60) -> None:  # noqa: ASYNC109
    async with asyncio.timeout(timeout):
        while not await done():  # noqa: ASYNC110 - polling processes and a database
            await asyncio.sleep(0.1)


async def _all_published(pool: asyncpg.Pool) -> bool:
    left = await pool.fetchval("SELECT count(*) FROM outbox WHERE state <> 'published'")
    return bool(left == 0)


async def _holds_at_least(bus: Bus, count: int) -> bool:
    return await bus.count() >= count


async def _record(pool: asyncpg.Pool, aggregates: int, each: int) -> int:
    """``aggregates`` times ``each`` events, interleaved as a busy service
    records them, numbered and counted as the outbox adapter does."""
    await pool.execute(
        """
        WITH aggregates AS (SELECT gen_random_uuid() AS id FROM generate_series(1, $1)),
        numbered AS (
            INSERT INTO outbox_versions (aggregate_type, aggregate_id, version)
            SELECT 'user', id, $2 FROM aggregates RETURNING aggregate_id
        )
        INSERT INTO outbox
            (id, type, subject, aggregate_type, aggregate_id, version, payload, occurred_at)
        SELECT gen_random_uuid(), 'user.registered', 'users/' || a.aggregate_id, 'user',
               a.aggregate_id, v, jsonb_build_object('n', v), now()
        FROM numbered a, generate_series(1, $2) v
        ORDER BY v, a.aggregate_id
        """,
        aggregates,
        each,
    )
    return aggregates * each


async def _stream_matches_outbox(pool: asyncpg.Pool, bus: Bus) -> None:
    """Every event in the stream once, under its id, in its aggregate's order."""
    messages = await bus.messages()
    ids = [event.get_id() for _, _, event in messages]
    rows = await pool.fetch("SELECT id FROM outbox")
    assert len(ids) == len(set(ids))
    assert sorted(ids) == sorted(str(r["id"]) for r in rows)
    assert in_aggregate_order(messages)


def _cli(*args: str, env: dict[str, str], stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [LEDGERLINE, *args],
        input=stdin,
        env=clean_env(**env),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@dataclass
class Shop:
    """A served API with an admin and two users, for traffic."""

    client: httpx.AsyncClient
    base: str
    admin: dict[str, str]
    users: dict[str, tuple[str, dict[str, str]]]  # name: (id, auth)
    keys: itertools.count[int]

    async def credit(self, name: str, amount: int) -> None:
        response = await self.client.post(
            f"{self.base}/v1/admin/credits",
            json={"user_id": self.users[name][0], "amount": amount, "currency": "EUR"},
            headers={**self.admin, "Idempotency-Key": f"credit-{next(self.keys)}"},
        )
        assert response.status_code == 201, response.text

    async def order(self, payer: str, payee: str, amount: int) -> str:
        response = await self.client.post(
            f"{self.base}/v1/orders",
            json={"payee_id": self.users[payee][0], "amount": amount, "currency": "EUR"},
            headers=self.users[payer][1],
        )
        assert response.status_code == 201, response.text
        return str(response.json()["id"])

    async def move(self, who: str, order_id: str, action: str) -> None:
        response = await self.client.post(
            f"{self.base}/v1/orders/{order_id}/{action}",
            headers={**self.users[who][1], "Idempotency-Key": f"{action}-{next(self.keys)}"},
        )
        assert response.status_code == 200, response.text


async def _open_shop(start_service: StartService, database_url: str) -> Shop:
    env = {"LEDGERLINE_DATABASE_URL": database_url, "LEDGERLINE_JWT_SECRET": JWT_SECRET}
    made = await asyncio.to_thread(
        _cli,
        *("users", "create-admin", "--email", "ops@example.com", "--name", "Ops"),
        "--password-stdin",
        env=env,
        stdin=f"{PASSWORD}\n",
    )
    assert made.returncode == 0, made.stderr
    service = await asyncio.to_thread(lambda: start_service(**env))
    client = httpx.AsyncClient(timeout=30)
    base = service.base_url

    async def login(email: str) -> dict[str, str]:
        token = await client.post(
            f"{base}/v1/auth/token", json={"email": email, "password": PASSWORD}
        )
        assert token.status_code == 200, token.text
        return {"Authorization": f"Bearer {token.json()['access_token']}"}

    users = {}
    for name in ("alice", "bob"):
        created = await client.post(
            f"{base}/v1/users",
            json={"email": f"{name}@example.com", "password": PASSWORD, "name": name.title()},
        )
        assert created.status_code == 201, created.text
        users[name] = (created.json()["id"], await login(f"{name}@example.com"))
    return Shop(client, base, await login("ops@example.com"), users, itertools.count())


def _worker_env(database_url: str, bus: Bus | None = None, **extra: str) -> dict[str, str]:
    bus_env = bus.env if bus is not None else {}
    return {**bus_env, "LEDGERLINE_DATABASE_URL": database_url, **extra}


async def test_a_payment_flows_events_arrive_as_cloudevents_with_ids_stable_across_a_restart(
    start_service: StartService,
    start_worker: StartWorker,
    database_url: str,
    pool: asyncpg.Pool,
    bus: Bus,
) -> None:
    shop = await _open_shop(start_service, database_url)
    worker = await asyncio.to_thread(start_worker, **_worker_env(database_url, bus))
    await shop.credit("alice", 5_000)
    order = await shop.order("alice", "bob", 2_000)
    await shop.move("alice", order, "pay")
    await shop.move("bob", order, "refund")
    await shop.client.aclose()

    await _until(lambda: _all_published(pool))
    messages = await bus.messages()
    types = sorted(event.get_type() for _, _, event in messages)
    assert types == sorted(
        ["user.registered"] * 3
        + ["wallet.credited", "order.created", "order.paid", "order.refunded"]
    )
    for subject, headers, event in messages:
        assert subject == f"{bus.settings.subject_prefix}.{event.get_type()}"
        assert headers["Nats-Msg-Id"] == event.get_id()
    await _stream_matches_outbox(pool, bus)

    # A relay that died before recording what it published: a new worker
    # sends every event again, under the same ids, and the stream keeps one.
    assert await asyncio.to_thread(worker.terminate) == 0
    await pool.execute("UPDATE outbox SET state = 'pending', published_at = NULL")
    again = await asyncio.to_thread(start_worker, **_worker_env(database_url, bus))
    await _until(lambda: _all_published(pool))
    assert await asyncio.to_thread(again.metric, "ledgerline_event_bus_duplicates") == 7
    await _stream_matches_outbox(pool, bus)


async def test_a_worker_killed_mid_relay_is_followed_by_one_that_delivers_every_event_once(
    start_worker: StartWorker, database_url: str, pool: asyncpg.Pool, bus: Bus
) -> None:
    total = await _record(pool, aggregates=300, each=10)
    env = _worker_env(
        database_url,
        bus,
        LEDGERLINE_RELAY_LEASE_SECONDS="2",
        LEDGERLINE_EVENT_PUBLISH_TIMEOUT_SECONDS="0.5",
        LEDGERLINE_RELAY_BATCH_SIZE="20",
    )
    first = await asyncio.to_thread(start_worker, **env)
    await _until(lambda: _holds_at_least(bus, 300))
    await asyncio.to_thread(first.kill)
    assert 0 < await bus.count() < total

    await asyncio.to_thread(start_worker, **env)
    await _until(lambda: _all_published(pool), timeout=120)
    await _stream_matches_outbox(pool, bus)


async def test_sigterm_mid_relay_exits_0_within_the_deadline_losing_and_repeating_nothing(
    start_worker: StartWorker, database_url: str, pool: asyncpg.Pool, bus: Bus
) -> None:
    total = await _record(pool, aggregates=300, each=10)
    env = _worker_env(
        database_url,
        bus,
        LEDGERLINE_RELAY_BATCH_SIZE="20",
        LEDGERLINE_SHUTDOWN_TIMEOUT_SECONDS="10",
    )
    worker = await asyncio.to_thread(start_worker, **env)
    await _until(lambda: _holds_at_least(bus, 300))
    started = time.monotonic()
    code = await asyncio.to_thread(worker.terminate)
    took = time.monotonic() - started

    assert code == 0
    assert took < 10 + 5  # the deadline, and a margin for a loaded machine
    published = await pool.fetch("SELECT id FROM outbox WHERE state = 'published'")
    in_stream = {event.get_id() for _, _, event in await bus.messages()}
    assert {str(r["id"]) for r in published} <= in_stream  # recorded only what the bus has
    assert len(published) < total
    claimed = await pool.fetchval("SELECT count(*) FROM outbox WHERE claimed_until > now()")
    assert claimed == 0  # what it did not publish, it gave back

    follower = await asyncio.to_thread(start_worker, **env)
    await _until(lambda: _all_published(pool), timeout=120)
    await _stream_matches_outbox(pool, bus)
    # Whatever the stopped worker published, it had recorded: nothing was sent twice.
    assert await asyncio.to_thread(follower.metric, "ledgerline_event_bus_duplicates") == (
        len(in_stream) - len(published)
    )


async def test_two_workers_share_the_outbox_and_never_publish_one_event_twice(
    start_worker: StartWorker, database_url: str, pool: asyncpg.Pool, bus: Bus
) -> None:
    total = await _record(pool, aggregates=400, each=10)
    env = _worker_env(database_url, bus, LEDGERLINE_RELAY_BATCH_SIZE="25")
    workers = [await asyncio.to_thread(start_worker, **env) for _ in range(2)]

    await _until(lambda: _all_published(pool), timeout=120)

    sent = [
        await asyncio.to_thread(w.metric, "ledgerline_outbox_events_total", outcome="published")
        for w in workers
    ]
    duplicates = [
        await asyncio.to_thread(w.metric, "ledgerline_event_bus_duplicates") for w in workers
    ]
    assert sum(sent) == total
    assert duplicates == [0, 0]
    await _stream_matches_outbox(pool, bus)


async def test_the_bus_away_for_ten_seconds_loses_and_reorders_nothing(
    start_service: StartService,
    start_worker: StartWorker,
    database_url: str,
    pool: asyncpg.Pool,
    bus: Bus,
) -> None:
    target = urlsplit(bus.url)
    proxy = TcpProxy(target.hostname or "127.0.0.1", target.port or 4222).start()
    shop = await _open_shop(start_service, database_url)
    await shop.credit("alice", 10**9)
    worker = await asyncio.to_thread(
        start_worker,
        **_worker_env(database_url, bus, LEDGERLINE_EVENT_BUS_URL=proxy.url("nats")),
    )
    stop = asyncio.Event()

    async def traffic() -> None:
        while not stop.is_set():
            order = await shop.order("alice", "bob", 100)
            await shop.move("alice", order, "pay")
            await shop.credit("bob", 1)

    readiness_while_away: list[httpx.Response] = []
    try:
        running = asyncio.create_task(traffic())
        await asyncio.sleep(2)
        proxy.cut()
        await asyncio.sleep(3)
        readiness_while_away.append(await asyncio.to_thread(worker.readiness))
        await asyncio.sleep(7)
        proxy.restore()
        await asyncio.sleep(2)
        stop.set()
        await running
        await _until(lambda: _all_published(pool), timeout=90)
        back = await asyncio.to_thread(worker.readiness)
    finally:
        stop.set()
        await shop.client.aclose()
        proxy.close()

    [away] = readiness_while_away
    assert away.status_code == 503
    assert away.json()["checks"]["event_bus"] == "unavailable"
    assert back.status_code == 200, back.text
    await _stream_matches_outbox(pool, bus)
    assert await pool.fetchval("SELECT max(attempts) FROM outbox") == 0


async def test_without_a_bus_the_worker_expires_orders_and_the_events_wait_for_tail(
    start_service: StartService, start_worker: StartWorker, database_url: str
) -> None:
    shop = await _open_shop(start_service, database_url)
    order = await shop.order("alice", "bob", 100)
    env = _worker_env(
        database_url,
        LEDGERLINE_ORDER_TTL="1s",
        LEDGERLINE_ORDER_EXPIRY_INTERVAL_SECONDS="0.2",
    )
    worker = await asyncio.to_thread(start_worker, **env)

    async def expired() -> bool:
        got = await shop.client.get(f"{shop.base}/v1/orders/{order}", headers=shop.users["bob"][1])
        return bool(got.json()["status"] == "expired")

    await _until(expired, timeout=30)
    await shop.client.aclose()
    assert (await asyncio.to_thread(worker.readiness)).json()["checks"] == {"database": "ok"}
    assert (
        await asyncio.to_thread(
            worker.metric, "ledgerline_worker_job_runs_total", job="order-expiry", outcome="ok"
        )
        >= 1
    )

    tail = await asyncio.to_thread(
        _cli, "events", "tail", "--limit", "2", env={"LEDGERLINE_DATABASE_URL": database_url}
    )
    assert tail.returncode == 0, tail.stderr
    events = [JSONFormat().read(None, line) for line in tail.stdout.strip().splitlines()]
    assert [e.get_type() for e in events] == ["order.created", "order.expired"]
    assert {e.get_subject() for e in events} == {f"orders/{order}"}
    assert [e.get_extension("aggregateversion") for e in events] == [1, 2]
    assert await asyncio.to_thread(worker.terminate) == 0


@pytest.mark.parametrize(
    ("command", "variable"),
    [("worker", "LEDGERLINE_WORKER_PORT"), ("serve", "LEDGERLINE_HTTP_PORT")],
    ids=["worker", "serve"],
)
async def test_a_port_already_taken_stops_the_command_naming_its_variable(
    database_url: str, command: str, variable: str
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        ran = await asyncio.to_thread(
            _cli,
            command,
            env={
                "LEDGERLINE_DATABASE_URL": database_url,
                "LEDGERLINE_JWT_SECRET": JWT_SECRET,
                variable: port,
            },
        )

    assert ran.returncode == 2
    assert f"configuration error: {variable}: cannot listen on 127.0.0.1:{port}" in ran.stderr


async def test_a_worker_whose_bus_never_answered_reports_it_and_stops_at_once(
    start_worker: StartWorker, database_url: str
) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]  # nothing listens there once this closes
    worker = await asyncio.to_thread(
        start_worker,
        **_worker_env(database_url, LEDGERLINE_EVENT_BUS_URL=f"nats://127.0.0.1:{port}"),
    )

    ready = await asyncio.to_thread(worker.readiness)
    started = time.monotonic()
    code = await asyncio.to_thread(worker.terminate)

    assert ready.status_code == 503
    assert ready.json()["checks"] == {"database": "ok", "event_bus": "unavailable"}
    assert code == 0
    assert time.monotonic() - started < 10  # not the whole 20 s shutdown deadline
