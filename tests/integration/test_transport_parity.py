"""The parity suite: the same scenarios over REST and over gRPC, on the same
core, with the outcomes compared field by field. An outcome is what a
client can see, in the transport's own terms translated to one shape: an
error is its API.md code; a resource is its fields, ids replaced by who
they name."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import grpc
import httpx
import pytest

from ledgerline.main.core import Core
from ledgerline.usecase.users import Registration
from ledgerline.v1 import payments_pb2, users_pb2, wallet_pb2
from tests.integration.conftest import PASSWORD
from tests.integration.test_grpc import Stubs, grpc_serving

Outcome = tuple[str, Any]  # ("ok", fields) or ("error", API.md code)
_STATUS = {
    payments_pb2.ORDER_STATUS_PENDING: "pending",
    payments_pb2.ORDER_STATUS_PAID: "paid",
    payments_pb2.ORDER_STATUS_REFUNDED: "refunded",
}


class Client(Protocol):
    async def register(self, email: str, password: str, name: str) -> Outcome: ...
    async def login(self, email: str, password: str) -> Outcome: ...
    async def get_user(self, token: str, user_id: str) -> Outcome: ...
    async def get_me(self, token: str) -> Outcome: ...
    async def by_email(self, token: str, email: str) -> Outcome: ...
    async def credit(self, token: str, user_id: str, amount: int, key: str) -> Outcome: ...
    async def wallet(self, token: str) -> Outcome: ...
    async def order(self, token: str, payee_id: str, amount: int) -> Outcome: ...
    async def pay(self, token: str, order_id: str, key: str) -> Outcome: ...
    async def refund(self, token: str, order_id: str, key: str) -> Outcome: ...


def _user(fields: dict[str, Any]) -> Outcome:
    return "ok", {"id": fields["id"], "email": fields["email"], "name": fields["name"]}


def _order(fields: dict[str, Any]) -> Outcome:
    keys = ("id", "payer_id", "payee_id", "amount", "currency", "status")
    return "ok", {k: fields[k] for k in keys} | {"paid": bool(fields.get("paid"))}


class Rest:
    def __init__(self, client: httpx.AsyncClient) -> None:
        self._c = client

    async def _call(
        self, method: str, path: str, token: str = "", key: str = "", **kw: Any
    ) -> tuple[int, dict[str, Any]]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        if key:
            headers["Idempotency-Key"] = key
        response = await self._c.request(method, path, headers=headers, **kw)
        body: dict[str, Any] = response.json()
        return response.status_code, body

    @staticmethod
    def _error(status: int, body: dict[str, Any]) -> Outcome | None:
        return None if status < 300 else ("error", body["code"])

    async def register(self, email: str, password: str, name: str) -> Outcome:
        status, body = await self._call(
            "POST", "/v1/users", json={"email": email, "password": password, "name": name}
        )
        return self._error(status, body) or _user(body)

    async def login(self, email: str, password: str) -> Outcome:
        status, body = await self._call(
            "POST", "/v1/auth/token", json={"email": email, "password": password}
        )
        return self._error(status, body) or ("ok", body["access_token"])

    async def get_user(self, token: str, user_id: str) -> Outcome:
        status, body = await self._call("GET", f"/v1/users/{user_id}", token)
        return self._error(status, body) or _user(body)

    async def get_me(self, token: str) -> Outcome:
        status, body = await self._call("GET", "/v1/users/me", token)
        return self._error(status, body) or _user(body)

    async def by_email(self, token: str, email: str) -> Outcome:
        status, body = await self._call("GET", "/v1/users", token, params={"email": email})
        return self._error(status, body) or _user(body)

    async def credit(self, token: str, user_id: str, amount: int, key: str) -> Outcome:
        status, body = await self._call(
            "POST",
            "/v1/admin/credits",
            token,
            key,
            json={"user_id": user_id, "amount": amount, "currency": "EUR"},
        )
        fields = ("user_id", "amount", "currency", "balance")
        return self._error(status, body) or ("ok", {k: body[k] for k in fields})

    async def wallet(self, token: str) -> Outcome:
        status, body = await self._call("GET", "/v1/wallet", token)
        balances = [(b["currency"], b["amount"]) for b in body.get("balances", [])]
        return self._error(status, body) or ("ok", balances)

    async def order(self, token: str, payee_id: str, amount: int) -> Outcome:
        status, body = await self._call(
            "POST",
            "/v1/orders",
            token,
            json={"payee_id": payee_id, "amount": amount, "currency": "EUR"},
        )
        return self._error(status, body) or _order(body | {"paid": body.get("paid_at")})

    async def pay(self, token: str, order_id: str, key: str) -> Outcome:
        status, body = await self._call("POST", f"/v1/orders/{order_id}/pay", token, key)
        return self._error(status, body) or _order(body | {"paid": body.get("paid_at")})

    async def refund(self, token: str, order_id: str, key: str) -> Outcome:
        status, body = await self._call("POST", f"/v1/orders/{order_id}/refund", token, key)
        return self._error(status, body) or _order(body | {"paid": body.get("paid_at")})


class Grpc:
    def __init__(self, stubs: Stubs) -> None:
        self._s = stubs

    @staticmethod
    def _meta(token: str, key: str = "") -> tuple[tuple[str, str], ...]:
        meta = [("authorization", f"Bearer {token}")] if token else []
        if key:
            meta.append(("idempotency-key", key))
        return tuple(meta)

    @staticmethod
    async def _run(call: Callable[[], Awaitable[Any]], ok: Callable[[Any], Outcome]) -> Outcome:
        try:
            reply = await call()
        except grpc.aio.AioRpcError as error:
            return "error", dict(error.trailing_metadata() or ())["error-code"]
        return ok(reply)

    @staticmethod
    def _user(reply: Any) -> Outcome:
        u = reply.user
        return _user({"id": u.id, "email": u.email, "name": u.name})

    @staticmethod
    def _order(reply: Any) -> Outcome:
        o = reply.order
        return _order(
            {
                "id": o.id,
                "payer_id": o.payer_id,
                "payee_id": o.payee_id,
                "amount": o.amount,
                "currency": o.currency,
                "status": _STATUS[o.status],
                "paid": o.HasField("pay_time"),
            }
        )

    async def register(self, email: str, password: str, name: str) -> Outcome:
        request = users_pb2.RegisterRequest(email=email, password=password, name=name)
        return await self._run(lambda: self._s.users.Register(request), self._user)

    async def login(self, email: str, password: str) -> Outcome:
        request = users_pb2.LoginRequest(email=email, password=password)
        return await self._run(
            lambda: self._s.users.Login(request), lambda r: ("ok", r.access_token)
        )

    async def get_user(self, token: str, user_id: str) -> Outcome:
        request = users_pb2.GetUserRequest(id=user_id)
        return await self._run(
            lambda: self._s.users.GetUser(request, metadata=self._meta(token)), self._user
        )

    async def get_me(self, token: str) -> Outcome:
        request = users_pb2.GetMeRequest()
        return await self._run(
            lambda: self._s.users.GetMe(request, metadata=self._meta(token)), self._user
        )

    async def by_email(self, token: str, email: str) -> Outcome:
        request = users_pb2.GetUserByEmailRequest(email=email)
        return await self._run(
            lambda: self._s.users.GetUserByEmail(request, metadata=self._meta(token)),
            self._user,
        )

    async def credit(self, token: str, user_id: str, amount: int, key: str) -> Outcome:
        request = wallet_pb2.CreditRequest(user_id=user_id, amount=amount, currency="EUR")

        def ok(r: Any) -> Outcome:
            fields = {"user_id": r.user_id, "amount": r.amount, "currency": r.currency}
            return "ok", fields | {"balance": r.balance}

        return await self._run(
            lambda: self._s.wallet.Credit(request, metadata=self._meta(token, key)), ok
        )

    async def wallet(self, token: str) -> Outcome:
        request = wallet_pb2.GetWalletRequest()
        return await self._run(
            lambda: self._s.wallet.GetWallet(request, metadata=self._meta(token)),
            lambda r: ("ok", [(b.currency, b.amount) for b in r.balances]),
        )

    async def order(self, token: str, payee_id: str, amount: int) -> Outcome:
        request = payments_pb2.CreateOrderRequest(payee_id=payee_id, amount=amount, currency="EUR")
        return await self._run(
            lambda: self._s.payments.CreateOrder(request, metadata=self._meta(token)),
            self._order,
        )

    async def pay(self, token: str, order_id: str, key: str) -> Outcome:
        request = payments_pb2.PayOrderRequest(id=order_id)
        return await self._run(
            lambda: self._s.payments.PayOrder(request, metadata=self._meta(token, key)),
            self._order,
        )

    async def refund(self, token: str, order_id: str, key: str) -> Outcome:
        request = payments_pb2.RefundOrderRequest(id=order_id)
        return await self._run(
            lambda: self._s.payments.RefundOrder(request, metadata=self._meta(token, key)),
            self._order,
        )


@dataclass
class Cast:
    """The people of a scenario, made afresh for each transport."""

    client: Client
    tokens: dict[str, str]
    ids: dict[str, str]

    def anonymise(self, outcome: Outcome) -> Outcome:
        """Ids and emails replaced by who they name, so runs compare."""
        names = {v: k for k, v in self.ids.items()}
        kind, value = outcome
        if isinstance(value, dict):
            value = {
                k: names.get(v, "<new id>" if k == "id" else v) if isinstance(v, str) else v
                for k, v in value.items()
            }
            if "email" in value:
                value["email"] = value["email"].split("-", 1)[-1]
        return kind, value


_runs = itertools.count()


async def _cast(client: Client, core: Core) -> Cast:
    """alice, bob and an admin, with emails unique to this run."""
    run = next(_runs)
    tokens: dict[str, str] = {}
    ids: dict[str, str] = {}
    for who in ("alice", "bob"):
        email = f"r{run}-{who}@example.com"
        kind, fields = await client.register(email, PASSWORD, who.title())
        assert kind == "ok", fields
        ids[who] = fields["id"]
        tokens[who] = (await client.login(email, PASSWORD))[1]
    admin = await core.users.create_admin(
        Registration(f"r{run}-root@example.com", PASSWORD, "Root")
    )
    ids["root"] = str(admin.user.id)
    tokens["root"] = (await client.login(f"r{run}-root@example.com", PASSWORD))[1]
    return Cast(client, tokens, ids)


Scenario = Callable[[Cast], Awaitable[list[Outcome]]]


async def registration(c: Cast) -> list[Outcome]:
    run = c.ids["alice"][:8]
    return [
        await c.client.register(f"{run}-new@example.com", PASSWORD, "  New  "),
        await c.client.register(f"{run}-NEW@example.com", PASSWORD, "Again"),
        await c.client.register("not-an-email", PASSWORD, "X"),
        await c.client.register(f"{run}-short@example.com", "short", "X"),
        await c.client.register(f"{run}-noname@example.com", PASSWORD, "   "),
    ]


async def login(c: Cast) -> list[Outcome]:
    alice = (await c.client.get_me(c.tokens["alice"]))[1]["email"]
    ok, _ = await c.client.login(alice, PASSWORD)
    return [
        ("ok", ok),
        await c.client.login(alice, "wrong password"),
        await c.client.login("nobody@example.com", PASSWORD),
        await c.client.get_me("not-a-token"),
    ]


async def visibility(c: Cast) -> list[Outcome]:
    a, root = c.tokens["alice"], c.tokens["root"]
    bob_email = (await c.client.get_me(c.tokens["bob"]))[1]["email"]
    return [
        await c.client.get_me(a),
        await c.client.get_user(a, c.ids["alice"]),
        await c.client.get_user(a, c.ids["bob"]),
        await c.client.get_user(a, "00000000-0000-0000-0000-000000000000"),
        await c.client.get_user(a, "not-a-uuid"),
        await c.client.get_user(root, c.ids["bob"]),
        await c.client.by_email(a, bob_email),
        await c.client.by_email(root, bob_email.upper()),
        await c.client.by_email(root, "nobody@example.com"),
    ]


async def money(c: Cast) -> list[Outcome]:
    """Credit, order, pay (with replay and mismatch), refund, insufficient
    funds, and the wallets after."""
    a, b, root = c.tokens["alice"], c.tokens["bob"], c.tokens["root"]
    out = [
        await c.client.credit(a, c.ids["alice"], 500, "c1"),
        await c.client.credit(root, c.ids["alice"], 500, "c1"),
        await c.client.credit(root, c.ids["alice"], 500, "c1"),
        await c.client.credit(root, c.ids["alice"], 700, "c1"),
    ]
    kind, order = await c.client.order(a, c.ids["bob"], 300)
    big = (await c.client.order(a, c.ids["bob"], 10_000))[1]
    out += [
        (kind, c.anonymise((kind, order))[1]),
        await c.client.order(a, c.ids["alice"], 1),
        await c.client.pay(b, order["id"], "p1"),
        await c.client.pay(a, order["id"], ""),
        await c.client.pay(a, order["id"], "p1"),
        await c.client.pay(a, order["id"], "p1"),
        await c.client.pay(a, big["id"], "p1"),
        await c.client.pay(a, order["id"], "p2"),
        await c.client.pay(a, big["id"], "p3"),
        await c.client.refund(a, order["id"], "r1"),
        await c.client.refund(b, order["id"], "r1"),
        await c.client.refund(b, order["id"], "r1"),
        await c.client.wallet(a),
        await c.client.wallet(b),
    ]
    return out


SCENARIOS: dict[str, Scenario] = {
    "register": registration,
    "login": login,
    "visibility": visibility,
    "money": money,
}


@pytest.fixture
async def transports(core: Core, client: httpx.AsyncClient) -> AsyncIterator[tuple[Rest, Grpc]]:
    async with grpc_serving(core) as stubs:
        yield Rest(client), Grpc(stubs)


@pytest.mark.parametrize("scenario", list(SCENARIOS))
async def test_rest_and_grpc_agree(
    transports: tuple[Rest, Grpc], core: Core, scenario: str
) -> None:
    results = []
    for transport in transports:
        cast = await _cast(transport, core)
        results.append([cast.anonymise(o) for o in await SCENARIOS[scenario](cast)])
    over_rest, over_grpc = results
    assert over_rest == over_grpc
    assert any(kind == "ok" for kind, _ in over_rest)
    assert any(kind == "error" for kind, _ in over_rest) or scenario == "money"
