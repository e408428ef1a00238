"""Tracing over gRPC, in process with the SDK's in-memory exporter: the
``traceparent`` of the call's metadata is the parent of its server span;
the use case, its SQL and the lock are children; a replay is a span of its
own; the event the pay wrote keeps the trace context for the relay (and,
untraced, keeps none); and health checks are not traced."""

from __future__ import annotations

import json
import secrets
from collections.abc import AsyncIterator

import asyncpg
import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from ledgerline.main.core import Core
from ledgerline.main.runtime import Runtime
from ledgerline.main.serve import http_app
from ledgerline.platform.tracing import Tracing
from ledgerline.usecase.users import Registration
from ledgerline.v1 import payments_pb2, users_pb2, wallet_pb2
from tests.integration.conftest import JWT_SECRET, PASSWORD, cheap_settings
from tests.integration.test_grpc import Stubs, grpc_serving, login

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
async def traced(
    database_url: str, exporter: InMemorySpanExporter
) -> AsyncIterator[tuple[Stubs, Core]]:
    tracing = Tracing.with_processor(SimpleSpanProcessor(exporter))
    core = Core(cheap_settings(), Runtime(database_url, JWT_SECRET), tracing=tracing)
    async with core, grpc_serving(core) as stubs:
        yield stubs, core
    tracing.shutdown()


def _of_trace(exporter: InMemorySpanExporter, trace_id: str) -> list[ReadableSpan]:
    return [
        span
        for span in exporter.get_finished_spans()
        if span.context is not None and format(span.context.trace_id, "032x") == trace_id
    ]


def _named(spans: list[ReadableSpan], name: str) -> ReadableSpan:
    found = [span for span in spans if span.name == name]
    assert found, f"no span {name!r}: {sorted(span.name for span in spans)}"
    return found[0]


def _parent(span: ReadableSpan) -> str:
    return format(span.parent.span_id, "016x") if span.parent is not None else ""


def _id(span: ReadableSpan) -> str:
    assert span.context is not None
    return format(span.context.span_id, "016x")


async def test_a_pay_call_is_traced_under_the_callers_traceparent(
    traced: tuple[Stubs, Core], exporter: InMemorySpanExporter, pool: asyncpg.Pool
) -> None:
    stubs, core = traced
    await core.users.create_admin(Registration("ops@example.com", PASSWORD, "Ops"))
    for name in ("alice", "bob"):
        await core.users.register(Registration(f"{name}@example.com", PASSWORD, name))
    admin, alice = await login(stubs, "ops@example.com"), await login(stubs, "alice@example.com")
    bob = await login(stubs, "bob@example.com")
    alice_id = (await stubs.users.GetMe(users_pb2.GetMeRequest(), metadata=alice)).user.id
    bob_id = (await stubs.users.GetMe(users_pb2.GetMeRequest(), metadata=bob)).user.id
    await stubs.wallet.Credit(
        wallet_pb2.CreditRequest(user_id=alice_id, amount=1_000, currency="EUR"),
        metadata=(*admin, ("idempotency-key", "top-up")),
    )
    order = (
        await stubs.payments.CreateOrder(
            payments_pb2.CreateOrderRequest(payee_id=bob_id, amount=300, currency="EUR"),
            metadata=alice,
        )
    ).order

    trace_id, client_span = secrets.token_hex(16), secrets.token_hex(8)
    traceparent = ("traceparent", f"00-{trace_id}-{client_span}-01")
    pay = payments_pb2.PayOrderRequest(id=order.id)
    for _ in range(2):  # the second is a replay
        await stubs.payments.PayOrder(
            pay, metadata=(*alice, ("idempotency-key", "pay-1"), traceparent)
        )
    health = health_pb2_grpc.HealthStub(stubs.channel)
    await health.Check(health_pb2.HealthCheckRequest())  # type: ignore[attr-defined]

    spans = _of_trace(exporter, trace_id)
    servers = [s for s in spans if s.name == "/ledgerline.v1.PaymentService/PayOrder"]
    assert len(servers) == 2
    assert all(_parent(s) == client_span for s in servers)
    first, replay = sorted(servers, key=lambda s: s.start_time or 0)
    use_cases = [s for s in spans if s.name == "PaymentService.process_payment"]
    assert sorted(_parent(s) for s in use_cases) == sorted([_id(first), _id(replay)])
    paying = next(s for s in use_cases if _parent(s) == _id(first))
    replaying = next(s for s in use_cases if _parent(s) == _id(replay))

    children = [s for s in spans if _parent(s) == _id(paying)]
    names = {s.name for s in children}
    assert {"SELECT orders", "SELECT settle_order", "lock acquire", "lock release"} <= names
    sql = [s for s in children if s.attributes and s.attributes.get("db.system") == "postgresql"]
    assert all(s.attributes and "db.statement" in s.attributes for s in sql)
    assert _parent(_named(spans, "idempotency replay")) == _id(replaying)
    assert not any(s.name == "lock acquire" and _parent(s) == _id(replaying) for s in spans)
    assert not [s for s in exporter.get_finished_spans() if "Health" in s.name]

    stored = await pool.fetchval(
        "SELECT trace_context::text FROM outbox WHERE type = 'order.paid' AND aggregate_id = $1",
        order.id,
    )
    context = json.loads(stored)
    version, stored_trace, stored_span, _ = context["traceparent"].split("-")
    assert (version, stored_trace) == ("00", trace_id)
    assert stored_span in {_id(s) for s in spans}  # a span of this pay's trace wrote it
    payload = await pool.fetchval(
        "SELECT payload::text FROM outbox WHERE type = 'order.paid' AND aggregate_id = $1",
        order.id,
    )
    assert "$trace" not in json.loads(payload)  # the event's data is its own


async def test_without_tracing_an_event_stores_no_trace_context(
    core: Core, pool: asyncpg.Pool
) -> None:
    await core.users.register(Registration("carol@example.com", PASSWORD, "Carol"))
    stored = await pool.fetchval(
        "SELECT trace_context FROM outbox WHERE type = 'user.registered' ORDER BY seq DESC LIMIT 1"
    )
    assert stored is None


async def test_a_call_in_an_unsampled_trace_makes_no_spans_and_stores_its_context(
    traced: tuple[Stubs, Core], exporter: InMemorySpanExporter, pool: asyncpg.Pool
) -> None:
    stubs, _ = traced
    trace_id = secrets.token_hex(16)
    unsampled = ("traceparent", f"00-{trace_id}-{secrets.token_hex(8)}-00")
    await stubs.users.Register(
        users_pb2.RegisterRequest(email="dora@example.com", password=PASSWORD, name="Dora"),
        metadata=(unsampled,),
    )
    assert _of_trace(exporter, trace_id) == []
    stored = await pool.fetchval(
        "SELECT trace_context::text FROM outbox WHERE type = 'user.registered' "
        "ORDER BY seq DESC LIMIT 1"
    )
    # The caller's decision travels on: a consumer continues the trace unsampled.
    assert json.loads(stored)["traceparent"].split("-")[1:4:2] == [trace_id, "00"]


def _every_text(span: ReadableSpan) -> list[str]:
    """What a span exports as text: name, status, attributes, events."""
    texts = [span.name, span.status.description or ""]
    texts += [f"{k}={v!s}" for k, v in (span.attributes or {}).items()]
    for event in span.events:
        texts += [event.name, *(f"{k}={v!s}" for k, v in (event.attributes or {}).items())]
    return texts


async def test_spans_carry_no_email_from_a_refused_registration_or_a_query_string(
    traced: tuple[Stubs, Core], exporter: InMemorySpanExporter
) -> None:
    """A unique violation's detail names the row's email, and a query
    string may carry one: neither reaches a span."""
    stubs, core = traced
    register = users_pb2.RegisterRequest(email="eve@example.com", password=PASSWORD, name="Eve")
    await stubs.users.Register(register)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stubs.users.Register(register)
    assert refused.value.code() == grpc.StatusCode.ALREADY_EXISTS
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=http_app(core)), base_url="http://ledgerline.test"
    ) as client:
        found = await client.get("/v1/users", params={"email": "eve@example.com"})
    assert found.status_code == 401
    spans = exporter.get_finished_spans()
    names = {span.name for span in spans}
    assert {"INSERT users", "UserService.register", "GET /v1/users"} <= names
    failed = [s for s in spans if s.name == "INSERT users" and s.status.description]
    assert failed, "the refused INSERT is marked failed"
    assert all("eve@example.com" not in text for s in spans for text in _every_text(s))
