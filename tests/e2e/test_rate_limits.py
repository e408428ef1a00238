"""Rate limits across the processes of `ledgerline serve --workers 2`,
counted in Redis: a burst of wrong-password logins for one email gets
exactly the configured number of 401s and the rest 429 rate_limited with
Retry-After (RESOURCE_EXHAUSTED over gRPC), whichever process answers each;
never a 5xx. That both processes answered is checked, not hoped for: the
test finds which process holds the server end of each of its connections."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Iterator

import grpc
import httpx
import psutil
import pytest

from ledgerline.v1 import users_pb2, users_pb2_grpc
from tests.conftest import delete_redis_keys, require_redis
from tests.e2e.conftest import JWT_SECRET, Service

pytestmark = pytest.mark.e2e
StartService = Callable[..., Service]
PASSWORD = "correct horse battery"
LIMIT = 5
BURST = 20
# A burst may, by chance, land on one process only; each round uses a new
# email, and some round must have reached both.
ROUNDS = 3


@pytest.fixture
def key_prefix(redis_url: str | None) -> Iterator[str]:
    """The test's own keys in the shared Redis, deleted after it."""
    url = require_redis(redis_url)
    prefix = f"test-e2e-rate-limit-{uuid.uuid4().hex[:12]}"
    yield prefix
    delete_redis_keys(url, prefix)


@pytest.fixture
def service(
    start_service: StartService, database_url: str, redis_url: str | None, key_prefix: str
) -> Service:
    return start_service(
        "--workers",
        "2",
        LEDGERLINE_DATABASE_URL=database_url,
        LEDGERLINE_JWT_SECRET=JWT_SECRET,
        LEDGERLINE_REDIS_URL=require_redis(redis_url),
        LEDGERLINE_RATE_LIMIT_KEY_PREFIX=key_prefix,
        LEDGERLINE_RATE_LIMIT_LOGIN_PER_EMAIL=f"{LIMIT}/minute",
        # A busy test machine must not make the limiter pass calls unchecked.
        LEDGERLINE_RATE_LIMIT_TIMEOUT_SECONDS="2",
    )


def processes_serving_us(service: Service, port: int) -> set[int]:
    """The serving processes that hold the server end of this test
    process's open connections to ``port``."""
    ours = {
        c.laddr.port
        for c in psutil.Process().net_connections(kind="tcp")
        if c.raddr and c.raddr.port == port and c.status == psutil.CONN_ESTABLISHED
    }
    serving: set[int] = set()
    for worker in psutil.Process(service.proc.pid).children():
        for c in worker.net_connections(kind="tcp"):
            if c.laddr.port == port and c.raddr and c.raddr.port in ours:
                serving.add(worker.pid)
    return serving


async def register(service: Service, email: str) -> None:
    async with httpx.AsyncClient(base_url=service.base_url, timeout=30) as client:
        made = await client.post(
            "/v1/users", json={"email": email, "password": PASSWORD, "name": "Ada"}
        )
        assert made.status_code == 201, made.text


async def rest_burst(service: Service, email: str) -> tuple[list[httpx.Response], set[int]]:
    """BURST wrong-password logins at once, each on a connection of its
    own; the answers, and the processes that gave them."""
    clients = [
        httpx.AsyncClient(
            base_url=service.base_url, timeout=30, limits=httpx.Limits(max_connections=1)
        )
        for _ in range(BURST)
    ]
    try:
        answers = await asyncio.gather(
            *(
                c.post("/v1/auth/token", json={"email": email, "password": "wrong password"})
                for c in clients
            )
        )
        # Still open (keep-alive): each one shows which process accepted it.
        return list(answers), processes_serving_us(service, service.port)
    finally:
        for c in clients:
            await c.aclose()


async def test_a_login_burst_over_rest_gets_exactly_the_limit_across_two_processes(
    service: Service,
) -> None:
    seen: set[int] = set()
    for round_ in range(ROUNDS):
        email = f"burst{round_}@example.com"
        await register(service, email)
        answers, serving = await rest_burst(service, email)
        seen |= serving

        statuses = sorted(a.status_code for a in answers)
        assert statuses == [401] * LIMIT + [429] * (BURST - LIMIT), [a.text for a in answers]
        for answer in answers:
            if answer.status_code == 429:
                assert answer.json()["code"] == "rate_limited"
                assert 1 <= int(answer.headers["Retry-After"]) <= 60
        if len(serving) == 2:
            break
    assert len(seen) == 2, "every connection of every round went to one process"
    assert service.terminate() == 0


async def test_a_login_burst_over_grpc_gets_exactly_the_limit_across_two_processes(
    service: Service,
) -> None:
    grpc_port = int(service.grpc_target.rsplit(":", 1)[1])
    seen: set[int] = set()
    for round_ in range(ROUNDS):
        email = f"grpc-burst{round_}@example.com"
        await register(service, email)
        # Channels that share no connection (gRPC pools them per process
        # by default); SO_REUSEPORT spreads the connections over the processes.
        channels = [
            grpc.aio.insecure_channel(
                service.grpc_target, options=[("grpc.use_local_subchannel_pool", 1)]
            )
            for _ in range(6)
        ]
        try:
            stubs = [users_pb2_grpc.UserServiceStub(channel) for channel in channels]
            request = users_pb2.LoginRequest(email=email, password="wrong password")
            outcomes = await asyncio.gather(
                *(stubs[i % len(stubs)].Login(request, timeout=30) for i in range(BURST)),
                return_exceptions=True,
            )
            serving = processes_serving_us(service, grpc_port)
        finally:
            for channel in channels:
                await channel.close()
        seen |= serving

        codes: list[grpc.StatusCode] = []
        for outcome in outcomes:
            assert isinstance(outcome, grpc.aio.AioRpcError), outcome
            codes.append(outcome.code())
            if outcome.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
                trailing = dict(outcome.trailing_metadata() or ())
                assert trailing["error-code"] == "rate_limited"
                assert 1 <= int(str(trailing["retry-after"])) <= 60
        assert sorted(codes, key=lambda c: c.value[0]) == sorted(
            [grpc.StatusCode.UNAUTHENTICATED] * LIMIT
            + [grpc.StatusCode.RESOURCE_EXHAUSTED] * (BURST - LIMIT),
            key=lambda c: c.value[0],
        )
        if len(serving) == 2:
            break
    assert len(seen) == 2, "every channel of every round went to one process"
    assert service.terminate() == 0
