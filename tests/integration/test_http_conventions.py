"""API.md "Conventions (REST)" and "Errors" through HTTP: media types,
malformed JSON, the body size limit, the error envelope and X-Request-ID.
One behaviour per table row."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import httpx
import pytest

from tests.integration.conftest import PASSWORD, AccountFactory
from tests.integration.http_helpers import assert_error

LIMIT = 64 * 1024
REQUEST_ID = "X-Request-ID"
VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")


def registration_bytes(email: str = "ada@example.com", size: int | None = None) -> bytes:
    """A valid registration, padded with JSON whitespace to exactly ``size`` bytes."""
    body = json.dumps({"email": email, "password": PASSWORD, "name": "Ada"}).encode()
    if size is not None:
        assert size >= len(body)
        body += b" " * (size - len(body))
    return body


async def chunks(data: bytes, size: int = 4096) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


async def user_count(pool: asyncpg.Pool) -> int:
    count = await pool.fetchval("SELECT count(*) FROM users")
    assert isinstance(count, int)
    return count


@dataclass(frozen=True)
class Call:
    method: str
    path: str
    json: Any = None
    content: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    who: str | None = None  # "user" or "admin": sends that account's token
    streamed: bool = False


# --------------------------------------------------------------------------
# Content-Type


@pytest.mark.parametrize(
    ("path", "headers", "content"),
    [
        pytest.param(
            "/v1/users", {"Content-Type": "text/plain"}, registration_bytes(), id="text-plain"
        ),
        pytest.param(
            "/v1/users",
            {"Content-Type": "application/x-www-form-urlencoded"},
            b"email=ada%40example.com&password=correct+horse+battery&name=Ada",
            id="form-urlencoded",
        ),
        pytest.param(
            "/v1/users",
            {"Content-Type": "multipart/form-data; boundary=xyz"},
            b'--xyz\r\nContent-Disposition: form-data; name="email"\r\n\r\na@b.c\r\n--xyz--\r\n',
            id="multipart",
        ),
        pytest.param(
            "/v1/users", {"Content-Type": "application/xml"}, b"<user/>", id="application-xml"
        ),
        pytest.param(
            "/v1/users",
            {"Content-Type": "text/json"},
            registration_bytes(),
            id="text-json-is-not-json",
        ),
        pytest.param("/v1/users", {}, registration_bytes(), id="no-content-type"),
        pytest.param(
            "/v1/auth/token",
            {"Content-Type": "text/plain"},
            json.dumps({"email": "ada@example.com", "password": PASSWORD}).encode(),
            id="token-endpoint-text-plain",
        ),
    ],
)
async def test_a_body_that_is_not_json_is_415(
    client: httpx.AsyncClient,
    pool: asyncpg.Pool,
    path: str,
    headers: dict[str, str],
    content: bytes,
) -> None:
    response = await client.post(path, content=content, headers=headers)

    assert_error(response, 415, "unsupported_media_type")
    assert await user_count(pool) == 0


@pytest.mark.parametrize(
    "content_type",
    [
        pytest.param("application/json", id="plain"),
        pytest.param("application/json; charset=utf-8", id="charset-utf-8"),
        pytest.param("application/json;charset=UTF-8", id="charset-no-space-upper"),
        pytest.param("Application/JSON", id="media-type-is-case-insensitive"),
        pytest.param('application/json; charset="utf-8"', id="charset-quoted"),
        pytest.param("application/merge-patch+json; charset=utf-8", id="plus-json-charset"),
    ],
)
async def test_json_media_types_are_accepted(
    client: httpx.AsyncClient, pool: asyncpg.Pool, content_type: str
) -> None:
    response = await client.post(
        "/v1/users", content=registration_bytes(), headers={"Content-Type": content_type}
    )

    assert response.status_code == 201, response.text
    assert await user_count(pool) == 1


# --------------------------------------------------------------------------
# Malformed JSON


@pytest.mark.parametrize(
    ("path", "content"),
    [
        pytest.param("/v1/users", b'{"email": "ada@example.com", ', id="truncated"),
        pytest.param("/v1/users", b"{'email': 'ada@example.com'}", id="single-quotes"),
        pytest.param(
            "/v1/users",
            b'{"email": "ada@example.com", "password": "password1", "name": "A",}',
            id="trailing-comma",
        ),
        pytest.param("/v1/users", b"nul", id="bare-word"),
        pytest.param("/v1/users", b"{} {}", id="two-documents"),
        pytest.param("/v1/users", b"\xff\xfe{\x00}\x00", id="not-utf-8"),
        pytest.param("/v1/users", b"", id="empty-body"),
        pytest.param("/v1/auth/token", b'{"email": ', id="token-endpoint-truncated"),
    ],
)
async def test_malformed_json_is_400(
    client: httpx.AsyncClient, pool: asyncpg.Pool, path: str, content: bytes
) -> None:
    response = await client.post(
        path, content=content, headers={"Content-Type": "application/json"}
    )

    assert_error(response, 400, "invalid_argument")
    assert await user_count(pool) == 0


# --------------------------------------------------------------------------
# UTF-8 and duplicate keys (docs/decisions.md)

REGISTRATION = '{"email": "ada@example.com", "password": "correct horse battery", "name": "Ada"}'


@pytest.mark.parametrize(
    ("content_type", "content"),
    [
        pytest.param("charset=utf-16", REGISTRATION.encode("utf-16"), id="utf-16"),
        pytest.param("charset=UTF-16LE", REGISTRATION.encode("utf-16-le"), id="utf-16le"),
        pytest.param("charset=utf-32", REGISTRATION.encode("utf-32"), id="utf-32"),
        pytest.param("charset=iso-8859-1", REGISTRATION.encode("latin-1"), id="latin-1"),
        pytest.param('charset="us-ascii"', REGISTRATION.encode("ascii"), id="ascii-quoted"),
        pytest.param("charset=utf8", REGISTRATION.encode(), id="not-the-registered-name"),
        pytest.param("charset=", REGISTRATION.encode(), id="empty-charset"),
    ],
)
async def test_a_charset_other_than_utf_8_is_415(
    client: httpx.AsyncClient, pool: asyncpg.Pool, content_type: str, content: bytes
) -> None:
    response = await client.post(
        "/v1/users",
        content=content,
        headers={"Content-Type": f"application/json; {content_type}"},
    )

    body = assert_error(response, 415, "unsupported_media_type")
    assert "UTF-8" in body["message"]
    assert await user_count(pool) == 0


@pytest.mark.parametrize(
    ("content", "says"),
    [
        pytest.param(REGISTRATION.encode("utf-16"), "UTF-8", id="utf-16-with-bom"),
        pytest.param(REGISTRATION.encode("utf-16-be"), "JSON", id="utf-16-be-no-bom"),
        pytest.param(REGISTRATION.encode("utf-16-le"), "JSON", id="utf-16-le-no-bom"),
        pytest.param(REGISTRATION.encode("utf-32"), "UTF-8", id="utf-32-with-bom"),
        pytest.param(REGISTRATION.encode("utf-32-le"), "JSON", id="utf-32-le-no-bom"),
        pytest.param(
            REGISTRATION.replace("Ada", "Adé").encode("latin-1"), "UTF-8", id="latin-1-byte"
        ),
        pytest.param(
            REGISTRATION.replace("Ada", "Ad\ud800").encode("utf-8", "surrogatepass"),
            "UTF-8",
            id="encoded-surrogate",
        ),
        pytest.param(REGISTRATION.encode("utf-8-sig"), "JSON", id="utf-8-byte-order-mark"),
    ],
)
async def test_a_body_that_is_not_utf_8_json_is_400(
    client: httpx.AsyncClient, pool: asyncpg.Pool, content: bytes, says: str
) -> None:
    response = await client.post(
        "/v1/users", content=content, headers={"Content-Type": "application/json"}
    )

    body = assert_error(response, 400, "invalid_argument")
    assert says in body["message"], body
    assert await user_count(pool) == 0


@pytest.mark.parametrize(
    ("call", "key"),
    [
        pytest.param(
            Call("POST", "/v1/users", content=REGISTRATION[:-1].encode() + b', "name": "Bob"}'),
            "name",
            id="register-top-level",
        ),
        pytest.param(
            Call("POST", "/v1/users", content=REGISTRATION[:-1].encode() + b', "name": "Ada"}'),
            "name",
            id="register-same-value-twice",
        ),
        pytest.param(
            Call(
                "POST",
                "/v1/users",
                content=REGISTRATION[:-1].encode() + b', "em\\u0061il": "bob@example.com"}',
            ),
            "email",
            id="register-key-spelled-with-an-escape",
        ),
        pytest.param(
            Call(
                "POST",
                "/v1/users",
                content=REGISTRATION[:-1].encode() + b', "extra": {"a": 1, "a": 2}}',
            ),
            "a",
            id="register-inside-an-ignored-field",
        ),
        pytest.param(
            Call(
                "POST",
                "/v1/users",
                content=REGISTRATION[:-1].encode() + b', "extra": [[{"deep": 1, "deep": 1}]]}',
            ),
            "deep",
            id="register-in-an-array-in-an-array",
        ),
        pytest.param(
            Call(
                "POST",
                "/v1/auth/token",
                content=b'{"email": "user@example.com", "password": "a", "password": "b"}',
            ),
            "password",
            id="login",
        ),
        pytest.param(
            Call(
                "POST",
                "/v1/admin/credits",
                content=b'{"user_id": "USER", "amount": 5, "amount": 7, "currency": "EUR"}',
                headers={"Idempotency-Key": "dup-credit"},
                who="admin",
            ),
            "amount",
            id="credit",
        ),
        pytest.param(
            Call(
                "POST",
                "/v1/orders",
                content=b'{"payee_id": "USER", "amount": 5, "currency": "EUR", "currency": "USD"}',
                who="admin",
            ),
            "currency",
            id="order",
        ),
    ],
)
async def test_a_duplicate_key_is_400_naming_it(
    client: httpx.AsyncClient,
    pool: asyncpg.Pool,
    make_account: AccountFactory,
    call: Call,
    key: str,
) -> None:
    user = await make_account("user@example.com")
    admin = await make_account("admin@example.com", admin=True)
    assert call.content is not None
    content = call.content.replace(b"USER", user.id.encode())
    headers = {"Content-Type": "application/json", **call.headers}
    if call.who == "admin":
        headers["Authorization"] = f"Bearer {admin.token}"

    response = await client.post(call.path, content=content, headers=headers)

    body = assert_error(response, 400, "invalid_argument")
    assert f'"{key}"' in body["message"], body
    assert await user_count(pool) == 2
    assert await pool.fetchval("SELECT count(*) FROM transfers") == 0
    assert await pool.fetchval("SELECT count(*) FROM orders") == 0


async def test_one_key_in_two_objects_is_no_duplicate(
    client: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    content = REGISTRATION[:-1] + ', "a": {"name": 1}, "b": [{"name": 2}, {"name": 3}]}'
    response = await client.post(
        "/v1/users", content=content.encode(), headers={"Content-Type": "application/json"}
    )

    assert response.status_code == 201, response.text
    assert response.json()["name"] == "Ada"
    assert await user_count(pool) == 1


@pytest.mark.parametrize(
    "value",
    ["NaN", "Infinity", "-Infinity"],
    ids=["nan", "infinity", "minus-infinity"],
)
async def test_non_standard_json_constants_are_400(
    client: httpx.AsyncClient, pool: asyncpg.Pool, value: str
) -> None:
    content = REGISTRATION[:-1] + f', "ignored": {value}}}'
    response = await client.post(
        "/v1/users", content=content.encode(), headers={"Content-Type": "application/json"}
    )

    body = assert_error(response, 400, "invalid_argument")
    assert value in body["message"], body
    assert await user_count(pool) == 0


# --------------------------------------------------------------------------
# Body size


@pytest.mark.parametrize(
    ("size", "streamed"),
    [
        pytest.param(LIMIT + 1, False, id="one-byte-over-with-content-length"),
        pytest.param(4 * LIMIT, False, id="far-over-with-content-length"),
        pytest.param(
            LIMIT + 1,
            True,
            id="one-byte-over-streamed",
        ),
        pytest.param(
            4 * LIMIT,
            True,
            id="far-over-streamed",
        ),
    ],
)
async def test_a_body_over_64_kib_is_413(
    client: httpx.AsyncClient, pool: asyncpg.Pool, size: int, streamed: bool
) -> None:
    data = registration_bytes(size=size)
    content: bytes | AsyncIterator[bytes] = chunks(data) if streamed else data

    response = await client.post(
        "/v1/users", content=content, headers={"Content-Type": "application/json"}
    )

    assert_error(response, 413, "payload_too_large")
    assert response.headers.get(REQUEST_ID)
    assert await user_count(pool) == 0


@pytest.mark.parametrize(
    "streamed",
    [
        pytest.param(False, id="with-content-length"),
        pytest.param(True, id="streamed"),
    ],
)
async def test_a_body_of_exactly_64_kib_is_accepted(
    client: httpx.AsyncClient, pool: asyncpg.Pool, streamed: bool
) -> None:
    data = registration_bytes(size=LIMIT)
    content: bytes | AsyncIterator[bytes] = chunks(data) if streamed else data

    response = await client.post(
        "/v1/users", content=content, headers={"Content-Type": "application/json"}
    )

    assert response.status_code == 201, response.text
    assert await user_count(pool) == 1


async def test_a_streamed_body_has_no_content_length(client: httpx.AsyncClient) -> None:
    """Guards the streamed rows above: they really exercise the chunked path."""
    request = client.build_request(
        "POST", "/v1/users", content=chunks(b"{}"), headers={"Content-Type": "application/json"}
    )

    assert "content-length" not in request.headers
    assert request.headers.get("transfer-encoding") == "chunked"


# --------------------------------------------------------------------------
# The error envelope


@pytest.mark.parametrize(
    ("method", "path"),
    [
        pytest.param("GET", "/no/such/route", id="get-unknown"),
        pytest.param("GET", "/v1", id="get-prefix-only"),
        pytest.param("POST", "/v1/no-such-thing", id="post-unknown"),
        pytest.param("GET", "/v2/users/me", id="unknown-version"),
        pytest.param("DELETE", "/nope", id="delete-unknown"),
        pytest.param("GET", "/healthz/", id="trailing-slash-no-redirect"),
        pytest.param("POST", "/v1/users/", id="trailing-slash-post"),
        pytest.param("GET", "/v1/users/me/", id="trailing-slash-authenticated"),
    ],
)
async def test_unknown_route_is_404_not_found(
    client: httpx.AsyncClient, method: str, path: str
) -> None:
    response = await client.request(method, path)

    assert_error(response, 404, "not_found")
    assert response.headers.get(REQUEST_ID)


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        pytest.param("DELETE", "/v1/users/me", "GET", id="delete-me"),
        pytest.param("PUT", "/v1/users", "GET, POST", id="put-users"),
        pytest.param("DELETE", "/v1/users", "GET, POST", id="delete-users"),
        pytest.param("GET", "/v1/auth/token", "POST", id="get-token"),
        pytest.param("POST", "/healthz", "GET, HEAD", id="post-healthz"),
        pytest.param("PATCH", "/readyz", "GET, HEAD", id="patch-readyz"),
    ],
)
async def test_wrong_method_is_405_naming_every_allowed_method(
    client: httpx.AsyncClient, method: str, path: str, allow: str
) -> None:
    response = await client.request(method, path)

    assert_error(response, 405, None)
    assert response.headers.get(REQUEST_ID)
    assert response.headers["allow"] == allow


ERROR_CALLS = [
    pytest.param(Call("POST", "/v1/users", json={"email": "x"}), 400, id="400-validation"),
    pytest.param(
        Call("POST", "/v1/users", content=b"{", headers={"Content-Type": "application/json"}),
        400,
        id="400-malformed-json",
    ),
    pytest.param(Call("GET", "/v1/users/not-a-uuid", who="user"), 400, id="400-non-uuid-id"),
    pytest.param(Call("GET", "/v1/users", who="admin"), 400, id="400-missing-query"),
    pytest.param(Call("GET", "/v1/users/me"), 401, id="401-no-token"),
    pytest.param(
        Call("POST", "/v1/auth/token", json={"email": "a@b.co", "password": "wrong pass"}),
        401,
        id="401-bad-login",
    ),
    pytest.param(
        Call("GET", "/v1/users?email=user@example.com", who="user"), 403, id="403-non-admin"
    ),
    pytest.param(
        Call("GET", "/v1/users/00000000-0000-4000-8000-000000000000", who="user"),
        404,
        id="404-user",
    ),
    pytest.param(Call("GET", "/nowhere"), 404, id="404-route"),
    pytest.param(Call("DELETE", "/v1/users/me"), 405, id="405"),
    pytest.param(
        Call(
            "POST",
            "/v1/users",
            json={"email": "user@example.com", "password": PASSWORD, "name": "Dup"},
        ),
        409,
        id="409-duplicate",
    ),
    pytest.param(
        Call(
            "POST",
            "/v1/users",
            content=b" " * (LIMIT + 1),
            headers={"Content-Type": "application/json"},
        ),
        413,
        id="413-content-length",
    ),
    pytest.param(
        Call(
            "POST",
            "/v1/users",
            content=b" " * (LIMIT + 1),
            headers={"Content-Type": "application/json"},
            streamed=True,
        ),
        413,
        id="413-streamed",
    ),
    pytest.param(
        Call("POST", "/v1/users", content=b"{}", headers={"Content-Type": "text/plain"}),
        415,
        id="415",
    ),
]


async def send(client: httpx.AsyncClient, call: Call, tokens: dict[str, str]) -> httpx.Response:
    headers = dict(call.headers)
    if call.who is not None:
        headers["Authorization"] = f"Bearer {tokens[call.who]}"
    content: bytes | AsyncIterator[bytes] | None = call.content
    if call.streamed and call.content is not None:
        content = chunks(call.content)
    return await client.request(
        call.method, call.path, json=call.json, content=content, headers=headers
    )


@pytest.fixture
async def tokens(make_account: AccountFactory) -> dict[str, str]:
    user = await make_account("user@example.com")
    admin = await make_account("admin@example.com", admin=True)
    return {"user": user.token, "admin": admin.token}


@pytest.mark.parametrize(("call", "status"), ERROR_CALLS)
async def test_every_error_body_is_message_and_code(
    client: httpx.AsyncClient, tokens: dict[str, str], call: Call, status: int
) -> None:
    response = await send(client, call, tokens)

    assert_error(response, status, None)


# --------------------------------------------------------------------------
# X-Request-ID

ANY_CALLS = [
    pytest.param(Call("GET", "/healthz"), id="200-healthz"),
    pytest.param(Call("GET", "/readyz"), id="200-readyz"),
    pytest.param(Call("GET", "/metrics"), id="200-metrics"),
    pytest.param(Call("GET", "/openapi.json"), id="200-openapi"),
    pytest.param(Call("GET", "/docs"), id="200-docs"),
    pytest.param(Call("GET", "/v1/users/me", who="user"), id="200-me"),
    pytest.param(
        Call(
            "POST",
            "/v1/users",
            json={"email": "new@example.com", "password": PASSWORD, "name": "New"},
        ),
        id="201-register",
    ),
    pytest.param(
        Call("POST", "/v1/auth/token", json={"email": "user@example.com", "password": PASSWORD}),
        id="200-login",
    ),
    *ERROR_CALLS,
]


def _call_of(param: Any) -> Any:
    """ERROR_CALLS rows carry a status too; X-Request-ID rows need only the call."""
    return pytest.param(param.values[0], id=param.id)


REQUEST_ID_CALLS = [_call_of(p) for p in ANY_CALLS]


@pytest.mark.parametrize("call", REQUEST_ID_CALLS)
async def test_every_response_carries_a_request_id(
    client: httpx.AsyncClient, tokens: dict[str, str], call: Call
) -> None:
    response = await send(client, call, tokens)

    assert response.status_code < 500
    request_id = response.headers.get(REQUEST_ID)
    assert request_id
    assert VALID_REQUEST_ID.match(request_id)


@pytest.mark.parametrize(
    "incoming",
    [
        pytest.param("abc-123", id="short"),
        pytest.param("0b0b6a8e-8d7c-4c5b-9a55-2f5c8e1d7e00", id="uuid"),
        pytest.param("a" * 128, id="128-chars"),
        pytest.param("trace:1.2_3-x", id="punctuation-allowed"),
    ],
)
@pytest.mark.parametrize(
    "call",
    [
        pytest.param(Call("GET", "/healthz"), id="success"),
        pytest.param(Call("GET", "/nowhere"), id="404"),
        pytest.param(Call("GET", "/v1/users/me"), id="401"),
    ],
)
async def test_a_valid_incoming_request_id_is_echoed(
    client: httpx.AsyncClient, call: Call, incoming: str
) -> None:
    response = await client.request(call.method, call.path, headers={REQUEST_ID: incoming})

    assert response.headers[REQUEST_ID] == incoming


@pytest.mark.parametrize(
    "incoming",
    [
        pytest.param(b"a" * 129, id="129-chars"),
        pytest.param(b"a" * 300, id="300-chars"),
        pytest.param(b"bad id!", id="space-and-bang"),
        pytest.param(b"", id="empty"),
        pytest.param(b"a/b", id="slash"),
        pytest.param(b"<script>", id="markup"),
        pytest.param("café".encode(), id="non-ascii"),
    ],
)
@pytest.mark.parametrize(
    "call",
    [
        pytest.param(Call("GET", "/healthz"), id="success"),
        pytest.param(Call("GET", "/nowhere"), id="404"),
    ],
)
async def test_an_invalid_incoming_request_id_is_replaced(
    client: httpx.AsyncClient, call: Call, incoming: bytes
) -> None:
    response = await client.request(call.method, call.path, headers={REQUEST_ID.encode(): incoming})

    replaced = response.headers.get(REQUEST_ID)
    assert replaced
    assert replaced.encode() != incoming
    assert VALID_REQUEST_ID.match(replaced)


async def test_each_request_without_an_id_gets_a_new_one(client: httpx.AsyncClient) -> None:
    ids = {(await client.get("/healthz")).headers[REQUEST_ID] for _ in range(5)}

    assert len(ids) == 5
