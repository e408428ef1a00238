"""API.md "Wallets and payments" and "Exactly once" through HTTP, the order
half: creating, reading, paying and refunding orders, replays, and
concurrent pay calls through the full ASGI stack. One behaviour per table
row; no answer in this file may be a 5xx."""

from __future__ import annotations

import asyncio
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

ORDER_FIELDS = {
    "id",
    "payer_id",
    "payee_id",
    "amount",
    "currency",
    "description",
    "status",
    "created_at",
    "updated_at",
    "paid_at",
}
RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")
MAX_AMOUNT = 10**12
FUNDS = 1_000
PRICE = 300


pytestmark = pytest.mark.usefixtures("no_server_errors")


@dataclass(frozen=True)
class People:
    admin: Account
    payer: Account
    payee: Account
    stranger: Account


@pytest.fixture
async def people(make_account: AccountFactory) -> People:
    return People(
        admin=await make_account("admin@example.com", admin=True),
        payer=await make_account("payer@example.com"),
        payee=await make_account("payee@example.com"),
        stranger=await make_account("stranger@example.com"),
    )


def assert_order(body: object) -> dict[str, Any]:
    assert isinstance(body, dict)
    assert set(body) == ORDER_FIELDS, body
    uuid.UUID(body["id"])
    assert type(body["amount"]) is int
    for stamp in ("created_at", "updated_at"):
        assert RFC3339.match(body[stamp]), body
    if body["paid_at"] is not None:
        assert RFC3339.match(body["paid_at"]), body
    return body


async def credit(
    client: httpx.AsyncClient, admin: Account, user: Account, amount: int, currency: str = "EUR"
) -> None:
    response = await client.post(
        "/v1/admin/credits",
        json={"user_id": user.id, "amount": amount, "currency": currency},
        headers=headers(admin, new_key()),
    )
    assert response.status_code == 201, response.text


async def balances(client: httpx.AsyncClient, account: Account) -> dict[str, int]:
    response = await client.get("/v1/wallet", headers=headers(account))
    assert response.status_code == 200, response.text
    return {b["currency"]: b["amount"] for b in response.json()["balances"]}


async def entry_count(client: httpx.AsyncClient, account: Account) -> int:
    response = await client.get("/v1/wallet/entries?limit=100", headers=headers(account))
    assert response.status_code == 200, response.text
    return len(response.json()["entries"])


async def create_order(
    client: httpx.AsyncClient,
    payer: Account,
    payee: Account,
    amount: int = PRICE,
    currency: str = "EUR",
    **extra: Any,
) -> dict[str, Any]:
    response = await client.post(
        "/v1/orders",
        json={"payee_id": payee.id, "amount": amount, "currency": currency, **extra},
        headers=headers(payer),
    )
    assert response.status_code == 201, response.text
    return assert_order(response.json())


async def get_order(client: httpx.AsyncClient, caller: Account, order_id: str) -> dict[str, Any]:
    response = await client.get(f"/v1/orders/{order_id}", headers=headers(caller))
    assert response.status_code == 200, response.text
    return assert_order(response.json())


async def pay(
    client: httpx.AsyncClient, caller: Account | None, order_id: str, key: str | bytes | None = None
) -> httpx.Response:
    return await client.post(
        f"/v1/orders/{order_id}/pay", headers=headers(caller, new_key() if key is None else key)
    )


async def refund(
    client: httpx.AsyncClient, caller: Account | None, order_id: str, key: str | bytes | None = None
) -> httpx.Response:
    return await client.post(
        f"/v1/orders/{order_id}/refund", headers=headers(caller, new_key() if key is None else key)
    )


@dataclass(frozen=True)
class Deal:
    people: People
    order: dict[str, Any]

    @property
    def id(self) -> str:
        return str(self.order["id"])


@pytest.fixture
async def deal(client: httpx.AsyncClient, people: People) -> Deal:
    """The payer holds FUNDS EUR, the payee nothing; a pending order of PRICE."""
    await credit(client, people.admin, people.payer, FUNDS)
    return Deal(people, await create_order(client, people.payer, people.payee))


@pytest.fixture
async def paid_deal(client: httpx.AsyncClient, deal: Deal) -> Deal:
    response = await pay(client, deal.people.payer, deal.id)
    assert response.status_code == 200, response.text
    return Deal(deal.people, assert_order(response.json()))


async def assert_money(
    client: httpx.AsyncClient, people: People, payer: dict[str, int], payee: dict[str, int]
) -> None:
    assert await balances(client, people.payer) == payer
    assert await balances(client, people.payee) == payee


# --------------------------------------------------------------------------
# POST /v1/orders


async def test_create_order_answers_201_pending_with_location(
    client: httpx.AsyncClient, people: People
) -> None:
    response = await client.post(
        "/v1/orders",
        json={"payee_id": people.payee.id, "amount": 1299, "currency": "EUR", "description": "tea"},
        headers=headers(people.payer),
    )
    assert response.status_code == 201, response.text
    order = assert_order(response.json())
    assert response.headers["location"] == f"/v1/orders/{order['id']}"
    assert order["payer_id"] == people.payer.id
    assert order["payee_id"] == people.payee.id
    assert (order["amount"], order["currency"]) == (1299, "EUR")
    assert order["description"] == "tea"
    assert order["status"] == "pending"
    assert order["paid_at"] is None
    assert order["created_at"] == order["updated_at"]
    assert datetime.fromisoformat(order["created_at"]).utcoffset() is not None
    # Creating an order moves no money and needs none.
    assert await balances(client, people.payer) == {}
    assert await get_order(client, people.payer, order["id"]) == order


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        pytest.param({}, None, id="omitted"),
        pytest.param({"description": None}, None, id="null"),
        pytest.param({"description": "coffee"}, "coffee", id="given"),
        pytest.param({"description": "x" * 500}, "x" * 500, id="500-chars"),
    ],
)
async def test_create_order_description_is_optional(
    client: httpx.AsyncClient, people: People, extra: dict[str, Any], expected: str | None
) -> None:
    order = await create_order(client, people.payer, people.payee, **extra)
    assert order["description"] == expected


@pytest.mark.parametrize(
    ("amount", "currency"),
    [
        pytest.param(1, "EUR", id="amount-1"),
        pytest.param(MAX_AMOUNT, "EUR", id="amount-10e12"),
        pytest.param(5, "JPY", id="other-currency"),
    ],
)
async def test_create_order_accepts_amounts_1_to_10e12(
    client: httpx.AsyncClient, people: People, amount: int, currency: str
) -> None:
    order = await create_order(client, people.payer, people.payee, amount, currency)
    assert (order["amount"], order["currency"]) == (amount, currency)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        pytest.param({"payee_id": "self"}, "payee_id", id="payee-is-payer"),
        pytest.param({"payee_id": "not-a-uuid"}, "payee_id", id="payee-not-uuid"),
        pytest.param({"payee_id": "drop"}, "payee_id", id="payee-missing"),
        pytest.param({"amount": 0}, "amount", id="amount-zero"),
        pytest.param({"amount": -1}, "amount", id="amount-negative"),
        pytest.param({"amount": MAX_AMOUNT + 1}, "amount", id="amount-over-10e12"),
        pytest.param({"amount": 12.5}, "amount", id="amount-fraction"),
        pytest.param({"amount": 300.000001}, "amount", id="amount-almost-whole"),
        pytest.param({"amount": "300"}, "amount", id="amount-string"),
        pytest.param({"amount": True}, "amount", id="amount-true"),
        pytest.param({"amount": "drop"}, "amount", id="amount-missing"),
        pytest.param({"currency": "eur"}, "currency", id="currency-lower-case"),
        pytest.param({"currency": "ZZZ"}, "currency", id="currency-unknown"),
        pytest.param({"currency": "drop"}, "currency", id="currency-missing"),
        pytest.param({"description": "x" * 501}, "description", id="description-501-chars"),
        pytest.param({"description": 5}, "description", id="description-not-string"),
    ],
)
async def test_create_order_with_a_bad_field_is_400(
    client: httpx.AsyncClient, people: People, change: dict[str, Any], field: str
) -> None:
    body: dict[str, Any] = {"payee_id": people.payee.id, "amount": PRICE, "currency": "EUR"}
    body.update(change)
    if body["payee_id"] == "self":
        body["payee_id"] = people.payer.id
    body = {k: v for k, v in body.items() if v != "drop"}
    response = await client.post("/v1/orders", json=body, headers=headers(people.payer))
    error = assert_error(response, 400, "invalid_argument")
    assert any(d["field"] == field for d in error.get("details", [])), error


async def test_create_order_for_an_unknown_payee_is_404(
    client: httpx.AsyncClient, people: People
) -> None:
    """API.md says only "payee must exist"; the status (404 not_found) is
    what the code does and is not written down in docs/decisions.md."""
    response = await client.post(
        "/v1/orders",
        json={"payee_id": str(uuid.uuid4()), "amount": PRICE, "currency": "EUR"},
        headers=headers(people.payer),
    )
    assert_error(response, 404, "not_found")


async def test_create_order_without_auth_is_401(client: httpx.AsyncClient, people: People) -> None:
    response = await client.post(
        "/v1/orders", json={"payee_id": people.payee.id, "amount": PRICE, "currency": "EUR"}
    )
    assert_error(response, 401, "unauthenticated")


async def test_create_order_with_a_non_json_body_is_415(
    client: httpx.AsyncClient, people: People
) -> None:
    response = await client.post(
        "/v1/orders",
        content=b"payee_id=x&amount=1",
        headers={**headers(people.payer), b"content-type": b"application/x-www-form-urlencoded"},
    )
    assert_error(response, 415, "unsupported_media_type")


# --------------------------------------------------------------------------
# GET /v1/orders/{id}


@pytest.mark.parametrize("who", ["payer", "payee", "admin"])
async def test_order_parties_and_admins_may_read_it(
    client: httpx.AsyncClient, deal: Deal, who: str
) -> None:
    caller: Account = getattr(deal.people, who)
    assert await get_order(client, caller, deal.id) == deal.order


@pytest.mark.parametrize(
    ("who", "path", "status", "code"),
    [
        pytest.param("stranger", "{id}", 404, "not_found", id="stranger-404"),
        pytest.param("payer", "{unknown}", 404, "not_found", id="unknown-id-404"),
        pytest.param("admin", "{unknown}", 404, "not_found", id="admin-unknown-id-404"),
        pytest.param("payer", "not-a-uuid", 400, "invalid_argument", id="non-uuid-400"),
        pytest.param(None, "{id}", 401, "unauthenticated", id="no-auth-401"),
    ],
)
async def test_order_is_hidden_from_everyone_else(
    client: httpx.AsyncClient, deal: Deal, who: str | None, path: str, status: int, code: str
) -> None:
    caller = getattr(deal.people, who) if who else None
    order_path = path.format(id=deal.id, unknown=uuid.uuid4())
    response = await client.get(f"/v1/orders/{order_path}", headers=headers(caller))
    assert_error(response, status, code)


async def test_a_strangers_404_is_the_same_as_for_a_missing_order(
    client: httpx.AsyncClient, deal: Deal
) -> None:
    hidden = await client.get(f"/v1/orders/{deal.id}", headers=headers(deal.people.stranger))
    missing = await client.get(f"/v1/orders/{uuid.uuid4()}", headers=headers(deal.people.stranger))
    assert hidden.status_code == missing.status_code == 404
    assert hidden.json() == missing.json()


# --------------------------------------------------------------------------
# POST /v1/orders/{id}/pay


async def test_payer_pays_and_the_money_moves_exactly(
    client: httpx.AsyncClient, deal: Deal
) -> None:
    response = await pay(client, deal.people.payer, deal.id)
    assert response.status_code == 200, response.text
    order = assert_order(response.json())
    assert order["status"] == "paid"
    assert order["paid_at"] is not None
    assert datetime.fromisoformat(order["paid_at"]) >= datetime.fromisoformat(order["created_at"])
    assert order["updated_at"] == order["paid_at"]
    for field in ("id", "payer_id", "payee_id", "amount", "currency", "created_at"):
        assert order[field] == deal.order[field]
    await assert_money(client, deal.people, {"EUR": FUNDS - PRICE}, {"EUR": PRICE})
    assert await get_order(client, deal.people.payee, deal.id) == order


async def test_paying_with_exactly_the_whole_balance_leaves_zero(
    client: httpx.AsyncClient, people: People
) -> None:
    await credit(client, people.admin, people.payer, PRICE)
    order = await create_order(client, people.payer, people.payee)
    response = await pay(client, people.payer, order["id"])
    assert response.status_code == 200, response.text
    await assert_money(client, people, {"EUR": 0}, {"EUR": PRICE})


@pytest.mark.parametrize(
    "key",
    [
        pytest.param(None, id="missing"),
        pytest.param("", id="empty"),
        pytest.param("k" * 256, id="256-chars"),
        pytest.param("two words", id="space"),
        pytest.param("ключ".encode(), id="non-ascii"),
    ],
)
async def test_pay_with_a_bad_idempotency_key_is_400_and_moves_nothing(
    client: httpx.AsyncClient, deal: Deal, key: str | bytes | None
) -> None:
    response = await client.post(
        f"/v1/orders/{deal.id}/pay", headers=headers(deal.people.payer, key)
    )
    assert_error(response, 400, "invalid_argument")
    assert (await get_order(client, deal.people.payer, deal.id))["status"] == "pending"
    await assert_money(client, deal.people, {"EUR": FUNDS}, {})


async def test_pay_accepts_a_255_char_key(client: httpx.AsyncClient, deal: Deal) -> None:
    response = await pay(client, deal.people.payer, deal.id, "~" * 255)
    assert response.status_code == 200, response.text


async def test_pay_replay_is_byte_identical_and_moves_money_once(
    client: httpx.AsyncClient, deal: Deal
) -> None:
    key = new_key()
    first = await pay(client, deal.people.payer, deal.id, key)
    assert first.status_code == 200, first.text
    for _ in range(3):
        again = await pay(client, deal.people.payer, deal.id, key)
        assert again.status_code == 200
        assert again.content == first.content
    await assert_money(client, deal.people, {"EUR": FUNDS - PRICE}, {"EUR": PRICE})
    assert await entry_count(client, deal.people.payer) == 2  # the credit, one payment
    assert await entry_count(client, deal.people.payee) == 1


@pytest.mark.parametrize(
    "spell",
    [
        pytest.param(str.upper, id="upper-case"),
        pytest.param(lambda u: u.replace("-", ""), id="no-hyphens"),
        pytest.param(lambda u: "{" + u + "}", id="braces"),
    ],
)
async def test_pay_replay_with_the_order_id_spelled_otherwise_is_the_same_request(
    client: httpx.AsyncClient, deal: Deal, spell: Callable[[str], str]
) -> None:
    key = new_key()
    first = await pay(client, deal.people.payer, deal.id, key)
    assert first.status_code == 200, first.text
    again = await pay(client, deal.people.payer, spell(deal.id), key)
    assert again.status_code == 200, again.text
    assert again.content == first.content
    await assert_money(client, deal.people, {"EUR": FUNDS - PRICE}, {"EUR": PRICE})


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        pytest.param(b"text/plain", b"hello", id="text"),
        pytest.param(b"application/json", b"{not json", id="bad-json"),
        pytest.param(b"application/json", b'{"amount": 1}', id="json"),
    ],
)
async def test_pay_takes_no_body_and_ignores_one(
    client: httpx.AsyncClient, deal: Deal, content_type: bytes, body: bytes
) -> None:
    key = new_key()
    first = await client.post(
        f"/v1/orders/{deal.id}/pay",
        content=body,
        headers={**headers(deal.people.payer, key), b"content-type": content_type},
    )
    assert first.status_code == 200, first.text
    assert assert_order(first.json())["amount"] == PRICE
    again = await pay(client, deal.people.payer, deal.id, key)  # no body: the same request
    assert again.content == first.content
    await assert_money(client, deal.people, {"EUR": FUNDS - PRICE}, {"EUR": PRICE})


async def test_pay_replay_survives_a_later_refund(client: httpx.AsyncClient, deal: Deal) -> None:
    """The stored answer is replayed, not the order's current state."""
    key = new_key()
    first = await pay(client, deal.people.payer, deal.id, key)
    assert first.status_code == 200
    assert (await refund(client, deal.people.payee, deal.id)).status_code == 200
    again = await pay(client, deal.people.payer, deal.id, key)
    assert (again.status_code, again.content) == (200, first.content)
    await assert_money(client, deal.people, {"EUR": FUNDS}, {"EUR": 0})


async def test_pay_same_key_on_another_order_is_422_and_moves_nothing(
    client: httpx.AsyncClient, deal: Deal
) -> None:
    key = new_key()
    assert (await pay(client, deal.people.payer, deal.id, key)).status_code == 200
    other = await create_order(client, deal.people.payer, deal.people.payee, 100)
    response = await pay(client, deal.people.payer, other["id"], key)
    assert_error(response, 422, "idempotency_mismatch")
    assert (await get_order(client, deal.people.payer, other["id"]))["status"] == "pending"
    await assert_money(client, deal.people, {"EUR": FUNDS - PRICE}, {"EUR": PRICE})


async def test_a_pay_key_reused_for_a_refund_is_422(client: httpx.AsyncClient, deal: Deal) -> None:
    """The fingerprint covers the path: pay and refund under one key differ.
    The payee is the caller of both here, so the key is the same caller's."""
    key = new_key()
    await credit(client, deal.people.admin, deal.people.payee, FUNDS)
    backwards = await create_order(client, deal.people.payee, deal.people.payer)
    assert (await pay(client, deal.people.payee, backwards["id"], key)).status_code == 200
    assert (await pay(client, deal.people.payer, deal.id)).status_code == 200
    response = await refund(client, deal.people.payee, deal.id, key)
    assert_error(response, 422, "idempotency_mismatch")
    assert (await get_order(client, deal.people.payee, deal.id))["status"] == "paid"


async def test_paying_a_paid_order_under_another_key_is_409(
    client: httpx.AsyncClient, paid_deal: Deal
) -> None:
    response = await pay(client, paid_deal.people.payer, paid_deal.id)
    assert_error(response, 409, "failed_precondition")
    await assert_money(client, paid_deal.people, {"EUR": FUNDS - PRICE}, {"EUR": PRICE})


async def test_insufficient_funds_is_402_and_a_later_retry_with_the_same_key_pays(
    client: httpx.AsyncClient, people: People
) -> None:
    """Failures are not stored under the key (they roll back with the
    transaction): undocumented in API.md and docs/decisions.md."""
    await credit(client, people.admin, people.payer, PRICE - 1)
    order = await create_order(client, people.payer, people.payee)
    key = new_key()
    response = await pay(client, people.payer, order["id"], key)
    assert_error(response, 402, "insufficient_funds")
    assert (await get_order(client, people.payer, order["id"]))["status"] == "pending"
    await assert_money(client, people, {"EUR": PRICE - 1}, {})
    assert await entry_count(client, people.payer) == 1

    await credit(client, people.admin, people.payer, 1)
    retried = await pay(client, people.payer, order["id"], key)
    assert retried.status_code == 200, retried.text
    assert retried.json()["status"] == "paid"
    await assert_money(client, people, {"EUR": 0}, {"EUR": PRICE})


@pytest.mark.parametrize(
    ("holdings", "order_currency"),
    [
        pytest.param({}, "EUR", id="empty-wallet"),
        pytest.param({"EUR": PRICE - 1}, "EUR", id="one-short"),
        pytest.param({"EUR": FUNDS}, "USD", id="only-another-currency"),
        pytest.param({"USD": PRICE - 1, "EUR": FUNDS}, "USD", id="short-in-order-currency"),
    ],
)
async def test_pay_without_enough_money_in_the_currency_is_402(
    client: httpx.AsyncClient, people: People, holdings: dict[str, int], order_currency: str
) -> None:
    for currency, amount in holdings.items():
        await credit(client, people.admin, people.payer, amount, currency)
    order = await create_order(client, people.payer, people.payee, PRICE, order_currency)
    response = await pay(client, people.payer, order["id"])
    assert_error(response, 402, "insufficient_funds")
    assert (await get_order(client, people.payer, order["id"]))["status"] == "pending"
    await assert_money(client, people, holdings, {})


# Permission comes before the Idempotency-Key: whoever may not act on an
# order gets the same answer with a good key, a bad one or none.
KEYS: dict[str, str | None] = {"fresh-key": "fresh", "no-key": None, "bad-key": "two words"}


def key_headers(caller: Account | None, key: str | None) -> dict[bytes, bytes]:
    return headers(caller, new_key() if key == "fresh" else key)


@pytest.mark.parametrize("key", KEYS.values(), ids=list(KEYS))
@pytest.mark.parametrize(
    ("who", "target", "status", "code"),
    [
        pytest.param("payee", "order", 403, "permission_denied", id="payee-403"),
        pytest.param("admin", "order", 403, "permission_denied", id="admin-is-not-the-payer-403"),
        pytest.param("stranger", "order", 404, "not_found", id="stranger-404"),
        pytest.param("payer", "unknown", 404, "not_found", id="unknown-order-404"),
        pytest.param("payer", "not-a-uuid", 400, "invalid_argument", id="non-uuid-400"),
        pytest.param(None, "order", 401, "unauthenticated", id="no-auth-401"),
    ],
)
async def test_only_the_payer_may_pay(
    client: httpx.AsyncClient,
    deal: Deal,
    who: str | None,
    target: str,
    status: int,
    code: str,
    key: str | None,
) -> None:
    caller = getattr(deal.people, who) if who else None
    order_id = {"order": deal.id, "unknown": str(uuid.uuid4())}.get(target, target)
    response = await client.post(f"/v1/orders/{order_id}/pay", headers=key_headers(caller, key))
    assert_error(response, status, code)
    assert (await get_order(client, deal.people.payer, deal.id))["status"] == "pending"
    await assert_money(client, deal.people, {"EUR": FUNDS}, {})


async def test_a_refunded_order_cannot_be_paid_again(
    client: httpx.AsyncClient, paid_deal: Deal
) -> None:
    assert (await refund(client, paid_deal.people.payee, paid_deal.id)).status_code == 200
    assert_error(
        await pay(client, paid_deal.people.payer, paid_deal.id), 409, "failed_precondition"
    )
    await assert_money(client, paid_deal.people, {"EUR": FUNDS}, {"EUR": 0})


# --------------------------------------------------------------------------
# POST /v1/orders/{id}/refund


@pytest.mark.parametrize("who", ["payee", "admin"])
async def test_payee_or_admin_refunds_and_the_money_moves_back(
    client: httpx.AsyncClient, paid_deal: Deal, who: str
) -> None:
    response = await refund(client, getattr(paid_deal.people, who), paid_deal.id)
    assert response.status_code == 200, response.text
    order = assert_order(response.json())
    assert order["status"] == "refunded"
    assert order["paid_at"] == paid_deal.order["paid_at"]
    assert datetime.fromisoformat(order["updated_at"]) >= datetime.fromisoformat(
        paid_deal.order["updated_at"]
    )
    await assert_money(client, paid_deal.people, {"EUR": FUNDS}, {"EUR": 0})
    assert await get_order(client, paid_deal.people.payer, paid_deal.id) == order


async def test_refund_replay_is_byte_identical_and_moves_money_once(
    client: httpx.AsyncClient, paid_deal: Deal
) -> None:
    key = new_key()
    first = await refund(client, paid_deal.people.payee, paid_deal.id, key)
    assert first.status_code == 200, first.text
    for _ in range(3):
        again = await refund(client, paid_deal.people.payee, paid_deal.id, key)
        assert (again.status_code, again.content) == (200, first.content)
    await assert_money(client, paid_deal.people, {"EUR": FUNDS}, {"EUR": 0})
    assert await entry_count(client, paid_deal.people.payer) == 3  # credit, payment, refund


async def test_a_second_refund_under_another_key_is_409(
    client: httpx.AsyncClient, paid_deal: Deal
) -> None:
    assert (await refund(client, paid_deal.people.payee, paid_deal.id)).status_code == 200
    for caller in (paid_deal.people.payee, paid_deal.people.admin):
        assert_error(await refund(client, caller, paid_deal.id), 409, "failed_precondition")
    await assert_money(client, paid_deal.people, {"EUR": FUNDS}, {"EUR": 0})


async def test_refunding_a_pending_order_is_409(client: httpx.AsyncClient, deal: Deal) -> None:
    assert_error(await refund(client, deal.people.payee, deal.id), 409, "failed_precondition")
    assert (await get_order(client, deal.people.payee, deal.id))["status"] == "pending"
    await assert_money(client, deal.people, {"EUR": FUNDS}, {})


@pytest.mark.parametrize("key", KEYS.values(), ids=list(KEYS))
@pytest.mark.parametrize(
    ("who", "target", "status", "code"),
    [
        pytest.param("payer", "order", 403, "permission_denied", id="payer-403"),
        pytest.param("stranger", "order", 404, "not_found", id="stranger-404"),
        pytest.param("payee", "unknown", 404, "not_found", id="unknown-order-404"),
        pytest.param("payee", "not-a-uuid", 400, "invalid_argument", id="non-uuid-400"),
        pytest.param(None, "order", 401, "unauthenticated", id="no-auth-401"),
    ],
)
async def test_only_the_payee_or_an_admin_may_refund(
    client: httpx.AsyncClient,
    paid_deal: Deal,
    who: str | None,
    target: str,
    status: int,
    code: str,
    key: str | None,
) -> None:
    caller = getattr(paid_deal.people, who) if who else None
    order_id = {"order": paid_deal.id, "unknown": str(uuid.uuid4())}.get(target, target)
    response = await client.post(f"/v1/orders/{order_id}/refund", headers=key_headers(caller, key))
    assert_error(response, status, code)
    assert (await get_order(client, paid_deal.people.payer, paid_deal.id))["status"] == "paid"
    await assert_money(client, paid_deal.people, {"EUR": FUNDS - PRICE}, {"EUR": PRICE})


@pytest.mark.parametrize(
    "key",
    [
        pytest.param(None, id="missing"),
        pytest.param("k" * 256, id="256-chars"),
        pytest.param("with space", id="space"),
    ],
)
async def test_refund_with_a_bad_idempotency_key_is_400_and_moves_nothing(
    client: httpx.AsyncClient, paid_deal: Deal, key: str | None
) -> None:
    response = await client.post(
        f"/v1/orders/{paid_deal.id}/refund", headers=headers(paid_deal.people.payee, key)
    )
    assert_error(response, 400, "invalid_argument")
    assert (await get_order(client, paid_deal.people.payee, paid_deal.id))["status"] == "paid"
    await assert_money(client, paid_deal.people, {"EUR": FUNDS - PRICE}, {"EUR": PRICE})


async def test_refund_by_a_payee_who_spent_the_money_is_402(
    client: httpx.AsyncClient, paid_deal: Deal
) -> None:
    people = paid_deal.people
    onward = await create_order(client, people.payee, people.stranger, 1)
    assert (await pay(client, people.payee, onward["id"])).status_code == 200
    key = new_key()
    assert_error(await refund(client, people.payee, paid_deal.id, key), 402, "insufficient_funds")
    assert (await get_order(client, people.payee, paid_deal.id))["status"] == "paid"
    await assert_money(client, people, {"EUR": FUNDS - PRICE}, {"EUR": PRICE - 1})
    # Not stored under the key: once the money is back, the same key refunds.
    await credit(client, people.admin, people.payee, 1)
    retried = await refund(client, people.payee, paid_deal.id, key)
    assert retried.status_code == 200, retried.text
    await assert_money(client, people, {"EUR": FUNDS}, {"EUR": 0})


# --------------------------------------------------------------------------
# Exactly once, under concurrency (through the ASGI client)

CONCURRENT = 20


async def test_concurrent_pays_with_distinct_keys_pay_exactly_once(
    client: httpx.AsyncClient, deal: Deal
) -> None:
    responses = await asyncio.gather(
        *(pay(client, deal.people.payer, deal.id) for _ in range(CONCURRENT))
    )
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200] + [409] * (CONCURRENT - 1), statuses
    for r in responses:
        if r.status_code == 409:
            assert r.json()["code"] in {"payment_in_progress", "failed_precondition"}, r.text
    await assert_money(client, deal.people, {"EUR": FUNDS - PRICE}, {"EUR": PRICE})
    assert await entry_count(client, deal.people.payer) == 2


async def test_concurrent_pays_with_one_key_agree_and_charge_once(
    client: httpx.AsyncClient, deal: Deal
) -> None:
    key = new_key()
    responses = await asyncio.gather(
        *(pay(client, deal.people.payer, deal.id, key) for _ in range(CONCURRENT))
    )
    ok = [r for r in responses if r.status_code == 200]
    assert ok, [r.status_code for r in responses]
    assert len({r.content for r in ok}) == 1
    assert ok[0].json()["status"] == "paid"
    for r in responses:
        if r.status_code != 200:
            assert_error(r, 409, "payment_in_progress")
    # Once settled, the key replays the one answer.
    again = await pay(client, deal.people.payer, deal.id, key)
    assert (again.status_code, again.content) == (200, ok[0].content)
    await assert_money(client, deal.people, {"EUR": FUNDS - PRICE}, {"EUR": PRICE})
    assert await entry_count(client, deal.people.payer) == 2


async def test_concurrent_pays_of_many_orders_conserve_money(
    client: httpx.AsyncClient, people: People
) -> None:
    """Ten orders of PRICE against FUNDS (enough for three): exactly three
    are paid, the rest are 402, and no wallet goes negative."""
    orders = [await create_order(client, people.payer, people.payee) for _ in range(10)]
    await credit(client, people.admin, people.payer, FUNDS)
    responses = await asyncio.gather(*(pay(client, people.payer, o["id"]) for o in orders))
    statuses = sorted(r.status_code for r in responses)
    paid = FUNDS // PRICE
    assert statuses == [200] * paid + [402] * (len(orders) - paid), statuses
    await assert_money(client, people, {"EUR": FUNDS - paid * PRICE}, {"EUR": paid * PRICE})


async def test_concurrent_refunds_refund_exactly_once(
    client: httpx.AsyncClient, paid_deal: Deal
) -> None:
    callers = [paid_deal.people.payee, paid_deal.people.admin] * (CONCURRENT // 2)
    responses = await asyncio.gather(*(refund(client, c, paid_deal.id) for c in callers))
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200] + [409] * (CONCURRENT - 1), statuses
    await assert_money(client, paid_deal.people, {"EUR": FUNDS}, {"EUR": 0})
