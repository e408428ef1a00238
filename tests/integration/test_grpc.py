"""The gRPC services through a real channel to a real server on the
loopback, over the same core (and database) as the REST client: every RPC,
the error table, the envelope, and a key that crosses transports."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import asyncpg
import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from ledgerline.main.core import Core, Overrides
from ledgerline.main.runtime import Runtime
from ledgerline.main.serve import grpc_server
from ledgerline.platform.metrics import HTTPMetrics
from ledgerline.v1 import (
    payments_pb2,
    payments_pb2_grpc,
    users_pb2,
    users_pb2_grpc,
    wallet_pb2,
    wallet_pb2_grpc,
)
from tests.integration.conftest import JWT_SECRET, PASSWORD, AccountFactory, cheap_settings
from tests.integration.test_http_operations import SECRET, ExplodingHasher

Metadata = tuple[tuple[str, str], ...]


@dataclass
class Stubs:
    users: users_pb2_grpc.UserServiceStub
    wallet: wallet_pb2_grpc.WalletServiceStub
    payments: payments_pb2_grpc.PaymentServiceStub
    channel: grpc.aio.Channel


@contextlib.asynccontextmanager
async def grpc_serving(core: Core) -> AsyncIterator[Stubs]:
    server = grpc_server(core, HTTPMetrics(), "127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            yield Stubs(
                users_pb2_grpc.UserServiceStub(channel),
                wallet_pb2_grpc.WalletServiceStub(channel),
                payments_pb2_grpc.PaymentServiceStub(channel),
                channel,
            )
    finally:
        await server.shutdown(grace=1)


@pytest.fixture
async def stubs(core: Core) -> AsyncIterator[Stubs]:
    async with grpc_serving(core) as s:
        yield s


def bearer(token: str) -> Metadata:
    return (("authorization", f"Bearer {token}"),)


async def login(stubs: Stubs, email: str) -> Metadata:
    reply = await stubs.users.Login(users_pb2.LoginRequest(email=email, password=PASSWORD))
    return bearer(reply.access_token)


async def status_of(call: object) -> tuple[grpc.StatusCode, str, str]:
    """The status, message and API.md code of a call that must fail."""
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call  # type: ignore[misc]
    error = caught.value
    trailing = dict(error.trailing_metadata() or ())
    return error.code(), error.details() or "", str(trailing.get("error-code", ""))


# --------------------------------------------------------------------------
# Standard services


async def test_reflection_lists_the_three_services(stubs: Stubs) -> None:
    # The reflection and health stubs are typed for sync channels only.
    reflection = reflection_pb2_grpc.ServerReflectionStub(stubs.channel)  # type: ignore[arg-type]

    async def one() -> AsyncIterator[reflection_pb2.ServerReflectionRequest]:
        yield reflection_pb2.ServerReflectionRequest(list_services="")

    names: set[str] = set()
    async for reply in reflection.ServerReflectionInfo(one()):  # type: ignore[operator]
        names |= {s.name for s in reply.list_services_response.service}
    assert {
        "ledgerline.v1.UserService",
        "ledgerline.v1.WalletService",
        "ledgerline.v1.PaymentService",
        "grpc.health.v1.Health",
    } <= names


@pytest.mark.parametrize("service", ["", "ledgerline.v1.PaymentService"], ids=["server", "one"])
async def test_health_is_serving(stubs: Stubs, service: str) -> None:
    health = health_pb2_grpc.HealthStub(stubs.channel)
    request = health_pb2.HealthCheckRequest(service=service)
    reply = await health.Check(request)  # type: ignore[attr-defined]
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


# --------------------------------------------------------------------------
# Users


async def test_register_login_and_the_user_reads(
    stubs: Stubs, make_account: AccountFactory
) -> None:
    registered = await stubs.users.Register(
        users_pb2.RegisterRequest(email="Ada@Example.com ", password=PASSWORD, name=" Ada ")
    )
    user = registered.user
    assert (user.email, user.name) == ("Ada@Example.com", "Ada")
    assert user.create_time.ToDatetime() == user.update_time.ToDatetime()
    auth = await login(stubs, "ada@example.com")

    me = await stubs.users.GetMe(users_pb2.GetMeRequest(), metadata=auth)
    by_id = await stubs.users.GetUser(users_pb2.GetUserRequest(id=user.id), metadata=auth)
    assert me.user == by_id.user == user

    admin = await make_account("root@example.com", admin=True)
    found = await stubs.users.GetUserByEmail(
        users_pb2.GetUserByEmailRequest(email="ADA@example.com"), metadata=bearer(admin.token)
    )
    assert found.user == user


async def test_the_same_user_over_rest_and_grpc(
    stubs: Stubs, client: httpx.AsyncClient, make_account: AccountFactory
) -> None:
    account = await make_account("both@example.com")
    rest = (await client.get("/v1/users/me", headers=account.auth)).json()
    grpc_user = (
        await stubs.users.GetMe(users_pb2.GetMeRequest(), metadata=bearer(account.token))
    ).user
    assert (grpc_user.id, grpc_user.email, grpc_user.name) == (
        rest["id"],
        rest["email"],
        rest["name"],
    )
    assert grpc_user.create_time.ToJsonString() == rest["created_at"]


# --------------------------------------------------------------------------
# The error table over gRPC

UNKNOWN_ID = str(uuid.uuid4())


async def test_every_error_maps_as_api_md_says(stubs: Stubs, make_account: AccountFactory) -> None:
    alice = await make_account("alice@example.com")
    bob = await make_account("bob@example.com")
    a, b = bearer(alice.token), bearer(bob.token)
    order = (
        await stubs.payments.CreateOrder(
            payments_pb2.CreateOrderRequest(payee_id=bob.id, amount=500, currency="EUR"),
            metadata=a,
        )
    ).order
    key = (("idempotency-key", "k-1"),)
    # Factories: a call starts as soon as it is made, and these run one at a time.
    cases: dict[str, tuple[Callable[[], object], grpc.StatusCode, str]] = {
        "no-token": (
            lambda: stubs.users.GetMe(users_pb2.GetMeRequest()),
            grpc.StatusCode.UNAUTHENTICATED,
            "unauthenticated",
        ),
        "garbage-token": (
            lambda: stubs.users.GetMe(users_pb2.GetMeRequest(), metadata=bearer("nope")),
            grpc.StatusCode.UNAUTHENTICATED,
            "unauthenticated",
        ),
        "bad-registration": (
            lambda: stubs.users.Register(
                users_pb2.RegisterRequest(email="x", password="1", name="")
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            "invalid_argument",
        ),
        "duplicate-email": (
            lambda: stubs.users.Register(
                users_pb2.RegisterRequest(email="ALICE@example.com", password=PASSWORD, name="A")
            ),
            grpc.StatusCode.ALREADY_EXISTS,
            "conflict",
        ),
        "wrong-password": (
            lambda: stubs.users.Login(
                users_pb2.LoginRequest(email="alice@example.com", password="x" * 9)
            ),
            grpc.StatusCode.UNAUTHENTICATED,
            "unauthenticated",
        ),
        "id-not-a-uuid": (
            lambda: stubs.users.GetUser(users_pb2.GetUserRequest(id="42"), metadata=a),
            grpc.StatusCode.INVALID_ARGUMENT,
            "invalid_argument",
        ),
        "another-user": (
            lambda: stubs.users.GetUser(users_pb2.GetUserRequest(id=bob.id), metadata=a),
            grpc.StatusCode.NOT_FOUND,
            "not_found",
        ),
        "lookup-by-email-not-admin": (
            lambda: stubs.users.GetUserByEmail(
                users_pb2.GetUserByEmailRequest(email="bob@example.com"), metadata=a
            ),
            grpc.StatusCode.PERMISSION_DENIED,
            "permission_denied",
        ),
        "credit-not-admin": (
            lambda: stubs.wallet.Credit(wallet_pb2.CreditRequest(), metadata=a + key),
            grpc.StatusCode.PERMISSION_DENIED,
            "permission_denied",
        ),
        "page-size-too-big": (
            lambda: stubs.wallet.ListEntries(
                wallet_pb2.ListEntriesRequest(page_size=101), metadata=a
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            "invalid_argument",
        ),
        "order-not-found": (
            lambda: stubs.payments.GetOrder(
                payments_pb2.GetOrderRequest(id=UNKNOWN_ID), metadata=a
            ),
            grpc.StatusCode.NOT_FOUND,
            "not_found",
        ),
        "pay-without-key": (
            lambda: stubs.payments.PayOrder(payments_pb2.PayOrderRequest(id=order.id), metadata=a),
            grpc.StatusCode.INVALID_ARGUMENT,
            "invalid_argument",
        ),
        "pay-by-the-payee": (
            lambda: stubs.payments.PayOrder(
                payments_pb2.PayOrderRequest(id=order.id), metadata=b + key
            ),
            grpc.StatusCode.PERMISSION_DENIED,
            "permission_denied",
        ),
        "insufficient-funds": (
            lambda: stubs.payments.PayOrder(
                payments_pb2.PayOrderRequest(id=order.id), metadata=a + key
            ),
            grpc.StatusCode.FAILED_PRECONDITION,
            "insufficient_funds",
        ),
        "refund-a-pending-order": (
            lambda: stubs.payments.RefundOrder(
                payments_pb2.RefundOrderRequest(id=order.id), metadata=b + key
            ),
            grpc.StatusCode.FAILED_PRECONDITION,
            "failed_precondition",
        ),
        "order-to-oneself": (
            lambda: stubs.payments.CreateOrder(
                payments_pb2.CreateOrderRequest(payee_id=alice.id, amount=1, currency="EUR"),
                metadata=a,
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            "invalid_argument",
        ),
    }
    for name, (call, status, code) in cases.items():
        got_status, message, got_code = await status_of(call())
        assert (got_status, got_code) == (status, code), name
        assert message, name


async def test_an_unexpected_error_is_internal_with_the_fixed_message(database_url: str) -> None:
    runtime = Runtime(database_url, JWT_SECRET)
    overrides = Overrides(hasher=ExplodingHasher())
    async with Core(cheap_settings(), runtime, overrides) as core, grpc_serving(core) as stubs:
        status, message, code = await status_of(
            stubs.users.Register(
                users_pb2.RegisterRequest(email="boom@example.com", password=PASSWORD, name="B")
            )
        )
    assert (status, message, code) == (
        grpc.StatusCode.INTERNAL,
        "internal server error",
        "internal",
    )
    assert SECRET not in message


# --------------------------------------------------------------------------
# Money, exactly once, across transports


async def test_credit_order_pay_refund_and_the_ledger(
    stubs: Stubs, make_account: AccountFactory
) -> None:
    root = await make_account("root@example.com", admin=True)
    alice = await make_account("alice@example.com")
    bob = await make_account("bob@example.com")
    a, b = bearer(alice.token), bearer(bob.token)
    credit = await stubs.wallet.Credit(
        wallet_pb2.CreditRequest(user_id=alice.id, amount=1_000, currency="EUR"),
        metadata=(*bearer(root.token), ("idempotency-key", "top-up")),
    )
    assert (credit.user_id, credit.amount, credit.balance) == (alice.id, 1_000, 1_000)

    order = (
        await stubs.payments.CreateOrder(
            payments_pb2.CreateOrderRequest(
                payee_id=bob.id, amount=300, currency="EUR", description="tea"
            ),
            metadata=a,
        )
    ).order
    assert order.status == payments_pb2.ORDER_STATUS_PENDING
    assert not order.HasField("pay_time")
    pay = payments_pb2.PayOrderRequest(id=order.id)
    paid = (await stubs.payments.PayOrder(pay, metadata=(*a, ("idempotency-key", "p")))).order
    again = (await stubs.payments.PayOrder(pay, metadata=(*a, ("idempotency-key", "p")))).order
    assert paid == again
    assert paid.status == payments_pb2.ORDER_STATUS_PAID
    assert paid.HasField("pay_time")

    refunded = (
        await stubs.payments.RefundOrder(
            payments_pb2.RefundOrderRequest(id=order.id),
            metadata=(*b, ("idempotency-key", "r")),
        )
    ).order
    assert refunded.status == payments_pb2.ORDER_STATUS_REFUNDED

    wallet = await stubs.wallet.GetWallet(wallet_pb2.GetWalletRequest(), metadata=a)
    assert [(x.currency, x.amount) for x in wallet.balances] == [("EUR", 1_000)]
    first = await stubs.wallet.ListEntries(wallet_pb2.ListEntriesRequest(page_size=2), metadata=a)
    assert [e.kind for e in first.entries] == [
        wallet_pb2.ENTRY_KIND_REFUND,
        wallet_pb2.ENTRY_KIND_PAYMENT,
    ]
    assert [e.amount for e in first.entries] == [300, -300]
    assert first.entries[0].order_id == order.id
    rest = await stubs.wallet.ListEntries(
        wallet_pb2.ListEntriesRequest(page_token=first.next_page_token), metadata=a
    )
    assert [e.kind for e in rest.entries] == [wallet_pb2.ENTRY_KIND_CREDIT]
    assert not rest.entries[0].HasField("order_id")
    assert rest.next_page_token == ""


async def test_a_key_used_over_rest_replays_over_grpc(
    stubs: Stubs, client: httpx.AsyncClient, make_account: AccountFactory
) -> None:
    root = await make_account("root@example.com", admin=True)
    alice = await make_account("alice@example.com")
    bob = await make_account("bob@example.com")
    credit = await client.post(
        "/v1/admin/credits",
        json={"user_id": alice.id, "amount": 500, "currency": "EUR"},
        headers={**root.auth, "Idempotency-Key": "c"},
    )
    assert credit.status_code == 201, credit.text
    created = await client.post(
        "/v1/orders",
        json={"payee_id": bob.id, "amount": 200, "currency": "EUR"},
        headers=alice.auth,
    )
    order_id = created.json()["id"]
    over_rest = await client.post(
        f"/v1/orders/{order_id}/pay", headers={**alice.auth, "Idempotency-Key": "K"}
    )
    assert over_rest.status_code == 200, over_rest.text

    over_grpc = (
        await stubs.payments.PayOrder(
            payments_pb2.PayOrderRequest(id=order_id.upper()),
            metadata=(*bearer(alice.token), ("idempotency-key", "K")),
        )
    ).order

    assert over_grpc.id == order_id
    assert over_grpc.pay_time.ToJsonString() == over_rest.json()["paid_at"]
    wallet = (await client.get("/v1/wallet", headers=alice.auth)).json()
    assert wallet["balances"] == [{"currency": "EUR", "amount": 300}]  # charged once
    # The same key for another order, over gRPC: a mismatch, as over REST.
    other = await client.post(
        "/v1/orders",
        json={"payee_id": bob.id, "amount": 100, "currency": "EUR"},
        headers=alice.auth,
    )
    status, _, code = await status_of(
        stubs.payments.PayOrder(
            payments_pb2.PayOrderRequest(id=other.json()["id"]),
            metadata=(*bearer(alice.token), ("idempotency-key", "K")),
        )
    )
    assert (status, code) == (grpc.StatusCode.INVALID_ARGUMENT, "idempotency_mismatch")


async def test_every_answer_carries_a_request_id(stubs: Stubs) -> None:
    call = stubs.users.Login(
        users_pb2.LoginRequest(email="nobody@example.com", password=PASSWORD),
        metadata=(("x-request-id", "trace-7"),),
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    assert dict(caught.value.trailing_metadata() or ())["x-request-id"] == "trace-7"


async def test_a_client_deadline_ends_a_call_that_waits_on_a_locked_row(
    stubs: Stubs, make_account: AccountFactory, core: Core, database_url: str
) -> None:
    """The order's row is held by another transaction: each pay waits on it
    until the client's 50 ms deadline ends the call, the database work
    with it. After 100 such calls nothing of them is left waiting, no
    connection is leaked, and the order pays once the row is free."""
    root = await make_account("root@example.com", admin=True)
    alice = await make_account("alice@example.com")
    bob = await make_account("bob@example.com")
    a = bearer(alice.token)
    await stubs.wallet.Credit(
        wallet_pb2.CreditRequest(user_id=alice.id, amount=100, currency="EUR"),
        metadata=(*bearer(root.token), ("idempotency-key", "top-up")),
    )
    order = (
        await stubs.payments.CreateOrder(
            payments_pb2.CreateOrderRequest(payee_id=bob.id, amount=100, currency="EUR"),
            metadata=a,
        )
    ).order
    pay = payments_pb2.PayOrderRequest(id=order.id)
    locker = await asyncpg.connect(database_url)
    try:
        async with locker.transaction():
            await locker.execute(
                "SELECT 1 FROM orders WHERE id = $1 FOR UPDATE", uuid.UUID(order.id)
            )
            for i in range(100):
                metadata = (*a, ("idempotency-key", f"late-{i}"))
                status, _, _ = await status_of(
                    stubs.payments.PayOrder(pay, metadata=metadata, timeout=0.05)
                )
                assert status == grpc.StatusCode.DEADLINE_EXCEEDED, i
        await _until_no_backend_waits_on_a_lock(locker)
        backends = await locker.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
        )
    finally:
        await locker.close()
    settings = core.settings
    assert backends <= 1 + 2 * settings.db_pool_max_size  # the locker, the two pools
    on_time = stubs.payments.PayOrder(pay, metadata=(*a, ("idempotency-key", "on-time")))
    try:
        paid = await on_time
        assert paid.order.status == payments_pb2.ORDER_STATUS_PAID
    except grpc.aio.AioRpcError:
        # A call its client had given up on reached the server late (a busy
        # machine: the server's deadline runs from when it reads the call)
        # and paid once the row was free. The order is still paid once.
        assert await on_time.code() == grpc.StatusCode.FAILED_PRECONDITION
    got = await stubs.payments.GetOrder(payments_pb2.GetOrderRequest(id=order.id), metadata=a)
    assert got.order.status == payments_pb2.ORDER_STATUS_PAID
    wallet = await stubs.wallet.GetWallet(wallet_pb2.GetWalletRequest(), metadata=a)
    assert [(x.currency, x.amount) for x in wallet.balances] == [("EUR", 0)]


async def _until_no_backend_waits_on_a_lock(conn: asyncpg.Connection) -> None:
    for _ in range(100):
        waiting = await conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )
        if waiting == 0:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("a cut call's query still waits on the row lock")


async def test_health_follows_readiness(stubs: Stubs, core: Core) -> None:
    """A dependency that stops answering turns health NOT_SERVING, as it
    turns /readyz 503; when it answers again, SERVING again."""
    health = health_pb2_grpc.HealthStub(stubs.channel)
    request = health_pb2.HealthCheckRequest(service="ledgerline.v1.PaymentService")
    probes = core.readiness._probes
    working = probes["database"]

    async def down() -> None:
        raise OSError("the database does not answer")

    async def status_within(seconds: float, wanted: int) -> int:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while True:
            status: int = (await health.Check(request)).status  # type: ignore[attr-defined]
            if status == wanted or loop.time() > deadline:
                return status
            await asyncio.sleep(0.1)

    probes["database"] = down
    try:
        assert await status_within(5, health_pb2.HealthCheckResponse.NOT_SERVING) == (
            health_pb2.HealthCheckResponse.NOT_SERVING
        )
    finally:
        probes["database"] = working
    assert await status_within(5, health_pb2.HealthCheckResponse.SERVING) == (
        health_pb2.HealthCheckResponse.SERVING
    )
