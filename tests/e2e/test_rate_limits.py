"""Rate limits across two serving processes that share only Redis: a burst
of wrong-password logins for one email, sent in turn to two `ledgerline
serve` processes, gets exactly the configured number of 401s and the rest
429 rate_limited with Retry-After (RESOURCE_EXHAUSTED over gRPC); never a
5xx. Each request goes to a process chosen by the test (each process has
ports of its own), so that both answered is certain rather than left to how
the kernel spreads connections over the workers of one listening socket."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Iterator

import grpc
import httpx
import pytest

from ledgerline.v1 import users_pb2, users_pb2_grpc
from tests.conftest import delete_redis_keys, require_redis
from tests.e2e.conftest import JWT_SECRET, Service

pytestmark = pytest.mark.e2e
StartService = Callable[..., Service]
PASSWORD = "correct horse battery"
LIMIT = 5
BURST = 20


@pytest.fixture
def key_prefix(redis_url: str | None) -> Iterator[str]:
    """The test's own keys in the shared Redis, deleted after it."""
    url = require_redis(redis_url)
    prefix = f"test-e2e-rate-limit-{uuid.uuid4().hex[:12]}"
    yield prefix
    delete_redis_keys(url, prefix)


@pytest.fixture
def services(
    start_service: StartService, database_url: str, redis_url: str | None, key_prefix: str
) -> list[Service]:
    """Two serving processes, as on two machines: the same database, Redis
    and key prefix, nothing else shared."""
    return [
        start_service(
            LEDGERLINE_DATABASE_URL=database_url,
            LEDGERLINE_JWT_SECRET=JWT_SECRET,
            LEDGERLINE_REDIS_URL=require_redis(redis_url),
            LEDGERLINE_RATE_LIMIT_KEY_PREFIX=key_prefix,
            LEDGERLINE_RATE_LIMIT_LOGIN_PER_EMAIL=f"{LIMIT}/minute",
            # A busy test machine must not make the limiter pass calls unchecked.
            LEDGERLINE_RATE_LIMIT_TIMEOUT_SECONDS="2",
        )
        for _ in range(2)
    ]


async def register(service: Service, email: str) -> None:
    async with httpx.AsyncClient(base_url=service.base_url, timeout=30) as client:
        made = await client.post(
            "/v1/users", json={"email": email, "password": PASSWORD, "name": "Ada"}
        )
        assert made.status_code == 201, made.text


async def test_a_login_burst_over_rest_gets_exactly_the_limit_across_two_processes(
    services: list[Service],
) -> None:
    email = "burst@example.com"
    await register(services[0], email)
    clients = [httpx.AsyncClient(base_url=s.base_url, timeout=30) for s in services]
    try:
        answers = await asyncio.gather(
            *(
                clients[i % 2].post(
                    "/v1/auth/token", json={"email": email, "password": "wrong password"}
                )
                for i in range(BURST)
            )
        )
    finally:
        for client in clients:
            await client.aclose()

    statuses = sorted(a.status_code for a in answers)
    assert statuses == [401] * LIMIT + [429] * (BURST - LIMIT), [a.text for a in answers]
    for answer in answers:
        if answer.status_code == 429:
            assert answer.json()["code"] == "rate_limited"
            assert 1 <= int(answer.headers["Retry-After"]) <= 60
    # Each process refused some: neither counted alone.
    for first in range(2):
        assert any(a.status_code == 429 for a in answers[first::2]), statuses
    for service in services:
        assert service.terminate() == 0


async def test_a_login_burst_over_grpc_gets_exactly_the_limit_across_two_processes(
    services: list[Service],
) -> None:
    email = "grpc-burst@example.com"
    await register(services[0], email)
    channels = [grpc.aio.insecure_channel(s.grpc_target) for s in services]
    try:
        stubs = [users_pb2_grpc.UserServiceStub(channel) for channel in channels]
        request = users_pb2.LoginRequest(email=email, password="wrong password")
        outcomes = await asyncio.gather(
            *(stubs[i % 2].Login(request, timeout=30) for i in range(BURST)),
            return_exceptions=True,
        )
    finally:
        for channel in channels:
            await channel.close()

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
    for first in range(2):
        assert grpc.StatusCode.RESOURCE_EXHAUSTED in codes[first::2], codes
    for service in services:
        assert service.terminate() == 0
