"""One pay, traced end to end across real processes: `ledgerline serve` and
`ledgerline worker` export over OTLP/HTTP to a receiver in this test, and
the worker publishes to a real NATS JetStream. The client's ``traceparent``
is the parent of the request's span; the use case, the SQL, the lock and
the relay's publish are in the same trace; the CloudEvent carries a
``traceparent`` of that trace; and the request's log lines carry its ids."""

from __future__ import annotations

import asyncio
import json
import secrets
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import asyncpg
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from tests.e2e.conftest import Service
from tests.e2e.test_worker import (
    StartService,
    StartWorker,
    _all_published,
    _open_shop,
    _until,
    _worker_env,
)
from tests.event_stream import Bus

pytestmark = pytest.mark.timeout(240)


@dataclass(frozen=True)
class ReceivedSpan:
    trace_id: str
    span_id: str
    parent_id: str
    name: str
    service: str
    attributes: dict[str, object]


class OTLPReceiver:
    """An OTLP/HTTP trace endpoint (protobuf), keeping what it is sent."""

    def __init__(self) -> None:
        self.spans: list[ReceivedSpan] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                request = ExportTraceServiceRequest()
                request.ParseFromString(body)
                receiver._keep(request)
                answer = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: object) -> None:
                return None

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def _keep(self, request: ExportTraceServiceRequest) -> None:
        for resource_spans in request.resource_spans:
            service = next(
                (
                    a.value.string_value
                    for a in resource_spans.resource.attributes
                    if a.key == "service.name"
                ),
                "",
            )
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    attributes: dict[str, object] = {}
                    for a in span.attributes:
                        kind = a.value.WhichOneof("value")
                        attributes[a.key] = getattr(a.value, kind) if kind else None
                    with self._lock:
                        self.spans.append(
                            ReceivedSpan(
                                span.trace_id.hex(),
                                span.span_id.hex(),
                                span.parent_span_id.hex(),
                                span.name,
                                service,
                                attributes,
                            )
                        )

    def of_trace(self, trace_id: str) -> list[ReceivedSpan]:
        with self._lock:
            return [span for span in self.spans if span.trace_id == trace_id]

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def otlp() -> Iterator[OTLPReceiver]:
    receiver = OTLPReceiver()
    yield receiver
    receiver.close()


def _tracing_env(endpoint: str, service: str) -> dict[str, str]:
    return {
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
        "OTEL_SERVICE_NAME": service,
        "OTEL_BSP_SCHEDULE_DELAY": "100",  # export within a tenth of a second
    }


async def test_one_pay_is_one_trace_from_the_client_through_sql_and_lock_to_the_published_event(
    start_service: StartService,
    start_worker: StartWorker,
    database_url: str,
    redis_url: str | None,
    pool: asyncpg.Pool,
    bus: Bus,
    otlp: OTLPReceiver,
) -> None:
    locks = {"LEDGERLINE_REDIS_URL": redis_url} if redis_url else {}
    served: list[Service] = []

    def serve(*args: str, **env: str) -> Service:
        service = start_service(*args, **env, **locks, **_tracing_env(otlp.endpoint, "api"))
        served.append(service)
        return service

    shop = await _open_shop(serve, database_url)
    await asyncio.to_thread(
        start_worker,
        **_worker_env(database_url, bus, **_tracing_env(otlp.endpoint, "worker")),
    )
    await shop.credit("alice", 5_000)
    order = await shop.order("alice", "bob", 2_000)

    trace_id, client_span = secrets.token_hex(16), secrets.token_hex(8)
    paid = await shop.client.post(
        f"{shop.base}/v1/orders/{order}/pay",
        headers={
            **shop.users["alice"][1],
            "Idempotency-Key": "traced-pay",
            "traceparent": f"00-{trace_id}-{client_span}-01",
        },
    )
    assert paid.status_code == 200, paid.text
    request_id = paid.headers["x-request-id"]
    await shop.client.aclose()
    await _until(lambda: _all_published(pool))

    def names() -> set[str]:
        return {span.name for span in otlp.of_trace(trace_id)}

    async def complete() -> bool:
        return {"outbox publish", "lock release"} <= names()

    await _until(complete, timeout=30)
    spans = otlp.of_trace(trace_id)
    by_id = {span.span_id: span for span in spans}

    def named(name: str) -> ReceivedSpan:
        found = [s for s in spans if s.name == name]
        assert found, f"no span {name!r} in the trace: {sorted(s.name for s in spans)}"
        return found[0]

    server = named("POST /v1/orders/{order_id}/pay")
    assert server.parent_id == client_span  # the client's traceparent is the parent
    assert server.service == "api"

    def under_server(span: ReceivedSpan) -> bool:
        while span.parent_id in by_id:
            span = by_id[span.parent_id]
            if span is server:
                return True
        return False

    use_case = named("PaymentService.process_payment")
    assert use_case.parent_id == server.span_id
    sql = [s for s in spans if s.attributes.get("db.system") == "postgresql"]
    assert any(s.name == "SELECT settle_order" for s in sql)
    assert all(under_server(s) and s.parent_id == use_case.span_id for s in sql)
    for name in ("lock acquire", "lock release"):
        lock = named(name)
        assert lock.parent_id == use_case.span_id
    publish = named("outbox publish")
    assert publish.service == "worker"
    assert under_server(publish)  # the transaction's span is its parent

    [event] = [e for _, _, e in await bus.messages() if e.get_type() == "order.paid"]
    traceparent = event.get_extension("traceparent")
    assert isinstance(traceparent, str)
    assert traceparent.split("-")[1] == trace_id

    # The request's log lines carry its trace and span ids.
    log = served[0].log.read_text().splitlines()
    lines = [json.loads(line) for line in log if line.startswith("{")]
    access = [
        line
        for line in lines
        if line.get("request_id") == request_id and line.get("event") == "request"
    ]
    assert access, "no access-log line for the pay request"
    assert access[0]["trace_id"] == trace_id
    assert access[0]["span_id"] == server.span_id
