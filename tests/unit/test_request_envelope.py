"""The request envelope as plain ASGI, around apps that misbehave."""

from __future__ import annotations

import asyncio
import json

import pytest
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode, get_current_span
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ledgerline.delivery.http.middleware import RequestEnvelope
from ledgerline.platform.logging import get_logger
from ledgerline.platform.metrics import HTTPMetrics
from ledgerline.platform.tracing import Tracing


async def _never_answers(scope: Scope, receive: Receive, send: Send) -> None:
    await asyncio.sleep(3600)


async def test_a_request_cancelled_from_outside_gets_a_503_in_the_api_shape() -> None:
    """At the shutdown deadline the server cancels what still runs: the
    client gets {"message", "code"} and its request id, not a bare 500."""
    lines: list[tuple[str, str, str, int, float, str]] = []

    def access_log(
        method: str, path: str, route: str, status: int, duration_ms: float, request_id: str
    ) -> None:
        lines.append((method, path, route, status, duration_ms, request_id))

    envelope = RequestEnvelope(
        _never_answers,
        metrics=HTTPMetrics(),
        logger=get_logger("test"),
        access_log=access_log,
        request_timeout=60,
        max_body_bytes=1024,
    )
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    scope: Scope = {
        "type": "http",
        "method": "GET",
        "path": "/v1/users/me",
        "headers": [(b"x-request-id", b"req-1")],
    }
    task = asyncio.create_task(envelope(scope, receive, send))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    start, body = sent
    assert start["status"] == 503
    assert (b"x-request-id", b"req-1") in start["headers"]
    assert json.loads(body["body"]) == {"message": "internal server error", "code": "unavailable"}
    [(method, path, route, status, _, request_id)] = lines
    assert (method, path, route, status, request_id) == (
        "GET",
        "/v1/users/me",
        "unmatched",
        503,
        "req-1",
    )


async def _fails(scope: Scope, receive: Receive, send: Send) -> None:
    raise RuntimeError("a bug")


@pytest.mark.parametrize(
    ("app", "cancel", "status"),
    [(_fails, False, 500), (_never_answers, True, 503)],
    ids=["unhandled error", "cancelled"],
)
async def test_the_server_span_ends_and_stops_being_current_however_the_request_ends(
    app: ASGIApp, cancel: bool, status: int
) -> None:
    """The envelope makes its span current itself (span_of): it must end it, mark a
    5xx failed, and leave the context as it found it, also when the app
    raises or the request is cancelled."""
    exporter = InMemorySpanExporter()
    tracing = Tracing.with_processor(SimpleSpanProcessor(exporter))
    envelope = RequestEnvelope(
        app,
        metrics=HTTPMetrics(),
        logger=get_logger("test"),
        access_log=lambda *_: None,
        request_timeout=60,
        max_body_bytes=1024,
        tracer=tracing.tracer,
    )

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        return None  # what was answered shows on the span

    scope: Scope = {"type": "http", "method": "GET", "path": "/v1/users/me", "headers": []}
    try:
        # Inline, not in a task of its own (which would run in a copy of
        # this context): what the envelope leaves current shows here.
        if cancel:
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.05):
                    await envelope(scope, receive, send)
        else:
            await envelope(scope, receive, send)
        assert not get_current_span().get_span_context().is_valid, "a span was left current"
    finally:
        tracing.shutdown()
    spans = exporter.get_finished_spans()
    assert len(spans) == 1, "the span did not end"
    assert spans[0].status.status_code is StatusCode.ERROR
    assert spans[0].attributes is not None
    assert spans[0].attributes["http.response.status_code"] == status
