"""The request envelope as plain ASGI, around apps that misbehave."""

from __future__ import annotations

import asyncio
import json

import pytest
from starlette.types import Message, Receive, Scope, Send

from ledgerline.delivery.http.middleware import RequestEnvelope
from ledgerline.platform.logging import get_logger
from ledgerline.platform.metrics import HTTPMetrics


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
