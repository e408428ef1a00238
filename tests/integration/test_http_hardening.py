"""Bad input found in review: each is a clear 4xx that changes nothing,
never a 5xx."""

from __future__ import annotations

import base64

import asyncpg
import httpx
import pytest

from tests.integration.conftest import PASSWORD, AccountFactory
from tests.integration.http_helpers import assert_error, headers, new_key

pytestmark = pytest.mark.usefixtures("no_server_errors")
JSON = {"Content-Type": "application/json"}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        pytest.param(
            b'{"email":"a@example.com","password":"password1","name":"a\\u0000b"}',
            "name",
            id="nul-in-name",
        ),
        pytest.param(
            b'{"email":"a@example.com","password":"password1","name":"a\\ud800"}',
            "name",
            id="lone-surrogate-in-name",
        ),
        pytest.param(
            b'{"email":"a@example.com","password":"pass\\u0000word1","name":"A"}',
            "password",
            id="nul-in-password",
        ),
        pytest.param(
            b'{"email":"a\\u0000@example.com","password":"password1","name":"A"}',
            "email",
            id="nul-in-email",
        ),
    ],
)
async def test_unstorable_text_on_registration_is_400(
    client: httpx.AsyncClient, pool: asyncpg.Pool, body: bytes, field: str
) -> None:
    response = await client.post("/v1/users", content=body, headers=JSON)
    error = assert_error(response, 400, "invalid_argument")
    assert [d["field"] for d in error["details"]] == [field]
    assert await pool.fetchval("SELECT count(*) FROM users") == 0


@pytest.mark.parametrize(
    ("password", "status", "code"),
    [
        pytest.param("\\ud800", 400, "invalid_argument", id="lone-surrogate-is-not-json-text"),
        pytest.param("pass\\u0000word", 401, "unauthenticated", id="nul-is-a-wrong-password"),
    ],
)
async def test_unstorable_password_on_login_is_never_a_5xx(
    client: httpx.AsyncClient, make_account: AccountFactory, password: str, status: int, code: str
) -> None:
    await make_account("ada@example.com")
    body = f'{{"email":"ada@example.com","password":"{password}"}}'.encode()
    response = await client.post("/v1/auth/token", content=body, headers=JSON)
    assert_error(response, status, code)


async def test_nul_in_an_order_description_is_400(
    client: httpx.AsyncClient, make_account: AccountFactory, pool: asyncpg.Pool
) -> None:
    payer, payee = await make_account("p@example.com"), await make_account("q@example.com")
    body = f'{{"payee_id":"{payee.id}","amount":5,"currency":"EUR","description":"a\\u0000"}}'
    response = await client.post(
        "/v1/orders", content=body.encode(), headers={**JSON, **payer.auth}
    )
    assert_error(response, 400, "invalid_argument")
    assert await pool.fetchval("SELECT count(*) FROM orders") == 0


@pytest.mark.parametrize(
    "seq",
    ["99999999999999999999", "9223372036854775808", "0", "-1"],
    ids=["past-bigint", "bigint-plus-one", "zero", "negative"],
)
async def test_a_forged_cursor_is_400(
    client: httpx.AsyncClient, make_account: AccountFactory, seq: str
) -> None:
    account = await make_account("c@example.com")
    cursor = base64.urlsafe_b64encode(f"v1:{seq}".encode()).decode().rstrip("=")
    response = await client.get(
        "/v1/wallet/entries", params={"cursor": cursor}, headers=account.auth
    )
    assert_error(response, 400, "invalid_argument")


NESTED = b"[" * 30_000 + b"]" * 30_000


async def test_a_deeply_nested_body_on_a_credit_is_400(
    client: httpx.AsyncClient, make_account: AccountFactory
) -> None:
    admin = await make_account("root@example.com", admin=True)
    response = await client.post(
        "/v1/admin/credits", content=NESTED, headers={**JSON, **admin.auth, "Idempotency-Key": "k"}
    )
    assert_error(response, 400, "invalid_argument")


async def test_a_deeply_nested_body_on_pay_is_ignored(
    client: httpx.AsyncClient, make_account: AccountFactory
) -> None:
    """Pay takes no body: this one is never parsed; the payer has no money."""
    payer, payee = await make_account("p@example.com"), await make_account("q@example.com")
    order = await client.post(
        "/v1/orders",
        json={"payee_id": payee.id, "amount": 5, "currency": "EUR"},
        headers=payer.auth,
    )
    response = await client.post(
        f"/v1/orders/{order.json()['id']}/pay",
        content=NESTED,
        headers={**JSON, **{k.decode(): v.decode() for k, v in headers(payer, new_key()).items()}},
    )
    assert_error(response, 402, "insufficient_funds")


async def test_a_non_admin_credit_without_a_key_is_403_not_400(
    client: httpx.AsyncClient, make_account: AccountFactory
) -> None:
    user = await make_account("u@example.com")
    response = await client.post(
        "/v1/admin/credits",
        json={"user_id": user.id, "amount": 5, "currency": "EUR"},
        headers=user.auth,
    )
    assert_error(response, 403, "permission_denied")


@pytest.mark.parametrize(
    ("content", "content_type"),
    [
        pytest.param(b"{}", "application/json", id="no-fields"),
        pytest.param(
            b'{"user_id": "nope", "amount": "5", "currency": 7}',
            "application/json",
            id="every-field-wrong",
        ),
        pytest.param(b'{"user_id": ', "application/json", id="malformed-json"),
        pytest.param(b'{"amount": 5, "amount": 6}', "application/json", id="duplicate-key"),
        pytest.param(b"\xff\xfe{\x00}\x00", "application/json", id="not-utf-8"),
        pytest.param(NESTED, "application/json", id="deeply-nested"),
        pytest.param(b"", "application/json", id="no-body"),
        pytest.param(b"amount=5", "application/x-www-form-urlencoded", id="not-json"),
        pytest.param(b"{}", "application/json; charset=utf-16", id="charset-utf-16"),
    ],
)
@pytest.mark.parametrize("key", ["k-1", None], ids=["with-key", "without-key"])
async def test_a_non_admin_credit_is_403_whatever_the_body(
    client: httpx.AsyncClient,
    make_account: AccountFactory,
    content: bytes,
    content_type: str,
    key: str | None,
) -> None:
    """Permission comes before validation, as for pay and refund: a caller
    who may not credit learns nothing about what a valid credit looks like."""
    user = await make_account("u@example.com")
    sent = {**headers(user, key), b"content-type": content_type.encode()}
    response = await client.post("/v1/admin/credits", content=content, headers=sent)
    assert_error(response, 403, "permission_denied")


@pytest.mark.parametrize(
    ("content", "token"),
    [
        pytest.param(b"{}", None, id="no-token-no-fields"),
        pytest.param(b'{"user_id": ', None, id="no-token-malformed-json"),
        pytest.param(b"{}", "not-a-jwt", id="bad-token-no-fields"),
    ],
)
async def test_an_unauthenticated_credit_is_401_whatever_the_body(
    client: httpx.AsyncClient, content: bytes, token: str | None
) -> None:
    sent = {"Content-Type": "application/json", "Idempotency-Key": "k-1"}
    if token is not None:
        sent["Authorization"] = f"Bearer {token}"
    response = await client.post("/v1/admin/credits", content=content, headers=sent)
    assert_error(response, 401, "unauthenticated")


async def test_a_retry_spelling_the_order_id_in_upper_case_replays(
    client: httpx.AsyncClient, make_account: AccountFactory
) -> None:
    admin = await make_account("admin@example.com", admin=True)
    payer, payee = await make_account("p@example.com"), await make_account("q@example.com")
    credit = await client.post(
        "/v1/admin/credits",
        json={"user_id": payer.id, "amount": 50, "currency": "EUR"},
        headers={**admin.auth, "Idempotency-Key": new_key()},
    )
    assert credit.status_code == 201
    order = await client.post(
        "/v1/orders",
        json={"payee_id": payee.id, "amount": 5, "currency": "EUR"},
        headers=payer.auth,
    )
    order_id = order.json()["id"]
    key = {**payer.auth, "Idempotency-Key": "one-key"}
    first = await client.post(f"/v1/orders/{order_id}/pay", headers=key)
    again = await client.post(f"/v1/orders/{order_id.upper()}/pay", headers=key)
    assert first.status_code == again.status_code == 200
    assert first.content == again.content


async def test_non_ascii_emails_are_unique_and_log_in_case_insensitively(
    client: httpx.AsyncClient,
) -> None:
    body = {"email": "Éva@example.com", "password": PASSWORD, "name": "Éva"}
    assert (await client.post("/v1/users", json=body)).status_code == 201
    twin = await client.post("/v1/users", json={**body, "email": "éva@example.com"})
    assert_error(twin, 409, "conflict")
    login = await client.post(
        "/v1/auth/token", json={"email": "ÉVA@EXAMPLE.COM", "password": PASSWORD}
    )
    assert login.status_code == 200, login.text


async def test_an_email_spelled_in_another_unicode_form_is_the_same_account(
    client: httpx.AsyncClient,
) -> None:
    composed = {"email": "ünï@exämple.com", "password": PASSWORD, "name": "Ünï"}
    assert (await client.post("/v1/users", json=composed)).status_code == 201
    for spelling in ("u\u0308ni\u0308@exa\u0308mple.com", "ünï@xn--exmple-cua.com"):
        twin = await client.post("/v1/users", json={**composed, "email": spelling})
        assert_error(twin, 409, "conflict")
        login = await client.post("/v1/auth/token", json={"email": spelling, "password": PASSWORD})
        assert login.status_code == 200, login.text
