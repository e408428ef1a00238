"""API.md "Operations" through HTTP (health, readiness, metrics, OpenAPI),
plus the envelope's deadline and its 5xx rule. One behaviour per table row."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import httpx
import pytest

from ledgerline.domain.money import ISO_4217
from ledgerline.domain.ports import PasswordHasher
from ledgerline.main.core import Core, Overrides
from tests.conftest import with_database
from tests.integration.conftest import PASSWORD, AccountFactory, serving
from tests.integration.http_helpers import assert_error

FAKE_HASH = "$argon2id$v=19$m=8192,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA"
SECRET = "secret detail"


async def user_count(pool: asyncpg.Pool) -> int:
    count = await pool.fetchval("SELECT count(*) FROM users")
    assert isinstance(count, int)
    return count


# --------------------------------------------------------------------------
# Liveness and readiness


@pytest.mark.parametrize("path", ["/healthz", "/readyz"])
async def test_health_answers_head_without_a_body(client: httpx.AsyncClient, path: str) -> None:
    response = await client.head(path)
    assert response.status_code == 200
    assert response.content == b""


async def test_healthz_is_200_ok(client: httpx.AsyncClient) -> None:
    response = await client.get("/healthz")

    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_readyz_is_200_when_the_database_answers(client: httpx.AsyncClient) -> None:
    response = await client.get("/readyz")

    assert response.status_code == 200, response.text
    assert response.json()["status"] == "ok"


@pytest.mark.parametrize(
    ("path", "status"),
    [
        pytest.param("/readyz", 503, id="readyz-503"),
        pytest.param("/healthz", 200, id="healthz-still-200"),
    ],
)
async def test_from_the_moment_shutdown_begins(
    client: httpx.AsyncClient, core: Core, path: str, status: int
) -> None:
    core.readiness.shutting_down = True

    response = await client.get(path)

    if status == 503:
        assert_error(response, 503, "unavailable")
    else:
        assert response.status_code == status
        assert response.json() == {"status": "ok"}


async def test_shutdown_that_begins_during_the_checks_is_named(
    client: httpx.AsyncClient, core: Core
) -> None:
    """A 503 always says why: here every dependency answered, but shutdown
    began while they were asked."""
    readiness = core.readiness

    async def database_then_shutdown() -> None:
        readiness.shutting_down = True

    readiness._probes["database"] = database_then_shutdown

    response = await client.get("/readyz")

    assert_error(response, 503, "unavailable")
    assert response.json()["checks"] == {"database": "ok", "shutdown": "in_progress"}


@contextlib.asynccontextmanager
async def database_refusing_connections(
    pg_server_url: str, database_url: str
) -> AsyncIterator[None]:
    """The test's database stops accepting connections and drops the ones it
    has; afterwards it accepts them again."""
    name = urlsplit(database_url).path.lstrip("/")
    admin = await asyncpg.connect(with_database(pg_server_url, "postgres"))
    try:
        await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", name
        )
        try:
            yield
        finally:
            await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
    finally:
        await admin.close()


@pytest.mark.parametrize(
    "aspect",
    [
        pytest.param("status-503", id="status-503"),
        pytest.param("names-the-database", id="names-the-database"),
        pytest.param(
            "error-envelope",
            id="error-envelope-unavailable",
        ),
        pytest.param(
            "not-reporting-ok",
            id="body-does-not-say-ok",
        ),
        pytest.param("ready-again-after", id="ready-again-after"),
    ],
)
async def test_readyz_when_the_database_is_down(
    client: httpx.AsyncClient, pg_server_url: str, database_url: str, aspect: str
) -> None:
    async with database_refusing_connections(pg_server_url, database_url):
        await asyncio.sleep(0.1)  # let the pool notice its connections are gone
        down = await client.get("/readyz")

    if aspect == "status-503":
        assert down.status_code == 503
    elif aspect == "names-the-database":
        assert down.status_code == 503
        assert "database" in down.text
    elif aspect == "error-envelope":
        body = assert_error(down, 503, "unavailable")
        assert body["message"] == "internal server error"  # API.md: every 5xx says only this
        assert body["checks"]["database"] == "unavailable"
    elif aspect == "not-reporting-ok":
        assert down.json().get("status") != "ok"
    else:
        back = await client.get("/readyz")
        assert back.status_code == 200, back.text


async def test_connections_cut_under_traffic_are_503_never_500(
    client: httpx.AsyncClient,
    make_account: AccountFactory,
    pg_server_url: str,
    database_url: str,
) -> None:
    """The database drops the service's connections while requests run on
    them: each request either succeeds or is 503 unavailable, and service
    resumes on new connections."""
    account = await make_account("cut@example.com")
    name = urlsplit(database_url).path.lstrip("/")
    admin = await asyncpg.connect(with_database(pg_server_url, "postgres"))
    statuses: list[int] = []
    try:
        for _ in range(10):
            cut = admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = $1 AND pid <> pg_backend_pid()",
                name,
            )
            requests = [client.get("/v1/users/me", headers=account.auth) for _ in range(8)]
            *responses, _ = await asyncio.gather(*requests, cut)
            for response in responses:
                assert isinstance(response, httpx.Response)
                statuses.append(response.status_code)
                if response.status_code != 200:
                    assert_error(response, 503, "unavailable")
    finally:
        await admin.close()
    assert set(statuses) <= {200, 503}
    # pg_terminate_backend returns once the signal is sent; a backend may exit
    # a moment later, under a pooled connection that still looked alive. The
    # service must resume on its own within moments, not answer the next
    # request at once.
    after = await _first_ok(client, "/v1/users/me", account.auth, within=5.0)
    assert after.status_code == 200, after.text


async def _first_ok(
    client: httpx.AsyncClient, path: str, headers: dict[str, str], *, within: float
) -> httpx.Response:
    """GET `path` until it answers 200 or `within` seconds pass; the last
    response either way. Anything but 200 or 503 ends the wait at once."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        response = await client.get(path, headers=headers)
        if response.status_code != 503 or loop.time() >= deadline:
            return response
        await asyncio.sleep(0.1)


# --------------------------------------------------------------------------
# Metrics


@pytest.mark.parametrize(
    ("path", "route_label"),
    [
        pytest.param("/v1/users/me", "/v1/users/me", id="static-route"),
        pytest.param(
            "/v1/users/6f1b1f3e-2a4c-4d5e-8f70-123456789abc",
            "/v1/users/{user_id}",
            id="templated-route-not-raw-id",
        ),
        pytest.param("/healthz", "/healthz", id="operations-route"),
    ],
)
async def test_metrics_count_requests_by_route_template(
    client: httpx.AsyncClient, make_account: AccountFactory, path: str, route_label: str
) -> None:
    account = await make_account("ada@example.com")
    await client.get(path, headers=account.auth)

    response = await client.get("/metrics")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    lines = [
        line
        for line in response.text.splitlines()
        if line.startswith("ledgerline_http_requests_total{")
    ]
    assert any(f'route="{route_label}"' in line and 'method="GET"' in line for line in lines), lines


async def test_metrics_do_not_label_unmatched_paths_by_their_raw_path(
    client: httpx.AsyncClient,
) -> None:
    assert (await client.get("/no/such/route-4f2a")).status_code == 404

    response = await client.get("/metrics")

    assert response.status_code == 200
    assert "ledgerline_http_requests_total" in response.text
    assert "route-4f2a" not in response.text


@pytest.mark.parametrize(
    ("method", "path", "status", "route_label"),
    [
        pytest.param("GET", "/v1/users/{}", 404, "/v1/users/{user_id}", id="unknown-user-id"),
        pytest.param("GET", "/v1/users/x{}", 400, "/v1/users/{user_id}", id="id-not-a-uuid"),
        pytest.param(
            "POST", "/v1/orders/{}/pay", 404, "/v1/orders/{order_id}/pay", id="unknown-order"
        ),
        pytest.param("DELETE", "/v1/users/{}", 405, "/v1/users/{user_id}", id="wrong-method"),
        pytest.param("GET", "/v1/users/{}/", 404, "unmatched", id="trailing-slash"),
        pytest.param("GET", "/{}/{}", 404, "unmatched", id="unmatched"),
    ],
)
async def test_metrics_series_do_not_grow_with_the_paths_asked_for(
    client: httpx.AsyncClient,
    make_account: AccountFactory,
    method: str,
    path: str,
    status: int,
    route_label: str,
) -> None:
    """Bounded label sets: five different ids or paths of one kind are one
    series, labelled by the route template (or "unmatched")."""
    account = await make_account("ada@example.com")
    headers = {**account.auth, "Idempotency-Key": "k-1"}
    await client.get("/metrics")  # the scrape's own series exists from here on
    ids = [str(uuid.uuid4()) for _ in range(5)]

    async def ask(some_id: str) -> None:
        url = path.format(some_id, some_id)
        response = await client.request(method, url, headers=headers)
        assert response.status_code == status, response.text

    await ask(ids[0])
    before = _request_series(await client.get("/metrics"))
    for some_id in ids[1:]:
        await ask(some_id)
    after_response = await client.get("/metrics")
    after = _request_series(after_response)

    assert after == before
    assert any(
        f'route="{route_label}"' in line and f'status="{status}"' in line for line in after
    ), after
    assert not any(some_id in after_response.text for some_id in ids)


def _request_series(response: httpx.Response) -> set[str]:
    """The ledgerline_http_requests_total series, without their values."""
    return {
        line.rsplit(" ", 1)[0]
        for line in response.text.splitlines()
        if line.startswith("ledgerline_http_requests_total{")
    }


# --------------------------------------------------------------------------
# OpenAPI


@pytest.fixture
async def openapi(client: httpx.AsyncClient) -> dict[str, Any]:
    response = await client.get("/openapi.json")
    assert response.status_code == 200
    document = response.json()
    assert isinstance(document, dict)
    return document


async def test_openapi_is_version_3_1(openapi: dict[str, Any]) -> None:
    assert isinstance(openapi["openapi"], str)
    assert openapi["openapi"].startswith("3.1")


@pytest.mark.parametrize(
    ("path", "method"),
    [
        pytest.param("/v1/users", "post", id="register"),
        pytest.param("/v1/users", "get", id="find-by-email"),
        pytest.param("/v1/auth/token", "post", id="login"),
        pytest.param("/v1/users/me", "get", id="me"),
        pytest.param("/v1/users/{user_id}", "get", id="by-id"),
        pytest.param("/healthz", "get", id="healthz"),
        pytest.param("/readyz", "get", id="readyz"),
    ],
)
async def test_openapi_documents_the_path(openapi: dict[str, Any], path: str, method: str) -> None:
    assert method in openapi["paths"][path]


def _operations(openapi: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [
        (f"{method.upper()} {path}", operation)
        for path, methods in openapi["paths"].items()
        for method, operation in methods.items()
    ]


async def test_openapi_documents_bad_input_as_400_with_the_error_body(
    openapi: dict[str, Any],
) -> None:
    """Bad input is 400 {"message", "code", "details"} here, never FastAPI's
    422 {"detail"}: the document says what the service does."""
    error_ref = "#/components/schemas/ErrorResponse"
    for name, operation in _operations(openapi):
        if not (operation.get("parameters") or operation.get("requestBody")):
            continue
        bad_input = operation["responses"].get("400")
        assert bad_input is not None, name
        assert bad_input["content"]["application/json"]["schema"]["$ref"] == error_ref, name
    assert "HTTPValidationError" not in json.dumps(openapi)


async def test_openapi_references_resolve(openapi: dict[str, Any]) -> None:
    schemas = openapi["components"]["schemas"]
    refs = set(re.findall(r'"\$ref": "#/components/schemas/([^"]+)"', json.dumps(openapi)))
    assert refs
    assert refs <= set(schemas)


async def test_docs_is_an_html_page(client: httpx.AsyncClient) -> None:
    response = await client.get("/docs")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "<html" in response.text.lower()
    assert "/openapi.json" in response.text


# --------------------------------------------------------------------------
# The request deadline: 504 deadline_exceeded, nothing stored


class SlowHasher:
    """Takes a second for anything: far past a 50 ms request deadline."""

    async def hash(self, password: str) -> str:
        await asyncio.sleep(1)
        return FAKE_HASH

    async def verify(self, password_hash: str, password: str) -> bool:
        await asyncio.sleep(1)
        return False

    async def waste_time(self, password: str) -> None:
        await asyncio.sleep(1)


@pytest.mark.parametrize(
    ("path", "body"),
    [
        pytest.param(
            "/v1/users",
            {"email": "slow@example.com", "password": PASSWORD, "name": "Slow"},
            id="register",
        ),
        pytest.param(
            "/v1/auth/token", {"email": "slow@example.com", "password": PASSWORD}, id="login"
        ),
    ],
)
async def test_a_request_past_its_deadline_is_504(
    database_url: str, pool: asyncpg.Pool, path: str, body: dict[str, str]
) -> None:
    async with serving(
        database_url, Overrides(hasher=SlowHasher()), request_timeout_seconds=0.05
    ) as client:
        loop = asyncio.get_running_loop()
        started = loop.time()
        response = await client.post(path, json=body)
        elapsed = loop.time() - started

    assert_error(response, 504, "deadline_exceeded")
    assert set(response.json()) == {"message", "code"}
    assert elapsed < 0.9  # answered at the deadline, not after the slow work
    await asyncio.sleep(1.1)  # had the work gone on, it would have finished by now
    assert await user_count(pool) == 0


# --------------------------------------------------------------------------
# A 5xx never leaks internals


class ExplodingHasher:
    async def hash(self, password: str) -> str:
        raise RuntimeError(SECRET)

    async def verify(self, password_hash: str, password: str) -> bool:
        raise RuntimeError(SECRET)

    async def waste_time(self, password: str) -> None:
        raise RuntimeError(SECRET)


class NonArgonHasher:
    """Returns a hash the database's check constraint refuses: an unexpected
    database error whose text names the constraint."""

    async def hash(self, password: str) -> str:
        return f"plain:{SECRET}"

    async def verify(self, password_hash: str, password: str) -> bool:
        return False

    async def waste_time(self, password: str) -> None:
        return None


INTERNALS = (SECRET, "RuntimeError", "Traceback", "ck_users_password_hash_argon2id", "asyncpg")


@pytest.mark.parametrize(
    ("hasher", "path", "body"),
    [
        pytest.param(
            ExplodingHasher(),
            "/v1/users",
            {"email": "boom@example.com", "password": PASSWORD, "name": "Boom"},
            id="exception-in-register",
        ),
        pytest.param(
            ExplodingHasher(),
            "/v1/auth/token",
            {"email": "boom@example.com", "password": PASSWORD},
            id="exception-in-login",
        ),
        pytest.param(
            NonArgonHasher(),
            "/v1/users",
            {"email": "boom@example.com", "password": PASSWORD, "name": "Boom"},
            id="database-constraint-error",
        ),
    ],
)
async def test_a_500_never_leaks_internals(
    database_url: str,
    pool: asyncpg.Pool,
    hasher: PasswordHasher,
    path: str,
    body: dict[str, str],
) -> None:
    async with serving(database_url, Overrides(hasher=hasher)) as client:
        response = await client.post(path, json=body)

    assert response.status_code == 500
    assert response.json() == {"message": "internal server error", "code": "internal"}
    assert response.headers.get("X-Request-ID")
    for internal in INTERNALS:
        assert internal not in response.text
    assert await user_count(pool) == 0


def _field(openapi: dict[str, Any], schema: str, field: str) -> dict[str, Any]:
    """The field's schema, or the named schema it refers to (Currency)."""
    schemas = openapi["components"]["schemas"]
    found = schemas[schema]["properties"][field]
    if "$ref" in found:
        found = schemas[found["$ref"].removeprefix("#/components/schemas/")]
    assert isinstance(found, dict)
    return found


def _parameter(openapi: dict[str, Any], path: str, method: str, name: str) -> dict[str, Any]:
    (found,) = [p for p in openapi["paths"][path][method]["parameters"] if p["name"] == name]
    assert isinstance(found, dict)
    return found


@pytest.mark.parametrize(
    ("locate", "expected"),
    [
        pytest.param(
            lambda d: _field(d, "CreditRequest", "amount"),
            {"type": "integer", "minimum": 1, "maximum": 10**12},
            id="credit-amount",
        ),
        pytest.param(
            lambda d: _field(d, "CreateOrderRequest", "amount"),
            {"type": "integer", "minimum": 1, "maximum": 10**12},
            id="order-amount",
        ),
        pytest.param(
            lambda d: _field(d, "RegisterRequest", "email"),
            {"format": "email", "maxLength": 254},
            id="email",
        ),
        pytest.param(
            lambda d: _field(d, "RegisterRequest", "password"),
            {"minLength": 8, "maxLength": 128, "pattern": r"^[^\x00]*$"},
            id="password",
        ),
        pytest.param(lambda d: _field(d, "RegisterRequest", "name"), {"minLength": 1}, id="name"),
        pytest.param(
            lambda d: _parameter(d, "/v1/wallet/entries", "get", "limit"),
            {"required": False, "schema": {"type": "integer", "minimum": 1, "maximum": 100}},
            id="entries-limit",
        ),
        pytest.param(
            lambda d: _parameter(d, "/v1/users", "get", "email"),
            {"required": True, "schema": {"type": "string", "format": "email"}},
            id="find-user-email-required",
        ),
        pytest.param(
            lambda d: _parameter(d, "/v1/orders/{order_id}/pay", "post", "Idempotency-Key"),
            {
                "required": True,
                "schema": {"minLength": 1, "maxLength": 255, "pattern": "^[!-~]{1,255}$"},
            },
            id="pay-idempotency-key",
        ),
        pytest.param(
            lambda d: _parameter(d, "/v1/admin/credits", "post", "Idempotency-Key"),
            {"required": True},
            id="credit-idempotency-key",
        ),
        pytest.param(
            lambda d: _parameter(d, "/v1/orders/{order_id}", "get", "order_id"),
            {"required": True, "schema": {"type": "string", "format": "uuid"}},
            id="order-id-is-a-uuid",
        ),
    ],
)
async def test_openapi_states_the_rules_the_service_enforces(
    openapi: dict[str, Any],
    locate: Callable[[dict[str, Any]], dict[str, Any]],
    expected: dict[str, Any],
) -> None:
    """A few of the rules, pinned; the e2e fuzz run checks them all against
    the running service."""
    found = locate(openapi)
    for key, value in expected.items():
        if isinstance(value, dict):
            assert {k: found[key].get(k) for k in value} == value, found
        else:
            assert found.get(key) == value, found


@pytest.mark.parametrize(
    ("schema", "field"),
    [
        pytest.param("CreditRequest", "currency", id="credit"),
        pytest.param("CreateOrderRequest", "currency", id="order"),
    ],
)
async def test_openapi_lists_exactly_the_accepted_currencies(
    openapi: dict[str, Any], schema: str, field: str
) -> None:
    assert set(_field(openapi, schema, field)["enum"]) == ISO_4217


@pytest.mark.parametrize(
    ("path", "method", "statuses"),
    [
        pytest.param(
            "/v1/users", "post", {"201", "400", "409", "413", "415", "429"}, id="register"
        ),
        pytest.param(
            "/v1/auth/token", "post", {"200", "400", "401", "413", "415", "429"}, id="login"
        ),
        pytest.param("/v1/users/me", "get", {"200", "401"}, id="me"),
        pytest.param("/v1/users", "get", {"200", "400", "401", "403", "404"}, id="find"),
        pytest.param(
            "/v1/admin/credits",
            "post",
            {"201", "400", "401", "403", "404", "409", "413", "415", "422"},
            id="credit",
        ),
        pytest.param(
            "/v1/orders/{order_id}/pay",
            "post",
            {"200", "400", "401", "402", "403", "404", "409", "413", "422"},
            id="pay",
        ),
        pytest.param("/v1/wallet/entries", "get", {"200", "400", "401"}, id="entries"),
    ],
)
async def test_openapi_lists_the_answers_an_operation_gives(
    openapi: dict[str, Any], path: str, method: str, statuses: set[str]
) -> None:
    """Each operation's own answers, plus 500/503/504, which any can give;
    none it cannot give."""
    assert set(openapi["paths"][path][method]["responses"]) == {*statuses, "500", "503", "504"}
