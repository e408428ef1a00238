"""Rate limits on login and registration, over REST and gRPC, with the
counts in memory and in a real Redis: 429 rate_limited with Retry-After,
RESOURCE_EXHAUSTED with retry-after, one count per email however it is
spelled, X-Forwarded-For only from trusted proxies, counts shared by every
limiter on one Redis, and calls let through when Redis fails."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import asyncpg
import grpc
import httpx
import pytest
from prometheus_client import CollectorRegistry

from ledgerline.main.core import Core
from ledgerline.main.runtime import Runtime
from ledgerline.platform.metrics import RateLimitMetrics
from ledgerline.platform.ratelimit import RateLimiter, RateLimitRules
from ledgerline.v1 import users_pb2
from tests.conftest import delete_redis_keys, require_redis
from tests.integration.conftest import JWT_SECRET, PASSWORD, cheap_settings, rest_client
from tests.integration.http_helpers import assert_error
from tests.integration.test_grpc import Stubs, grpc_serving, status_of

WRONG = "not the password"
Settings = dict[str, object]


@pytest.fixture(params=["memory", "redis"])
def storage(request: pytest.FixtureRequest, redis_url: str | None) -> Iterator[Settings]:
    """The settings that put the counts in memory, or in Redis under a key
    prefix of the test's own (its keys deleted after it)."""
    if request.param == "memory":
        yield {}
        return
    url = require_redis(redis_url)
    prefix = f"test-rate-limit-{uuid.uuid4().hex[:12]}"
    # A busy test machine must not make the limiter pass calls unchecked.
    yield {"redis_url": url, "rate_limit_key_prefix": prefix, "rate_limit_timeout_seconds": 2.0}
    delete_redis_keys(url, prefix)


@dataclass
class Service:
    core: Core
    rest: httpx.AsyncClient
    grpc: Stubs


@contextlib.asynccontextmanager
async def service(database_url: str, **settings: object) -> AsyncIterator[Service]:
    """A core of its own over the test's database, with its REST client and
    gRPC stubs: one process's worth of limiter, shared by both."""
    runtime = Runtime(database_url, JWT_SECRET)
    async with (
        Core(cheap_settings(**settings), runtime) as core,
        rest_client(core) as rest,
        grpc_serving(core) as stubs,
    ):
        yield Service(core, rest, stubs)


def registration(email: str) -> dict[str, str]:
    return {"email": email, "password": PASSWORD, "name": "Ada"}


async def login(
    client: httpx.AsyncClient, email: str, password: str = WRONG, **headers: str
) -> httpx.Response:
    return await client.post(
        "/v1/auth/token", json={"email": email, "password": password}, headers=headers
    )


def assert_rate_limited(response: httpx.Response, window_seconds: int) -> int:
    """A 429 in the API's error shape, with a Retry-After of whole seconds
    within the window; returns it."""
    assert_error(response, 429, "rate_limited")
    retry_after = response.headers["Retry-After"]
    assert retry_after.isdigit(), retry_after
    assert 1 <= int(retry_after) <= window_seconds
    return int(retry_after)


# --------------------------------------------------------------------------
# REST


async def test_logins_past_the_email_limit_are_429_with_retry_after(
    database_url: str, storage: Settings
) -> None:
    async with service(database_url, rate_limit_login_per_email="3/minute", **storage) as s:
        assert (await s.rest.post("/v1/users", json=registration("ada@example.com"))).is_success

        statuses = [(await login(s.rest, "ada@example.com")).status_code for _ in range(3)]
        refused = await login(s.rest, "ada@example.com")
        # Every attempt counts, the right password too, once over the limit.
        right = await login(s.rest, "ada@example.com", PASSWORD)

    assert statuses == [401, 401, 401]
    assert_rate_limited(refused, 60)
    assert_rate_limited(right, 60)
    assert "WWW-Authenticate" not in refused.headers


async def test_every_spelling_of_an_email_shares_its_limit(
    database_url: str, storage: Settings
) -> None:
    spellings = ["ada@example.com", "ADA@Example.COM", " Ada@example.com "]
    async with service(database_url, rate_limit_login_per_email="3/minute", **storage) as s:
        statuses = [(await login(s.rest, email)).status_code for email in spellings]
        refused = await login(s.rest, "aDa@EXAMPLE.com")
        other = await login(s.rest, "bob@example.com")

    assert statuses == [401, 401, 401]
    assert_rate_limited(refused, 60)
    assert other.status_code == 401  # another email has a count of its own


async def test_one_address_is_limited_across_emails(database_url: str, storage: Settings) -> None:
    async with service(database_url, rate_limit_login_per_address="2/minute", **storage) as s:
        first = await login(s.rest, "one@example.com")
        second = await login(s.rest, "two@example.com")
        third = await login(s.rest, "three@example.com")

    assert (first.status_code, second.status_code) == (401, 401)
    assert_rate_limited(third, 60)


async def test_registrations_past_the_address_limit_make_no_user(
    database_url: str, storage: Settings
) -> None:
    async with service(database_url, rate_limit_register_per_address="2/hour", **storage) as s:
        made = [
            await s.rest.post("/v1/users", json=registration(f"u{i}@example.com")) for i in range(2)
        ]
        refused = await s.rest.post("/v1/users", json=registration("u2@example.com"))

    assert [r.status_code for r in made] == [201, 201]
    assert_rate_limited(refused, 3600)
    conn = await asyncpg.connect(database_url)
    try:
        assert await conn.fetchval("SELECT count(*) FROM users") == 2
    finally:
        await conn.close()


# The test client's peer is 127.0.0.1.
FORWARDED: dict[str, tuple[str, list[int]]] = {
    # id: (trusted proxies, statuses of: client A, client B, client A again)
    "trusted-proxy-each-client-counted": ("127.0.0.1", [201, 201, 429]),
    "trusted-network": ("127.0.0.0/8, 10.0.0.0/8", [201, 201, 429]),
    "no-trusted-proxy-header-ignored": ("", [201, 429, 429]),
    "another-proxy-trusted-header-ignored": ("10.0.0.0/8", [201, 429, 429]),
}


@pytest.mark.parametrize(("proxies", "statuses"), list(FORWARDED.values()), ids=list(FORWARDED))
async def test_x_forwarded_for_is_believed_only_from_trusted_proxies(
    database_url: str, proxies: str, statuses: list[int]
) -> None:
    async with service(
        database_url, rate_limit_register_per_address="1/minute", trusted_proxies=proxies
    ) as s:
        answers = [
            await s.rest.post(
                "/v1/users",
                json=registration(f"{i}@example.com"),
                # A client may write anything left of what the proxy appends.
                headers={"X-Forwarded-For": f"203.0.113.{i}, {client}"},
            )
            for i, client in enumerate(["198.51.100.1", "198.51.100.2", "198.51.100.1"])
        ]

    assert [a.status_code for a in answers] == statuses


@pytest.mark.parametrize("path", ["/v1/users", "/v1/auth/token"])
async def test_the_openapi_document_gives_the_429_and_its_retry_after(
    client: httpx.AsyncClient, path: str
) -> None:
    document = (await client.get("/openapi.json")).json()

    answer = document["paths"][path]["post"]["responses"]["429"]
    assert answer["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorResponse")
    assert answer["headers"]["Retry-After"]["schema"] == {"type": "integer", "minimum": 1}


async def test_limits_turned_off_refuse_nothing(database_url: str) -> None:
    async with service(
        database_url,
        rate_limits_enabled=False,
        rate_limit_login_per_email="1/minute",
        rate_limit_login_per_address="1/minute",
    ) as s:
        statuses = {(await login(s.rest, "ada@example.com")).status_code for _ in range(5)}

    assert statuses == {401}


# --------------------------------------------------------------------------
# gRPC


async def test_grpc_login_past_the_limit_is_resource_exhausted_with_retry_after(
    database_url: str, storage: Settings
) -> None:
    async with service(database_url, rate_limit_login_per_email="2/minute", **storage) as s:
        request = users_pb2.LoginRequest(email="ada@example.com", password=WRONG)
        refusals = [await status_of(s.grpc.users.Login(request)) for _ in range(2)]
        call = s.grpc.users.Login(request)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call

    assert [status for status, _, _ in refusals] == [grpc.StatusCode.UNAUTHENTICATED] * 2
    error = caught.value
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert error.details()
    trailing = dict(error.trailing_metadata() or ())
    assert trailing["error-code"] == "rate_limited"
    assert trailing["x-request-id"]
    assert 1 <= int(str(trailing["retry-after"])) <= 60


async def test_rest_and_grpc_share_one_count(database_url: str, storage: Settings) -> None:
    async with service(database_url, rate_limit_login_per_email="3/minute", **storage) as s:
        over_rest = [(await login(s.rest, "ada@example.com")).status_code for _ in range(2)]
        request = users_pb2.LoginRequest(email="Ada@Example.com", password=WRONG)
        over_grpc = await status_of(s.grpc.users.Login(request))
        refused_over_grpc = await status_of(s.grpc.users.Login(request))
        refused_over_rest = await login(s.rest, "ada@example.com")

    assert over_rest == [401, 401]
    assert over_grpc[0] == grpc.StatusCode.UNAUTHENTICATED
    assert refused_over_grpc[0] == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert refused_over_grpc[2] == "rate_limited"
    assert_rate_limited(refused_over_rest, 60)


GRPC_FORWARDED: dict[str, tuple[str, list[grpc.StatusCode]]] = {
    # id: (trusted proxies, statuses of: client A, client B, client A again)
    "peer-trusted-metadata-believed": (
        "127.0.0.1",
        [grpc.StatusCode.OK, grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED],
    ),
    "peer-not-trusted-metadata-ignored": (
        "",
        [grpc.StatusCode.OK] + [grpc.StatusCode.RESOURCE_EXHAUSTED] * 2,
    ),
}


@pytest.mark.parametrize(
    ("proxies", "statuses"), list(GRPC_FORWARDED.values()), ids=list(GRPC_FORWARDED)
)
async def test_grpc_register_is_limited_per_client_address(
    database_url: str, storage: Settings, proxies: str, statuses: list[grpc.StatusCode]
) -> None:
    async with service(
        database_url,
        rate_limit_register_per_address="1/minute",
        trusted_proxies=proxies,
        **storage,
    ) as s:
        answers = []
        for i, client in enumerate(["198.51.100.1", "198.51.100.2", "198.51.100.1"]):
            call = s.grpc.users.Register(
                users_pb2.RegisterRequest(email=f"{i}@example.com", password=PASSWORD, name="A"),
                metadata=(("x-forwarded-for", client),),
            )
            try:
                await call
                answers.append(grpc.StatusCode.OK)
            except grpc.aio.AioRpcError as exc:
                answers.append(exc.code())

    assert answers == statuses


# --------------------------------------------------------------------------
# Redis: shared counts, and a Redis that fails


async def test_limiters_on_one_redis_share_the_count(
    database_url: str, redis_url: str | None
) -> None:
    """Two cores, as two processes are: whichever answers, the email gets
    exactly its limit of attempts."""
    url = require_redis(redis_url)
    prefix = f"test-rate-limit-{uuid.uuid4().hex[:12]}"
    settings: dict[str, Any] = {
        "redis_url": url,
        "rate_limit_key_prefix": prefix,
        "rate_limit_login_per_email": "5/minute",
        "rate_limit_timeout_seconds": 2.0,
    }
    try:
        async with (
            service(database_url, **settings) as one,
            service(database_url, **settings) as two,
        ):
            answers = await asyncio.gather(
                *(login((one, two)[i % 2].rest, "ada@example.com") for i in range(12))
            )
    finally:
        delete_redis_keys(url, prefix)

    statuses = sorted(a.status_code for a in answers)
    assert statuses == [401] * 5 + [429] * 7


def _refusing_port() -> int:
    """A loopback port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class FrozenRedis:
    """A server that accepts connections and reads what it is sent, but
    never answers: a Redis that hangs. Counts the connections made to it."""

    def __init__(self) -> None:
        self.connections = 0
        self._server: asyncio.Server | None = None
        self._held: list[asyncio.StreamWriter] = []

    async def __aenter__(self) -> str:
        async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.connections += 1
            self._held.append(writer)
            while await reader.read(4096):
                pass

        self._server = await asyncio.start_server(hold, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        return f"redis://127.0.0.1:{port}/0"

    async def __aexit__(self, *exc: object) -> None:
        for writer in self._held:
            writer.close()
        assert self._server is not None
        self._server.close()


RULES = RateLimitRules.parse(
    login_per_email="1/minute", login_per_address="1/minute", register_per_address="1/minute"
)


def unchecked(registry: CollectorRegistry) -> float | None:
    return registry.get_sample_value("ledgerline_rate_limit_unchecked_total")


async def test_a_refusing_redis_lets_calls_through_and_counts_them() -> None:
    url = f"redis://127.0.0.1:{_refusing_port()}/0"
    limiter = RateLimiter.on_redis(url, RULES, timeout=0.5, key_prefix="unused")
    registry = CollectorRegistry()
    limiter.observe(RateLimitMetrics(registry))
    try:
        for _ in range(3):  # well over the limit of 1
            await limiter.check_login("ada@example.com", None)
    finally:
        await limiter.close()

    assert unchecked(registry) == 3


async def test_a_frozen_redis_is_waited_on_by_one_call_at_a_time() -> None:
    """The first call waits out the timeout; the calls within the back-off
    pass without asking; once it is over, one call asks again while the
    others pass."""
    frozen = FrozenRedis()
    async with frozen as url:
        long_back_off = RateLimiter.on_redis(
            url, RULES, timeout=0.2, key_prefix="unused", back_off=60
        )
        no_back_off = RateLimiter.on_redis(url, RULES, timeout=0.2, key_prefix="unused", back_off=0)
        registries = {"long": CollectorRegistry(), "none": CollectorRegistry()}
        long_back_off.observe(RateLimitMetrics(registries["long"]))
        no_back_off.observe(RateLimitMetrics(registries["none"]))
        try:
            for _ in range(3):
                await long_back_off.check_login("ada@example.com", None)
            asked_within_the_back_off = frozen.connections

            await no_back_off.check_login("ada@example.com", None)
            await asyncio.gather(
                *(no_back_off.check_login("ada@example.com", None) for _ in range(5))
            )
        finally:
            await long_back_off.close()
            await no_back_off.close()

    assert asked_within_the_back_off == 1
    assert unchecked(registries["long"]) == 3
    # The second limiter: one connection for its first failure, one for the
    # single probe among the five calls made at once.
    assert frozen.connections == 1 + 2
    assert unchecked(registries["none"]) == 6


async def test_a_service_whose_redis_is_down_answers_logins_without_5xx(
    database_url: str,
) -> None:
    url = f"redis://127.0.0.1:{_refusing_port()}/0"
    async with service(
        database_url,
        redis_url=url,
        rate_limit_login_per_email="1/minute",
        rate_limit_timeout_seconds=0.2,
    ) as s:
        statuses = [(await login(s.rest, "ada@example.com")).status_code for _ in range(3)]
        request = users_pb2.LoginRequest(email="ada@example.com", password=WRONG)
        over_grpc = await status_of(s.grpc.users.Login(request))

    assert statuses == [401, 401, 401]
    assert over_grpc[0] == grpc.StatusCode.UNAUTHENTICATED
