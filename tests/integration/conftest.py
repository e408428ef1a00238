"""A core wired to the test's own database, and an HTTP client that talks
to the REST API over it through the full ASGI stack (middleware, routing,
handlers)."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import httpx
import pytest

from ledgerline.config import Settings
from ledgerline.main.core import Core, Overrides
from ledgerline.main.runtime import Runtime
from ledgerline.main.serve import http_app
from ledgerline.usecase.users import Registration

JWT_SECRET = "test-secret-that-is-long-enough-for-hs256-0123456789"
PASSWORD = "correct horse battery"
# Tests log in and register far more often than a person: limits they never
# reach, so that the limiter still runs on every call. Rate-limit tests set
# their own.
GENEROUS_RATE_LIMITS: dict[str, str] = {
    "rate_limit_login_per_email": "10000/minute",
    "rate_limit_login_per_address": "10000/minute",
    "rate_limit_register_per_address": "10000/minute",
}


def cheap_settings(**overrides: object) -> Settings:
    """Real Argon2id, at the lowest cost the configuration allows."""
    values: dict[str, object] = {
        "argon2_time_cost": 1,
        "argon2_memory_kib": 8 * 1024,
        "jwt_secret": JWT_SECRET,
        **GENEROUS_RATE_LIMITS,
        # Counts of its own, should it use the shared Redis.
        "rate_limit_key_prefix": f"test-{uuid.uuid4().hex[:12]}",
        **overrides,
    }
    return Settings(**values)  # type: ignore[arg-type]


@pytest.fixture
async def core(database_url: str) -> AsyncIterator[Core]:
    async with Core(cheap_settings(), Runtime(database_url, JWT_SECRET)) as started:
        yield started


def rest_client(core: Core) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=http_app(core))
    return httpx.AsyncClient(transport=transport, base_url="http://ledgerline.test")


@pytest.fixture
async def client(core: Core) -> AsyncIterator[httpx.AsyncClient]:
    async with rest_client(core) as c:
        yield c


@contextlib.asynccontextmanager
async def serving(
    database_url: str, overrides: Overrides, **settings: object
) -> AsyncIterator[httpx.AsyncClient]:
    """A core of its own (own settings, own overrides) on the test's
    database, and a client of its REST API."""
    runtime = Runtime(database_url, JWT_SECRET)
    async with Core(cheap_settings(**settings), runtime, overrides) as own, rest_client(own) as c:
        yield c


@pytest.fixture
async def no_server_errors(client: httpx.AsyncClient) -> AsyncIterator[None]:
    """Opt-in for a module: any 5xx the client receives fails the test."""

    async def check(response: httpx.Response) -> None:
        await response.aread()
        assert response.status_code < 500, (response.status_code, response.text)

    client.event_hooks["response"].append(check)
    yield
    client.event_hooks["response"].remove(check)


@dataclass(frozen=True)
class Account:
    id: str
    email: str
    token: str

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


AccountFactory = Callable[..., Awaitable[Account]]


@pytest.fixture
def make_account(client: httpx.AsyncClient, core: Core) -> AccountFactory:
    """Registers a user over HTTP (or an admin through the use case, as the
    CLI does) and logs them in."""

    async def make(email: str, *, admin: bool = False, name: str = "Test User") -> Account:
        if admin:
            result = await core.users.create_admin(Registration(email, PASSWORD, name))
            user_id = str(result.user.id)
        else:
            created = await client.post(
                "/v1/users", json={"email": email, "password": PASSWORD, "name": name}
            )
            assert created.status_code == 201, created.text
            user_id = created.json()["id"]
        login = await client.post("/v1/auth/token", json={"email": email, "password": PASSWORD})
        assert login.status_code == 200, login.text
        return Account(user_id, email, login.json()["access_token"])

    return make
