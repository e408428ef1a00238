"""The request envelope, as plain ASGI (cheaper than BaseHTTPMiddleware):
request id, deadline, body-size limit, one access-log line and metrics."""

from __future__ import annotations

import asyncio
import contextlib
import re
import time

import structlog
from opentelemetry import trace
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ledgerline.delivery.error_table import INTERNAL_MESSAGE
from ledgerline.delivery.http.errors import BodyTooLargeError, send_error
from ledgerline.delivery.request_id import REQUEST_ID_PATTERN, new_request_id
from ledgerline.platform.deadline import within
from ledgerline.platform.logging import AccessLog, Logger
from ledgerline.platform.metrics import HTTPMetrics

REQUEST_ID_HEADER = b"x-request-id"
_VALID_REQUEST_ID = re.compile(REQUEST_ID_PATTERN.encode())  # raw header bytes


class RequestEnvelope:
    def __init__(
        self,
        app: ASGIApp,
        *,
        metrics: HTTPMetrics,
        logger: Logger,
        access_log: AccessLog,
        request_timeout: float,
        max_body_bytes: int,
        traced: bool = False,
    ) -> None:
        """``traced``: the request runs in a server span (the tracing
        middleware around this one), which is named after the route."""
        self._app = app
        self._traced = traced
        self._metrics = metrics
        self._log = logger
        self._access_log = access_log
        self._timeout = request_timeout
        self._max_body = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        started_at = time.perf_counter()
        request_id = _request_id(scope)
        status = 500
        response_started = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                status = message["status"]
                response_started = True
                if self._traced:  # before the span ends with the response's last part
                    _name_span(scope)
                message["headers"] = [
                    *message.get("headers", ()),
                    (REQUEST_ID_HEADER, request_id.encode()),
                ]
            await send(message)

        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self._max_body:
                    raise BodyTooLargeError()
            return message

        structlog.contextvars.bind_contextvars(request_id=request_id)
        try:
            if _declared_length(scope) > self._max_body:
                await send_error(
                    send_with_id, 413, "payload_too_large", "request body is too large"
                )
                return
            async with within(self._timeout):
                await self._app(scope, limited_receive, send_with_id)
        except BodyTooLargeError:
            if not response_started:
                await send_error(
                    send_with_id, 413, "payload_too_large", "request body is too large"
                )
        except TimeoutError:
            if not response_started:
                await send_error(send_with_id, 504, "deadline_exceeded", "deadline exceeded")
        except asyncio.CancelledError:
            # Cancelled from outside: the shutdown deadline passed with this
            # request still running. Answer in the API's shape before going.
            if not response_started:
                with contextlib.suppress(Exception):
                    await send_error(send_with_id, 503, "unavailable", "the server is stopping")
            raise
        except Exception:  # noqa: BLE001 - the outermost net: log it, answer 500
            # The framework has already answered 500 if it could; log once here.
            self._log.exception("unhandled error", method=scope["method"], path=scope["path"])
            if not response_started:
                await send_error(send_with_id, 500, "internal", INTERNAL_MESSAGE)
        finally:
            elapsed = time.perf_counter() - started_at
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            self._metrics.observe(scope["method"], template, status, elapsed)
            self._access_log(
                scope["method"],
                scope["path"],
                template,
                status,
                round(elapsed * 1000, 2),
                request_id,
            )
            structlog.contextvars.unbind_contextvars("request_id")


def _name_span(scope: Scope) -> None:
    """The server span by route template, not path (low cardinality)."""
    span = trace.get_current_span()
    if span.is_recording():
        method = scope["method"]
        template = getattr(scope.get("route"), "path", None) or "unmatched"
        span.update_name(f"{method} {template}")
        span.set_attribute("http.route", template)


def _request_id(scope: Scope) -> str:
    for name, value in scope["headers"]:
        if name == REQUEST_ID_HEADER and _VALID_REQUEST_ID.match(value):
            return str(value.decode())
    return new_request_id()


def _declared_length(scope: Scope) -> int:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return 0
    return 0
