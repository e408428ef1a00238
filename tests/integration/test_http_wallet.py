"""API.md "Wallets and payments" through HTTP, the wallet half: admin
credits (the only way money enters), balances and the ledger's entries.
One behaviour per table row; no answer in this file may be a 5xx."""

from __future__ import annotations

import asyncio
import base64
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx
import pytest

from tests.integration.conftest import Account, AccountFactory
from tests.integration.http_helpers import assert_error, headers, new_key

CREDIT_FIELDS = {"entry_id", "user_id", "amount", "currency", "balance"}
ENTRY_FIELDS = {"id", "kind", "amount", "currency", "balance_after", "order_id", "created_at"}
RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")
MAX_AMOUNT = 10**12
VISIBLE_255 = "".join(chr(0x21 + i % 94) for i in range(255))


pytestmark = pytest.mark.usefixtures("no_server_errors")


@dataclass(frozen=True)
class People:
    admin: Account
    ada: Account
    bob: Account


@pytest.fixture
async def people(make_account: AccountFactory) -> People:
    return People(
        admin=await make_account("admin@example.com", admin=True),
        ada=await make_account("ada@example.com"),
        bob=await make_account("bob@example.com"),
    )


async def post_credit(
    client: httpx.AsyncClient,
    caller: Account,
    body: dict[str, Any],
    key: str | bytes | None = None,
) -> httpx.Response:
    return await client.post(
        "/v1/admin/credits", json=body, headers=headers(caller, new_key() if key is None else key)
    )


async def credit(
    client: httpx.AsyncClient, admin: Account, user: Account, amount: int, currency: str = "EUR"
) -> dict[str, Any]:
    response = await post_credit(
        client, admin, {"user_id": user.id, "amount": amount, "currency": currency}
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert isinstance(body, dict)
    return body


async def balances(client: httpx.AsyncClient, account: Account) -> dict[str, int]:
    response = await client.get("/v1/wallet", headers=headers(account))
    assert response.status_code == 200, response.text
    listed = response.json()["balances"]
    out: dict[str, int] = {}
    for item in listed:
        assert set(item) == {"currency", "amount"}, item
        assert type(item["amount"]) is int, item
        assert item["currency"] not in out, listed
        out[item["currency"]] = item["amount"]
    return out


async def entries_page(
    client: httpx.AsyncClient, account: Account, **params: str | int
) -> httpx.Response:
    return await client.get("/v1/wallet/entries", params=params, headers=headers(account))


async def all_entries(client: httpx.AsyncClient, account: Account) -> list[dict[str, Any]]:
    response = await entries_page(client, account, limit=100)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["next_cursor"] is None
    entries = body["entries"]
    assert isinstance(entries, list)
    return entries


def cursor_of(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


# --------------------------------------------------------------------------
# POST /v1/admin/credits


async def test_admin_credit_answers_201_with_the_entry_and_the_new_balance(
    client: httpx.AsyncClient, people: People
) -> None:
    response = await post_credit(
        client, people.admin, {"user_id": people.ada.id, "amount": 1299, "currency": "EUR"}
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert set(body) == CREDIT_FIELDS
    uuid.UUID(body["entry_id"])
    assert body["user_id"] == people.ada.id
    assert body["amount"] == 1299
    assert type(body["amount"]) is int
    assert body["currency"] == "EUR"
    assert body["balance"] == 1299
    assert await balances(client, people.ada) == {"EUR": 1299}
    (entry,) = await all_entries(client, people.ada)
    assert entry["id"] == body["entry_id"]
    assert entry["kind"] == "credit"


@pytest.mark.parametrize(
    ("amounts", "expected_balances"),
    [
        pytest.param([100, 250], [100, 350], id="two-credits-add-up"),
        pytest.param([1, 1, 1], [1, 2, 3], id="three-credits-of-one"),
        pytest.param([MAX_AMOUNT, MAX_AMOUNT], [MAX_AMOUNT, 2 * MAX_AMOUNT], id="max-twice"),
    ],
)
async def test_credit_balance_accumulates(
    client: httpx.AsyncClient, people: People, amounts: list[int], expected_balances: list[int]
) -> None:
    got = [(await credit(client, people.admin, people.ada, a))["balance"] for a in amounts]
    assert got == expected_balances
    assert await balances(client, people.ada) == {"EUR": expected_balances[-1]}


async def test_credit_balances_are_per_currency(client: httpx.AsyncClient, people: People) -> None:
    assert (await credit(client, people.admin, people.ada, 500, "EUR"))["balance"] == 500
    assert (await credit(client, people.admin, people.ada, 70, "USD"))["balance"] == 70
    assert (await credit(client, people.admin, people.ada, 5, "EUR"))["balance"] == 505
    assert await balances(client, people.ada) == {"EUR": 505, "USD": 70}


async def test_an_admin_may_credit_their_own_wallet(
    client: httpx.AsyncClient, people: People
) -> None:
    body = await credit(client, people.admin, people.admin, 42)
    assert body["user_id"] == people.admin.id
    assert await balances(client, people.admin) == {"EUR": 42}


async def test_non_admin_credit_is_403_and_moves_nothing(
    client: httpx.AsyncClient, people: People
) -> None:
    for target in (people.ada, people.bob):
        response = await post_credit(
            client, people.ada, {"user_id": target.id, "amount": 100, "currency": "EUR"}
        )
        assert_error(response, 403, "permission_denied")
    assert await balances(client, people.ada) == {}
    assert await balances(client, people.bob) == {}


@pytest.mark.parametrize(
    "auth",
    [
        pytest.param({}, id="no-authorization"),
        pytest.param({"authorization": "Bearer not-a-token"}, id="garbage-token"),
        pytest.param({"authorization": "Basic YWRhOnB3"}, id="basic-scheme"),
    ],
)
async def test_credit_without_valid_auth_is_401(
    client: httpx.AsyncClient, people: People, auth: dict[str, str]
) -> None:
    response = await client.post(
        "/v1/admin/credits",
        json={"user_id": people.ada.id, "amount": 100, "currency": "EUR"},
        headers={**auth, "idempotency-key": new_key()},
    )
    assert_error(response, 401, "unauthenticated")
    assert response.headers.get("www-authenticate", "").lower().startswith("bearer")
    assert await balances(client, people.ada) == {}


@pytest.mark.parametrize(
    "key",
    [
        pytest.param(None, id="missing"),
        pytest.param("", id="empty"),
        pytest.param("k" * 256, id="256-chars"),
        pytest.param("has space", id="space"),
        pytest.param("clé".encode(), id="non-ascii-utf8"),
        pytest.param(b"tab\there", id="tab"),
    ],
)
async def test_credit_with_a_bad_idempotency_key_is_400_and_moves_nothing(
    client: httpx.AsyncClient, people: People, key: str | bytes | None
) -> None:
    response = await client.post(
        "/v1/admin/credits",
        json={"user_id": people.ada.id, "amount": 100, "currency": "EUR"},
        headers=headers(people.admin, key),
    )
    body = assert_error(response, 400, "invalid_argument")
    assert any(d["field"] == "Idempotency-Key" for d in body.get("details", [])), body
    assert await balances(client, people.ada) == {}


@pytest.mark.parametrize(
    "key",
    [
        pytest.param("a", id="one-char"),
        pytest.param("k" * 255, id="255-chars"),
        pytest.param(VISIBLE_255, id="255-every-visible-ascii"),
        pytest.param(str(uuid.uuid4()), id="uuid"),
    ],
)
async def test_credit_accepts_any_1_to_255_visible_ascii_key(
    client: httpx.AsyncClient, people: People, key: str
) -> None:
    body = {"user_id": people.ada.id, "amount": 100, "currency": "EUR"}
    first = await post_credit(client, people.admin, body, key)
    assert first.status_code == 201, first.text
    again = await post_credit(client, people.admin, body, key)
    assert again.status_code == 201
    assert again.content == first.content
    assert await balances(client, people.ada) == {"EUR": 100}


async def test_credit_replay_gives_the_same_status_and_bytes_and_does_not_double(
    client: httpx.AsyncClient, people: People
) -> None:
    body = {"user_id": people.ada.id, "amount": 700, "currency": "EUR"}
    key = new_key()
    first = await post_credit(client, people.admin, body, key)
    assert first.status_code == 201, first.text
    for _ in range(3):
        again = await post_credit(client, people.admin, body, key)
        assert again.status_code == 201
        assert again.content == first.content
    assert await balances(client, people.ada) == {"EUR": 700}
    assert len(await all_entries(client, people.ada)) == 1


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param('{{"currency":"EUR","amount":700,"user_id":"{uid}"}}', id="keys-reordered"),
        pytest.param(
            '\n{{ "user_id" : "{uid}" ,\n  "amount" : 700 , "currency" : "EUR" }}\n',
            id="whitespace",
        ),
        pytest.param('{{"amount":700,"user_id":"{uid}","currency":"EUR"}}', id="reordered-compact"),
    ],
)
async def test_credit_fingerprint_is_canonical_json(
    client: httpx.AsyncClient, people: People, raw: str
) -> None:
    key = new_key()
    first = await post_credit(
        client, people.admin, {"user_id": people.ada.id, "amount": 700, "currency": "EUR"}, key
    )
    assert first.status_code == 201, first.text
    again = await client.post(
        "/v1/admin/credits",
        content=raw.format(uid=people.ada.id).encode(),
        headers={**headers(people.admin, key), b"content-type": b"application/json"},
    )
    assert again.status_code == 201, again.text
    assert again.content == first.content
    assert await balances(client, people.ada) == {"EUR": 700}


@pytest.mark.parametrize(
    "spell",
    [
        pytest.param(lambda body: {**body, "user_id": body["user_id"].upper()}, id="upper-uuid"),
        pytest.param(
            lambda body: {**body, "user_id": body["user_id"].replace("-", "")}, id="no-hyphens"
        ),
        pytest.param(lambda body: {**body, "note": "ignored"}, id="extra-field"),
    ],
)
async def test_credit_replay_with_the_body_spelled_otherwise_is_the_same_request(
    client: httpx.AsyncClient,
    people: People,
    spell: Callable[[dict[str, Any]], dict[str, Any]],
) -> None:
    """The fingerprint is of the parsed request, not of its spelling."""
    key = new_key()
    body = {"user_id": people.ada.id, "amount": 700, "currency": "EUR"}
    first = await post_credit(client, people.admin, body, key)
    assert first.status_code == 201, first.text
    again = await post_credit(client, people.admin, spell(body), key)
    assert again.status_code == 201, again.text
    assert again.content == first.content
    assert await balances(client, people.ada) == {"EUR": 700}


@pytest.mark.parametrize(
    "change",
    [
        pytest.param({"amount": 701}, id="other-amount"),
        pytest.param({"currency": "USD"}, id="other-currency"),
        pytest.param({"user_id": "bob"}, id="other-user"),
    ],
)
async def test_credit_same_key_with_another_body_is_422_and_moves_nothing(
    client: httpx.AsyncClient, people: People, change: dict[str, Any]
) -> None:
    key = new_key()
    body = {"user_id": people.ada.id, "amount": 700, "currency": "EUR"}
    first = await post_credit(client, people.admin, body, key)
    assert first.status_code == 201, first.text
    other = {**body, **change}
    if other["user_id"] == "bob":
        other["user_id"] = people.bob.id
    response = await post_credit(client, people.admin, other, key)
    assert_error(response, 422, "idempotency_mismatch")
    assert await balances(client, people.ada) == {"EUR": 700}
    assert await balances(client, people.bob) == {}
    # The first request still replays afterwards.
    again = await post_credit(client, people.admin, body, key)
    assert (again.status_code, again.content) == (201, first.content)


async def test_credit_keys_belong_to_the_caller(
    client: httpx.AsyncClient, people: People, make_account: AccountFactory
) -> None:
    """Undocumented in API.md/decisions.md: the code scopes idempotency keys to
    the calling user, so another admin's identical key is a new request."""
    other_admin = await make_account("root2@example.com", admin=True)
    key = new_key()
    body = {"user_id": people.ada.id, "amount": 10, "currency": "EUR"}
    first = await post_credit(client, people.admin, body, key)
    second = await post_credit(client, other_admin, body, key)
    assert (first.status_code, second.status_code) == (201, 201)
    assert first.json()["entry_id"] != second.json()["entry_id"]
    assert await balances(client, people.ada) == {"EUR": 20}


async def test_concurrent_credits_with_one_key_credit_once(
    client: httpx.AsyncClient, people: People
) -> None:
    key = new_key()
    body = {"user_id": people.ada.id, "amount": 333, "currency": "EUR"}
    responses = await asyncio.gather(
        *(post_credit(client, people.admin, body, key) for _ in range(10))
    )
    created = [r for r in responses if r.status_code == 201]
    assert created
    assert len({r.content for r in created}) == 1
    for r in responses:
        if r.status_code != 201:
            assert_error(r, 409, "payment_in_progress")
    assert await balances(client, people.ada) == {"EUR": 333}


async def test_credit_to_an_unknown_user_is_404(client: httpx.AsyncClient, people: People) -> None:
    response = await post_credit(
        client, people.admin, {"user_id": str(uuid.uuid4()), "amount": 100, "currency": "EUR"}
    )
    assert_error(response, 404, "not_found")


@pytest.mark.parametrize(
    ("amount", "credited"),
    [
        pytest.param("12.0", 12, id="point-zero"),
        pytest.param("1.2e1", 12, id="exponent"),
        pytest.param("1200E-2", 12, id="negative-exponent"),
        pytest.param("1e12", MAX_AMOUNT, id="the-largest-as-a-power-of-ten"),
        pytest.param("12.00000000000000001", None, id="not-whole-though-a-float-rounds-it"),
        pytest.param("1e-400", None, id="tiny"),
        pytest.param("1e400", None, id="past-any-float"),
    ],
)
async def test_an_amount_is_any_json_number_whose_value_is_whole(
    client: httpx.AsyncClient, people: People, amount: str, credited: int | None
) -> None:
    """JSON Schema's integer, which the OpenAPI document declares: 12.0 is
    12; a number that is not whole is 400, decided on its exact value."""
    content = f'{{"user_id": "{people.ada.id}", "amount": {amount}, "currency": "EUR"}}'
    response = await client.post(
        "/v1/admin/credits",
        content=content.encode(),
        headers={**headers(people.admin, new_key()), b"content-type": b"application/json"},
    )
    if credited is None:
        error = assert_error(response, 400, "invalid_argument")
        assert [d["field"] for d in error["details"]] == ["amount"]
        assert await balances(client, people.ada) == {}
    else:
        assert response.status_code == 201, response.text
        assert response.json()["amount"] == credited
        assert await balances(client, people.ada) == {"EUR": credited}


@pytest.mark.parametrize(
    ("change", "field"),
    [
        pytest.param({"amount": 0}, "amount", id="amount-zero"),
        pytest.param({"amount": -5}, "amount", id="amount-negative"),
        pytest.param({"amount": MAX_AMOUNT + 1}, "amount", id="amount-over-10e12"),
        pytest.param({"amount": 12.5}, "amount", id="amount-fraction"),
        pytest.param({"amount": 12.000001}, "amount", id="amount-almost-whole"),
        pytest.param({"amount": "12"}, "amount", id="amount-string"),
        pytest.param({"amount": True}, "amount", id="amount-true"),
        pytest.param({"amount": None}, "amount", id="amount-null"),
        pytest.param({"amount": "drop"}, "amount", id="amount-missing"),
        pytest.param({"currency": "eur"}, "currency", id="currency-lower-case"),
        pytest.param({"currency": "EURO"}, "currency", id="currency-four-letters"),
        pytest.param({"currency": "ZZZ"}, "currency", id="currency-not-iso-4217"),
        pytest.param({"currency": ""}, "currency", id="currency-empty"),
        pytest.param({"currency": 978}, "currency", id="currency-number"),
        pytest.param({"currency": "drop"}, "currency", id="currency-missing"),
        pytest.param({"user_id": "not-a-uuid"}, "user_id", id="user-id-not-uuid"),
        pytest.param({"user_id": "drop"}, "user_id", id="user-id-missing"),
    ],
)
async def test_credit_with_a_bad_field_is_400_and_moves_nothing(
    client: httpx.AsyncClient, people: People, change: dict[str, Any], field: str
) -> None:
    body: dict[str, Any] = {"user_id": people.ada.id, "amount": 100, "currency": "EUR"}
    body.update(change)
    body = {k: v for k, v in body.items() if v != "drop"}
    response = await post_credit(client, people.admin, body)
    error = assert_error(response, 400, "invalid_argument")
    assert any(d["field"] == field for d in error.get("details", [])), error
    assert await balances(client, people.ada) == {}


async def test_credit_reports_every_bad_field_at_once(
    client: httpx.AsyncClient, people: People
) -> None:
    response = await post_credit(
        client, people.admin, {"user_id": people.ada.id, "amount": 0, "currency": "eur"}
    )
    error = assert_error(response, 400, "invalid_argument")
    assert {d["field"] for d in error["details"]} >= {"amount", "currency"}


async def test_a_rejected_credit_does_not_burn_its_key(
    client: httpx.AsyncClient, people: People
) -> None:
    key = new_key()
    bad = await post_credit(
        client, people.admin, {"user_id": people.ada.id, "amount": 0, "currency": "EUR"}, key
    )
    assert_error(bad, 400, "invalid_argument")
    good = await post_credit(
        client, people.admin, {"user_id": people.ada.id, "amount": 5, "currency": "EUR"}, key
    )
    assert good.status_code == 201, good.text
    assert await balances(client, people.ada) == {"EUR": 5}


@pytest.mark.parametrize(
    ("content", "content_type"),
    [
        pytest.param(b'{"amount": 1}', "text/plain", id="text-plain"),
        pytest.param(b"amount=1", "application/x-www-form-urlencoded", id="form"),
        pytest.param(b'{"amount": 1}', None, id="no-content-type"),
    ],
)
async def test_credit_with_a_non_json_content_type_is_415(
    client: httpx.AsyncClient, people: People, content: bytes, content_type: str | None
) -> None:
    sent = headers(people.admin, new_key())
    if content_type is not None:
        sent[b"content-type"] = content_type.encode()
    response = await client.post("/v1/admin/credits", content=content, headers=sent)
    assert_error(response, 415, "unsupported_media_type")
    assert await balances(client, people.ada) == {}


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(b"{", id="truncated"),
        pytest.param(b"not json", id="not-json"),
        pytest.param(b"[]", id="array"),
    ],
)
async def test_credit_with_a_malformed_body_is_400(
    client: httpx.AsyncClient, people: People, content: bytes
) -> None:
    response = await client.post(
        "/v1/admin/credits",
        content=content,
        headers={**headers(people.admin, new_key()), b"content-type": b"application/json"},
    )
    assert_error(response, 400, "invalid_argument")


# --------------------------------------------------------------------------
# GET /v1/wallet


async def test_a_new_user_has_no_balances(client: httpx.AsyncClient, people: People) -> None:
    response = await client.get("/v1/wallet", headers=headers(people.ada))
    assert response.status_code == 200
    assert response.json() == {"balances": []}


async def test_wallet_lists_every_currency_with_exact_integer_amounts(
    client: httpx.AsyncClient, people: People
) -> None:
    await credit(client, people.admin, people.ada, 1299, "EUR")
    await credit(client, people.admin, people.ada, MAX_AMOUNT, "USD")
    await credit(client, people.admin, people.ada, MAX_AMOUNT, "USD")
    response = await client.get("/v1/wallet", headers=headers(people.ada))
    assert response.status_code == 200
    listed = response.json()["balances"]
    assert sorted(listed, key=lambda b: b["currency"]) == [
        {"currency": "EUR", "amount": 1299},
        {"currency": "USD", "amount": 2 * MAX_AMOUNT},
    ]
    # Exact integers on the wire: no exponent, no decimal point.
    assert f'"amount":{2 * MAX_AMOUNT}' in response.text.replace(" ", "")
    assert all(type(b["amount"]) is int for b in listed)


async def test_wallet_shows_only_the_callers_balances(
    client: httpx.AsyncClient, people: People
) -> None:
    await credit(client, people.admin, people.bob, 900, "GBP")
    assert await balances(client, people.ada) == {}
    assert await balances(client, people.bob) == {"GBP": 900}
    assert await balances(client, people.admin) == {}


@pytest.mark.parametrize(
    "path",
    [pytest.param("/v1/wallet", id="wallet"), pytest.param("/v1/wallet/entries", id="entries")],
)
async def test_wallet_endpoints_need_authentication(
    client: httpx.AsyncClient, people: People, path: str
) -> None:
    assert_error(await client.get(path), 401, "unauthenticated")


# --------------------------------------------------------------------------
# GET /v1/wallet/entries


async def test_a_new_user_has_no_entries(client: httpx.AsyncClient, people: People) -> None:
    response = await entries_page(client, people.ada)
    assert response.status_code == 200
    assert response.json() == {"entries": [], "next_cursor": None}


async def test_entries_are_newest_first_with_running_balances(
    client: httpx.AsyncClient, people: People
) -> None:
    ids = [(await credit(client, people.admin, people.ada, a))["entry_id"] for a in (1, 20, 300)]
    entries = await all_entries(client, people.ada)
    assert [e["id"] for e in entries] == ids[::-1]
    assert [e["amount"] for e in entries] == [300, 20, 1]
    assert [e["balance_after"] for e in entries] == [321, 21, 1]
    for e in entries:
        assert set(e) == ENTRY_FIELDS
        assert e["kind"] == "credit"
        assert e["currency"] == "EUR"
        assert e["order_id"] is None
        assert RFC3339.match(e["created_at"]), e
    stamps = [datetime.fromisoformat(e["created_at"]) for e in entries]
    assert stamps == sorted(stamps, reverse=True)


async def test_entries_limit_defaults_to_50(client: httpx.AsyncClient, people: People) -> None:
    for i in range(51):
        await credit(client, people.admin, people.ada, i + 1)
    first = await entries_page(client, people.ada)
    assert first.status_code == 200
    body = first.json()
    assert len(body["entries"]) == 50
    assert body["entries"][0]["amount"] == 51
    assert isinstance(body["next_cursor"], str)
    rest = (await entries_page(client, people.ada, cursor=body["next_cursor"])).json()
    assert [e["amount"] for e in rest["entries"]] == [1]
    assert rest["next_cursor"] is None


@pytest.mark.parametrize(
    ("limit", "expected"),
    [
        pytest.param(1, 1, id="limit-1"),
        pytest.param(3, 3, id="limit-equals-count"),
        pytest.param(100, 3, id="limit-100"),
    ],
)
async def test_entries_limit_within_1_to_100_is_accepted(
    client: httpx.AsyncClient, people: People, limit: int, expected: int
) -> None:
    for amount in (1, 2, 3):
        await credit(client, people.admin, people.ada, amount)
    response = await entries_page(client, people.ada, limit=limit)
    assert response.status_code == 200, response.text
    body = response.json()
    assert len(body["entries"]) == expected
    assert (body["next_cursor"] is None) == (limit >= 3)


@pytest.mark.parametrize(
    "limit",
    [
        pytest.param("0", id="zero"),
        pytest.param("101", id="101"),
        pytest.param("-1", id="negative"),
        pytest.param("abc", id="not-a-number"),
        pytest.param("1.5", id="fraction"),
        pytest.param("", id="empty"),
        pytest.param("99999999999999999999999", id="huge"),
        # Forms int() and pydantic take, which the document's integer is not.
        pytest.param("+5", id="plus-sign"),
        pytest.param(" 5", id="leading-space"),
        pytest.param("5 ", id="trailing-space"),
        pytest.param("5.0", id="point-zero"),
        pytest.param("5_0", id="underscore"),
        pytest.param("\u0665", id="non-ascii-digit"),
    ],
)
async def test_entries_with_a_bad_limit_is_400(
    client: httpx.AsyncClient, people: People, limit: str
) -> None:
    response = await entries_page(client, people.ada, limit=limit)
    assert_error(response, 400, "invalid_argument")


@pytest.mark.parametrize(
    "cursor",
    [
        pytest.param("garbage", id="garbage"),
        pytest.param("!!!!", id="not-base64"),
        pytest.param("", id="empty"),
        pytest.param(cursor_of("v1:0"), id="seq-zero"),
        pytest.param(cursor_of("v1:-3"), id="seq-negative"),
        pytest.param(cursor_of("v1:abc"), id="seq-not-a-number"),
        pytest.param(cursor_of("v2:5"), id="other-version"),
        pytest.param(cursor_of("v1: 5"), id="seq-with-space"),
        pytest.param(cursor_of("v1:5_0"), id="seq-with-underscore"),
        pytest.param(cursor_of("v1:\u0665"), id="seq-non-ascii-digit"),
        pytest.param(cursor_of("v1:+5"), id="seq-with-sign"),
        pytest.param(base64.urlsafe_b64encode(b"\xff\xfe").decode(), id="not-utf8"),
        pytest.param("A" * 201, id="too-long"),
        # docs/decisions.md: only the exact form the API gives.
        pytest.param(base64.urlsafe_b64encode(b"v1:1").decode(), id="padding-kept"),
        pytest.param(cursor_of("v1:1") + "=", id="one-padding-character"),
        pytest.param(cursor_of("v1:1") + "==", id="extra-padding"),
        pytest.param(cursor_of("v1:01"), id="zero-padded-seq"),
        pytest.param(cursor_of("v1:00000000000000000001"), id="zero-padded-past-bigint-digits"),
        pytest.param(cursor_of("v1:1")[:-1] + "R", id="non-canonical-base64-bits"),
        pytest.param(cursor_of("v1:1") + "\n", id="trailing-newline"),
    ],
)
async def test_entries_with_a_bad_cursor_is_400(
    client: httpx.AsyncClient, people: People, cursor: str
) -> None:
    await credit(client, people.admin, people.ada, 5)
    response = await entries_page(client, people.ada, cursor=cursor)
    assert_error(response, 400, "invalid_argument")


@pytest.mark.parametrize(
    ("count", "limit", "page_sizes"),
    [
        pytest.param(5, 2, [2, 2, 1], id="5-by-2"),
        pytest.param(4, 2, [2, 2], id="4-by-2-exact-multiple"),
        pytest.param(3, 1, [1, 1, 1], id="3-by-1"),
        pytest.param(2, 5, [2], id="one-short-page"),
    ],
)
async def test_paging_visits_every_entry_exactly_once(
    client: httpx.AsyncClient, people: People, count: int, limit: int, page_sizes: list[int]
) -> None:
    for i in range(count):
        await credit(client, people.admin, people.ada, i + 1)
    expected = [e["id"] for e in await all_entries(client, people.ada)]
    seen: list[str] = []
    sizes: list[int] = []
    cursor: str | None = None
    for _ in range(count + 2):
        params: dict[str, str | int] = {"limit": limit}
        if cursor is not None:
            params["cursor"] = cursor
        response = await entries_page(client, people.ada, **params)
        assert response.status_code == 200, response.text
        body = response.json()
        sizes.append(len(body["entries"]))
        seen += [e["id"] for e in body["entries"]]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert cursor is None
    assert sizes == page_sizes
    assert seen == expected
    assert len(set(seen)) == count


async def test_a_cursor_stays_stable_when_newer_entries_arrive(
    client: httpx.AsyncClient, people: People
) -> None:
    for amount in (1, 2, 3):
        await credit(client, people.admin, people.ada, amount)
    first = (await entries_page(client, people.ada, limit=2)).json()
    await credit(client, people.admin, people.ada, 4)
    rest = (await entries_page(client, people.ada, limit=2, cursor=first["next_cursor"])).json()
    assert [e["amount"] for e in first["entries"]] == [3, 2]
    assert [e["amount"] for e in rest["entries"]] == [1]
    assert rest["next_cursor"] is None


async def test_a_user_sees_only_their_own_entries(
    client: httpx.AsyncClient, people: People
) -> None:
    ada_ids = {(await credit(client, people.admin, people.ada, 11))["entry_id"] for _ in range(2)}
    bob_ids = {(await credit(client, people.admin, people.bob, 22))["entry_id"] for _ in range(3)}
    ada = await all_entries(client, people.ada)
    bob = await all_entries(client, people.bob)
    assert {e["id"] for e in ada} == ada_ids
    assert {e["id"] for e in bob} == bob_ids
    assert {e["amount"] for e in ada} == {11}
    assert await all_entries(client, people.admin) == []
    # Bob's cursor walks Bob's ledger only, even when Ada follows it.
    page = (await entries_page(client, people.bob, limit=1)).json()
    followed = await entries_page(client, people.ada, cursor=page["next_cursor"])
    assert followed.status_code == 200
    assert {e["id"] for e in followed.json()["entries"]} <= ada_ids


async def test_payment_entries_are_signed_and_balances_follow(
    client: httpx.AsyncClient, people: People
) -> None:
    await credit(client, people.admin, people.ada, 1000)
    await credit(client, people.admin, people.bob, 50)
    created = await client.post(
        "/v1/orders",
        json={"payee_id": people.bob.id, "amount": 300, "currency": "EUR"},
        headers=headers(people.ada),
    )
    assert created.status_code == 201, created.text
    order_id = created.json()["id"]
    paid = await client.post(f"/v1/orders/{order_id}/pay", headers=headers(people.ada, new_key()))
    assert paid.status_code == 200, paid.text

    ada_latest, ada_credit = await all_entries(client, people.ada)
    assert (ada_latest["kind"], ada_latest["amount"], ada_latest["balance_after"]) == (
        "payment",
        -300,
        700,
    )
    assert ada_latest["order_id"] == order_id
    assert ada_credit["balance_after"] + ada_latest["amount"] == ada_latest["balance_after"]

    bob_latest, _ = await all_entries(client, people.bob)
    assert (bob_latest["kind"], bob_latest["amount"], bob_latest["balance_after"]) == (
        "payment",
        300,
        350,
    )
    assert bob_latest["order_id"] == order_id
    assert await balances(client, people.ada) == {"EUR": 700}
    assert await balances(client, people.bob) == {"EUR": 350}

    refunded = await client.post(
        f"/v1/orders/{order_id}/refund", headers=headers(people.bob, new_key())
    )
    assert refunded.status_code == 200, refunded.text
    ada_refund = (await all_entries(client, people.ada))[0]
    bob_refund = (await all_entries(client, people.bob))[0]
    assert (ada_refund["kind"], ada_refund["amount"], ada_refund["balance_after"]) == (
        "refund",
        300,
        1000,
    )
    assert (bob_refund["kind"], bob_refund["amount"], bob_refund["balance_after"]) == (
        "refund",
        -300,
        50,
    )


async def test_balances_equal_the_sum_of_entries(client: httpx.AsyncClient, people: People) -> None:
    await credit(client, people.admin, people.ada, 400, "EUR")
    await credit(client, people.admin, people.ada, 9, "JPY")
    await credit(client, people.admin, people.ada, 600, "EUR")
    entries = await all_entries(client, people.ada)
    sums: dict[str, int] = {}
    for e in entries:
        sums[e["currency"]] = sums.get(e["currency"], 0) + e["amount"]
    assert sums == await balances(client, people.ada) == {"EUR": 1000, "JPY": 9}
