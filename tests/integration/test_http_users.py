"""API.md "Users" through HTTP: registration, login, who may see whom, and
how passwords are kept. One behaviour per table row."""

from __future__ import annotations

import asyncio
import base64
import json
import re
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import jwt
import pytest

from ledgerline.main.core import Overrides
from ledgerline.platform.passwords import Argon2Hasher, Argon2Params
from tests.integration.conftest import (
    JWT_SECRET,
    PASSWORD,
    Account,
    AccountFactory,
    serving,
)
from tests.integration.http_helpers import assert_error

USER_FIELDS = {"id", "email", "name", "created_at", "updated_at"}
RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")


def registration(**fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"email": "ada@example.com", "password": PASSWORD, "name": "Ada"}
    body.update(fields)
    return body


def without(field: str) -> dict[str, Any]:
    body = registration()
    del body[field]
    return body


def assert_user_object(body: object) -> dict[str, Any]:
    assert isinstance(body, dict)
    assert set(body) == USER_FIELDS, body
    uuid.UUID(body["id"])
    return body


async def user_count(pool: asyncpg.Pool) -> int:
    count = await pool.fetchval("SELECT count(*) FROM users")
    assert isinstance(count, int)
    return count


async def login(client: httpx.AsyncClient, email: str, password: str) -> httpx.Response:
    return await client.post("/v1/auth/token", json={"email": email, "password": password})


# --------------------------------------------------------------------------
# POST /v1/users


async def test_register_answers_201_with_the_user_object_and_location(
    client: httpx.AsyncClient,
) -> None:
    response = await client.post("/v1/users", json=registration())

    assert response.status_code == 201, response.text
    body = assert_user_object(response.json())
    assert body["email"] == "ada@example.com"
    assert body["name"] == "Ada"
    assert response.headers["Location"] == f"/v1/users/{body['id']}"
    assert PASSWORD not in response.text
    assert "argon2" not in response.text
    assert "password" not in response.text


@pytest.mark.parametrize(
    ("fields", "stored_email", "stored_name"),
    [
        pytest.param(
            {"email": "  ada@example.com\t"}, "ada@example.com", "Ada", id="email-trimmed"
        ),
        pytest.param(
            {"name": "  Ada Lovelace \n"}, "ada@example.com", "Ada Lovelace", id="name-trimmed"
        ),
        pytest.param(
            {"email": "Ada.Lovelace@Example.COM"},
            "Ada.Lovelace@Example.COM",
            "Ada",
            id="email-case-kept-as-typed",
        ),
        pytest.param({"name": "A"}, "ada@example.com", "A", id="name-1-char"),
        pytest.param({"name": "n" * 100}, "ada@example.com", "n" * 100, id="name-100-chars"),
        pytest.param(
            {"name": "  " + "n" * 100 + "  "},
            "ada@example.com",
            "n" * 100,
            id="name-100-chars-after-trimming",
        ),
        pytest.param({"password": "p" * 8}, "ada@example.com", "Ada", id="password-8-chars"),
        pytest.param({"password": "p" * 128}, "ada@example.com", "Ada", id="password-128-chars"),
        pytest.param(
            {"password": "ü" * 8}, "ada@example.com", "Ada", id="password-8-unicode-chars"
        ),
        pytest.param(
            {"extra": "ignored", "is_admin": True}, "ada@example.com", "Ada", id="unknown-fields"
        ),
    ],
)
async def test_register_accepts_and_stores(
    client: httpx.AsyncClient,
    pool: asyncpg.Pool,
    fields: dict[str, Any],
    stored_email: str,
    stored_name: str,
) -> None:
    response = await client.post("/v1/users", json=registration(**fields))

    assert response.status_code == 201, response.text
    body = assert_user_object(response.json())
    assert (body["email"], body["name"]) == (stored_email, stored_name)
    row = await pool.fetchrow(
        "SELECT email, name, is_admin FROM users WHERE id = $1", uuid.UUID(body["id"])
    )
    assert row is not None
    assert (row["email"], row["name"], row["is_admin"]) == (stored_email, stored_name, False)


@pytest.mark.parametrize(
    ("body", "fields"),
    [
        pytest.param(registration(email="not-an-email"), {"email"}, id="email-no-at"),
        pytest.param(registration(email="ada@"), {"email"}, id="email-no-domain"),
        pytest.param(registration(email="ada@exa mple.com"), {"email"}, id="email-with-space"),
        pytest.param(registration(email=""), {"email"}, id="email-empty"),
        pytest.param(registration(email="   "), {"email"}, id="email-whitespace-only"),
        pytest.param(
            registration(email="a" * 250 + "@example.com"), {"email"}, id="email-too-long"
        ),
        pytest.param(registration(password="p" * 7), {"password"}, id="password-7-chars"),
        pytest.param(registration(password="p" * 129), {"password"}, id="password-129-chars"),
        pytest.param(registration(password=""), {"password"}, id="password-empty"),
        pytest.param(registration(name=""), {"name"}, id="name-empty"),
        pytest.param(registration(name=" \t\n "), {"name"}, id="name-whitespace-only"),
        pytest.param(registration(name="n" * 101), {"name"}, id="name-101-chars"),
        pytest.param(without("email"), {"email"}, id="missing-email"),
        pytest.param(without("password"), {"password"}, id="missing-password"),
        pytest.param(without("name"), {"name"}, id="missing-name"),
        pytest.param({}, {"email", "password", "name"}, id="empty-object"),
        pytest.param(registration(email=123), {"email"}, id="email-is-a-number"),
        pytest.param(registration(password=12345678), {"password"}, id="password-is-a-number"),
        pytest.param(registration(name=None), {"name"}, id="name-is-null"),
        pytest.param(registration(name=["Ada"]), {"name"}, id="name-is-a-list"),
        pytest.param(registration(email={"a": 1}), {"email"}, id="email-is-an-object"),
        pytest.param(
            registration(email="nope", password="short", name=""),
            {"email", "password", "name"},
            id="every-violation-reported-at-once",
        ),
        pytest.param([registration()], set(), id="json-array-body"),
        pytest.param("ada@example.com", set(), id="json-string-body"),
        pytest.param(None, set(), id="json-null-body"),
    ],
)
async def test_register_rejects_invalid_input(
    client: httpx.AsyncClient, pool: asyncpg.Pool, body: Any, fields: set[str]
) -> None:
    response = await client.post(
        "/v1/users",
        content=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )

    error = assert_error(response, 400, "invalid_argument")
    if fields:
        details = error.get("details")
        assert isinstance(details, list), error
        assert all(isinstance(d.get("message"), str) for d in details)
        assert {d["field"] for d in details} >= fields
    # A failed registration changes nothing.
    assert await user_count(pool) == 0


@pytest.mark.parametrize(
    "password",
    [
        pytest.param("password123", id="ascii"),
        pytest.param("pässwörd-日本語", id="unicode"),
        pytest.param("x" * 128, id="max-length"),
    ],
)
async def test_a_failed_registration_cannot_be_logged_into(
    client: httpx.AsyncClient, pool: asyncpg.Pool, password: str
) -> None:
    rejected = await client.post(
        "/v1/users", json=registration(email="ghost@example.com", password=password, name="")
    )
    assert_error(rejected, 400, "invalid_argument")

    assert_error(await login(client, "ghost@example.com", password), 401, "unauthenticated")
    assert await user_count(pool) == 0


@pytest.mark.parametrize(
    ("first_email", "second_email"),
    [
        pytest.param("ada@example.com", "ada@example.com", id="same-spelling"),
        pytest.param("ada@example.com", "ADA@EXAMPLE.COM", id="upper-case"),
        pytest.param("ada@example.com", "Ada@Example.Com", id="mixed-case"),
        pytest.param("ada@example.com", "  ada@example.com  ", id="surrounding-spaces"),
        pytest.param("ada@example.com", " AdA@eXaMpLe.CoM\t", id="mixed-case-and-spaces"),
        pytest.param("ADA@EXAMPLE.COM", "ada@example.com", id="first-upper-then-lower"),
        pytest.param("ünal@example.com", "ÜNAL@example.com", id="non-ascii-case"),
    ],
)
async def test_register_duplicate_email_is_409_conflict(
    client: httpx.AsyncClient, pool: asyncpg.Pool, first_email: str, second_email: str
) -> None:
    first = await client.post("/v1/users", json=registration(email=first_email))
    assert first.status_code == 201, first.text

    second = await client.post(
        "/v1/users",
        json=registration(email=second_email, password="another password", name="Impostor"),
    )

    assert_error(second, 409, "conflict")
    assert await user_count(pool) == 1
    # The first registration is untouched: its password still works, the new one does not.
    assert (await login(client, first_email, PASSWORD)).status_code == 200
    assert_error(await login(client, first_email, "another password"), 401, "unauthenticated")
    assert await pool.fetchval("SELECT name FROM users") == "Ada"


@pytest.mark.parametrize(
    ("endpoint", "field"),
    [
        pytest.param("register", "created_at", id="register-created_at"),
        pytest.param("register", "updated_at", id="register-updated_at"),
        pytest.param("me", "created_at", id="me-created_at"),
        pytest.param("me", "updated_at", id="me-updated_at"),
        pytest.param("by-id", "created_at", id="by-id-created_at"),
        pytest.param("by-id", "updated_at", id="by-id-updated_at"),
    ],
)
async def test_timestamps_are_rfc3339_in_utc(
    client: httpx.AsyncClient, endpoint: str, field: str
) -> None:
    before = datetime.now(UTC)
    created = await client.post("/v1/users", json=registration())
    assert created.status_code == 201, created.text
    user = created.json()
    if endpoint != "register":
        token = (await login(client, "ada@example.com", PASSWORD)).json()["access_token"]
        path = "/v1/users/me" if endpoint == "me" else f"/v1/users/{user['id']}"
        fetched = await client.get(path, headers={"Authorization": f"Bearer {token}"})
        assert fetched.status_code == 200, fetched.text
        user = fetched.json()

    raw = user[field]
    assert isinstance(raw, str)
    assert RFC3339.match(raw), raw
    parsed = datetime.fromisoformat(raw)
    assert parsed.tzinfo is not None
    assert parsed.utcoffset() == timedelta(0)
    assert before - timedelta(seconds=5) <= parsed <= datetime.now(UTC) + timedelta(seconds=5)


# --------------------------------------------------------------------------
# Passwords at rest


@pytest.mark.parametrize(
    "password",
    [
        pytest.param(PASSWORD, id="ascii-with-spaces"),
        pytest.param("pässwörd-日本語", id="unicode"),
        pytest.param("x" * 128, id="max-length"),
        pytest.param("  padded  ", id="spaces-kept-not-trimmed"),
    ],
)
async def test_passwords_are_stored_as_argon2id_only(
    client: httpx.AsyncClient, pool: asyncpg.Pool, password: str
) -> None:
    created = await client.post("/v1/users", json=registration(password=password))
    assert created.status_code == 201, created.text

    stored = await pool.fetchval(
        "SELECT password_hash FROM users WHERE id = $1", uuid.UUID(created.json()["id"])
    )
    assert isinstance(stored, str)
    assert stored.startswith("$argon2id$")
    assert password not in stored
    assert stored not in created.text
    # The hash is of the password exactly as sent (not trimmed): it logs in.
    assert (await login(client, "ada@example.com", password)).status_code == 200
    if password != password.strip():
        assert_error(
            await login(client, "ada@example.com", password.strip()), 401, "unauthenticated"
        )


# --------------------------------------------------------------------------
# POST /v1/auth/token


async def test_login_answers_a_bearer_token(client: httpx.AsyncClient) -> None:
    created = await client.post("/v1/users", json=registration())
    assert created.status_code == 201, created.text

    response = await login(client, "ada@example.com", PASSWORD)

    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"access_token", "token_type", "expires_in"}
    assert body["token_type"] == "Bearer"
    assert isinstance(body["expires_in"], int)
    assert not isinstance(body["expires_in"], bool)
    assert body["expires_in"] > 0
    assert isinstance(body["access_token"], str)
    assert body["access_token"]
    me = await client.get(
        "/v1/users/me", headers={"Authorization": f"Bearer {body['access_token']}"}
    )
    assert me.status_code == 200
    assert me.json()["id"] == created.json()["id"]


@pytest.mark.parametrize(
    ("registered_as", "login_as"),
    [
        pytest.param("ada@example.com", "ADA@EXAMPLE.COM", id="upper-case-login"),
        pytest.param("ada@example.com", "Ada@Example.Com", id="mixed-case-login"),
        pytest.param("ada@example.com", "  ada@example.com ", id="login-with-spaces"),
        pytest.param("Ada@Example.COM", "ada@example.com", id="registered-mixed-login-lower"),
        pytest.param("Ünal@example.com", "ünal@EXAMPLE.com", id="non-ascii-case"),
    ],
)
async def test_login_email_is_case_insensitive(
    client: httpx.AsyncClient, registered_as: str, login_as: str
) -> None:
    created = await client.post("/v1/users", json=registration(email=registered_as))
    assert created.status_code == 201, created.text

    response = await login(client, login_as, PASSWORD)

    assert response.status_code == 200, response.text
    token = response.json()["access_token"]
    me = await client.get("/v1/users/me", headers={"Authorization": f"Bearer {token}"})
    assert me.json()["id"] == created.json()["id"]


@pytest.mark.parametrize(
    ("email", "password"),
    [
        pytest.param("ada@example.com", "wrong password", id="wrong-password"),
        pytest.param("ada@example.com", PASSWORD.upper(), id="password-is-case-sensitive"),
        pytest.param("ada@example.com", PASSWORD + " ", id="password-not-trimmed"),
        pytest.param("ada@example.com", "", id="empty-password"),
        pytest.param("bob@example.com", PASSWORD, id="unknown-email"),
        pytest.param("not-an-email", PASSWORD, id="malformed-email"),
        pytest.param("", PASSWORD, id="empty-email"),
    ],
)
async def test_login_failures_are_one_indistinguishable_401(
    client: httpx.AsyncClient, email: str, password: str
) -> None:
    created = await client.post("/v1/users", json=registration())
    assert created.status_code == 201, created.text
    reference = await login(client, "nobody@example.com", PASSWORD)
    assert_error(reference, 401, "unauthenticated")

    response = await login(client, email, password)

    assert_error(response, 401, "unauthenticated")
    assert response.json() == reference.json()
    assert "access_token" not in response.text


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({"email": "ada@example.com"}, id="missing-password"),
        pytest.param({"password": PASSWORD}, id="missing-email"),
        pytest.param({"email": 1, "password": PASSWORD}, id="email-is-a-number"),
        pytest.param([], id="json-array-body"),
    ],
)
async def test_login_with_a_malformed_request_is_400(client: httpx.AsyncClient, body: Any) -> None:
    response = await client.post("/v1/auth/token", json=body)

    assert_error(response, 400, "invalid_argument")


class CountingHasher:
    """A real Argon2id hasher that counts the verifications it spends."""

    def __init__(self, executor: ThreadPoolExecutor) -> None:
        self._real = Argon2Hasher(Argon2Params(1, 8 * 1024, 1), executor)
        self.verifications = 0

    async def hash(self, password: str) -> str:
        return await self._real.hash(password)

    async def verify(self, password_hash: str, password: str) -> bool:
        self.verifications += 1
        return await self._real.verify(password_hash, password)

    async def waste_time(self, password: str) -> None:
        self.verifications += 1
        await self._real.waste_time(password)


@pytest.mark.parametrize(
    ("email", "password"),
    [
        pytest.param("ada@example.com", "wrong password", id="wrong-password"),
        pytest.param("bob@example.com", PASSWORD, id="unknown-email"),
        pytest.param("not-an-email", PASSWORD, id="malformed-email"),
        pytest.param("ada@example.com", PASSWORD, id="right-password"),
    ],
)
async def test_every_login_spends_one_password_verification(
    database_url: str, email: str, password: str
) -> None:
    """Wrong email and wrong password take about the same time: each costs
    exactly one Argon2id verification."""
    with ThreadPoolExecutor(1) as executor:
        hasher = CountingHasher(executor)
        async with serving(database_url, Overrides(hasher=hasher)) as client:
            created = await client.post("/v1/users", json=registration())
            assert created.status_code == 201, created.text
            hasher.verifications = 0

            response = await login(client, email, password)

            assert response.status_code == (
                200 if password == PASSWORD and email == "ada@example.com" else 401
            )
            assert hasher.verifications == 1


# --------------------------------------------------------------------------
# GET /v1/users/me


async def test_me_answers_the_caller(
    client: httpx.AsyncClient, make_account: AccountFactory
) -> None:
    account = await make_account("ada@example.com", name="Ada")

    response = await client.get("/v1/users/me", headers=account.auth)

    assert response.status_code == 200, response.text
    body = assert_user_object(response.json())
    assert (body["id"], body["email"], body["name"]) == (account.id, "ada@example.com", "Ada")


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def _claims(account: Account, **changes: Any) -> dict[str, Any]:
    now = datetime.now(UTC)
    claims: dict[str, Any] = {
        "iss": "ledgerline",
        "sub": account.id,
        "adm": False,
        "iat": now,
        "exp": now + timedelta(minutes=5),
    }
    claims.update(changes)
    return {k: v for k, v in claims.items() if v is not None}


def _signed(claims: dict[str, Any], secret: str = JWT_SECRET) -> str:
    return jwt.encode(claims, secret, algorithm="HS256")


def _unsigned(account: Account) -> str:
    now = int(datetime.now(UTC).timestamp())
    claims = {"iss": "ledgerline", "sub": account.id, "adm": True, "iat": now, "exp": now + 300}
    return f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(claims)}."


AuthHeaders = Callable[[Account], dict[str, str]]
BAD_CREDENTIALS: list[Any] = [
    pytest.param(lambda a: {}, id="no-authorization-header"),
    pytest.param(lambda a: {"Authorization": "Bearer garbage"}, id="bearer-garbage"),
    pytest.param(lambda a: {"Authorization": "Bearer "}, id="bearer-empty"),
    pytest.param(lambda a: {"Authorization": "Basic dXNlcjpwYXNzd29yZA=="}, id="basic-scheme"),
    pytest.param(lambda a: {"Authorization": a.token}, id="token-without-scheme"),
    pytest.param(lambda a: {"Authorization": f"Token {a.token}"}, id="other-scheme"),
    pytest.param(lambda a: {"Authorization": f"Bearer {a.token}x"}, id="tampered-token"),
    pytest.param(
        lambda a: {"Authorization": f"Bearer {_signed(_claims(a), 'another-secret-' * 4)}"},
        id="signed-with-another-secret",
    ),
    pytest.param(
        lambda a: {
            "Authorization": "Bearer "
            + _signed(
                _claims(
                    a,
                    iat=datetime.now(UTC) - timedelta(hours=2),
                    exp=datetime.now(UTC) - timedelta(hours=1),
                )
            )
        },
        id="expired",
    ),
    pytest.param(
        lambda a: {"Authorization": f"Bearer {_signed(_claims(a, iss='someone-else'))}"},
        id="wrong-issuer",
    ),
    pytest.param(
        lambda a: {"Authorization": f"Bearer {_signed(_claims(a, exp=None))}"},
        id="no-expiry",
    ),
    pytest.param(lambda a: {"Authorization": f"Bearer {_unsigned(a)}"}, id="alg-none"),
    pytest.param(
        lambda a: {"Authorization": f"Bearer {_signed(_claims(a, sub=str(uuid.uuid4())))}"},
        id="valid-token-of-a-user-who-does-not-exist",
    ),
    pytest.param(
        lambda a: {"Authorization": f"Bearer {_signed(_claims(a, sub='not-a-uuid'))}"},
        id="subject-not-a-uuid",
    ),
]


@pytest.mark.parametrize("auth", BAD_CREDENTIALS)
async def test_me_without_valid_credentials_is_401(
    client: httpx.AsyncClient, make_account: AccountFactory, auth: AuthHeaders
) -> None:
    account = await make_account("ada@example.com")

    response = await client.get("/v1/users/me", headers=auth(account))

    assert_error(response, 401, "unauthenticated")
    assert account.email not in response.text


# --------------------------------------------------------------------------
# GET /v1/users/{id}


@dataclass(frozen=True)
class People:
    user: Account
    other: Account
    admin: Account


@pytest.fixture
async def people(make_account: AccountFactory) -> People:
    return People(
        user=await make_account("user@example.com", name="User"),
        other=await make_account("other@example.com", name="Other"),
        admin=await make_account("admin@example.com", admin=True, name="Admin"),
    )


def _target(people: People, target: str) -> str:
    accounts = {"user": people.user, "other": people.other, "admin": people.admin}
    return accounts[target].id if target in accounts else target


@pytest.mark.parametrize(
    ("caller", "target", "status", "code", "expected_email"),
    [
        pytest.param("user", "user", 200, None, "user@example.com", id="user-sees-self"),
        pytest.param("user", "other", 404, "not_found", None, id="user-cannot-see-other"),
        pytest.param("user", "admin", 404, "not_found", None, id="user-cannot-see-admin"),
        pytest.param("user", str(uuid.uuid4()), 404, "not_found", None, id="user-random-uuid"),
        pytest.param("admin", "admin", 200, None, "admin@example.com", id="admin-sees-self"),
        pytest.param("admin", "other", 200, None, "other@example.com", id="admin-sees-other"),
        pytest.param("admin", str(uuid.uuid4()), 404, "not_found", None, id="admin-random-uuid"),
        pytest.param("user", "not-a-uuid", 400, "invalid_argument", None, id="non-uuid-id"),
        pytest.param("user", "12345", 400, "invalid_argument", None, id="numeric-id"),
        pytest.param("admin", "not-a-uuid", 400, "invalid_argument", None, id="admin-non-uuid-id"),
        pytest.param(None, "user", 401, "unauthenticated", None, id="anonymous-self-id"),
    ],
)
async def test_get_user_by_id(
    client: httpx.AsyncClient,
    people: People,
    caller: str | None,
    target: str,
    status: int,
    code: str | None,
    expected_email: str | None,
) -> None:
    headers = {"user": people.user.auth, "admin": people.admin.auth}.get(caller or "", {})
    user_id = _target(people, target)

    response = await client.get(f"/v1/users/{user_id}", headers=headers)

    if code is None:
        assert response.status_code == status, response.text
        body = assert_user_object(response.json())
        assert (body["id"], body["email"]) == (user_id, expected_email)
    else:
        assert_error(response, status, code)
        assert "@example.com" not in response.text


async def test_another_users_id_is_indistinguishable_from_a_missing_one(
    client: httpx.AsyncClient, people: People
) -> None:
    existing = await client.get(f"/v1/users/{people.other.id}", headers=people.user.auth)
    missing = await client.get(f"/v1/users/{uuid.uuid4()}", headers=people.user.auth)

    assert (existing.status_code, existing.json()) == (missing.status_code, missing.json())


async def test_non_uuid_id_names_the_parameter(client: httpx.AsyncClient, people: People) -> None:
    response = await client.get("/v1/users/not-a-uuid", headers=people.user.auth)

    body = assert_error(response, 400, "invalid_argument")
    assert [d["field"] for d in body.get("details", [])] == ["user_id"]


# --------------------------------------------------------------------------
# GET /v1/users?email=


@pytest.mark.parametrize(
    ("caller", "query", "status", "code", "expected"),
    [
        pytest.param("admin", {"email": "other@example.com"}, 200, None, "other", id="admin-exact"),
        pytest.param(
            "admin", {"email": "OTHER@Example.COM"}, 200, None, "other", id="admin-case-insensitive"
        ),
        pytest.param(
            "admin", {"email": " other@example.com "}, 200, None, "other", id="admin-trimmed"
        ),
        pytest.param("admin", {"email": "admin@example.com"}, 200, None, "admin", id="admin-self"),
        pytest.param(
            "admin", {"email": "nobody@example.com"}, 404, "not_found", None, id="admin-unknown"
        ),
        pytest.param(
            "user",
            {"email": "other@example.com"},
            403,
            "permission_denied",
            None,
            id="non-admin-existing",
        ),
        pytest.param(
            "user",
            {"email": "user@example.com"},
            403,
            "permission_denied",
            None,
            id="non-admin-self",
        ),
        pytest.param(
            "user",
            {"email": "nobody@example.com"},
            403,
            "permission_denied",
            None,
            id="non-admin-unknown",
        ),
        pytest.param("user", {}, 403, "permission_denied", None, id="non-admin-no-email"),
        pytest.param(
            "user", {"email": "x" * 2000}, 403, "permission_denied", None, id="non-admin-too-long"
        ),
        pytest.param(
            "admin", {"email": "x" * 2000}, 400, "invalid_argument", None, id="too-long-email"
        ),
        pytest.param("admin", {}, 400, "invalid_argument", None, id="missing-email-param"),
        pytest.param("admin", {"email": ""}, 400, "invalid_argument", None, id="empty-email-param"),
        pytest.param(
            "admin", {"email": "not-an-email"}, 400, "invalid_argument", None, id="bad-email-syntax"
        ),
        pytest.param(
            None, {"email": "other@example.com"}, 401, "unauthenticated", None, id="anonymous"
        ),
    ],
)
async def test_find_user_by_email(
    client: httpx.AsyncClient,
    people: People,
    caller: str | None,
    query: dict[str, str],
    status: int,
    code: str | None,
    expected: str | None,
) -> None:
    headers = {"user": people.user.auth, "admin": people.admin.auth}.get(caller or "", {})

    response = await client.get("/v1/users", params=query, headers=headers)

    if code is None:
        assert response.status_code == status, response.text
        body = assert_user_object(response.json())
        assert body["id"] == _target(people, expected or "")
    else:
        assert_error(response, status, code)
        assert "other@example.com" not in response.json()["message"]


async def test_two_registrations_at_once_give_one_user(
    client: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    emails = ["race@example.com", "RACE@example.com", " Race@Example.com "]

    responses = await asyncio.gather(
        *(client.post("/v1/users", json=registration(email=e)) for e in emails)
    )

    assert sorted(r.status_code for r in responses) == [201, 409, 409]
    for r in responses:
        if r.status_code == 409:
            assert_error(r, 409, "conflict")
    assert await user_count(pool) == 1
