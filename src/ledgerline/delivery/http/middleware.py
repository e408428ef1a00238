"""The request envelope, as plain ASGI (cheaper than BaseHTTPMiddleware):
request id, deadline, body-size limit, one access-log line and metrics,
and, when tracing is on, the request's server span."""

from __future__ import annotations

import asyncio
import contextlib
import re
import time

import structlog
from opentelemetry.context import Context
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, Tracer
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ledgerline.delivery.error_table import INTERNAL_MESSAGE
from ledgerline.delivery.http.errors import BodyTooLargeError, send_error
from ledgerline.delivery.request_id import REQUEST_ID_PATTERN, new_request_id
from ledgerline.platform.deadline import within
from ledgerline.platform.logging import AccessLog, Logger
from ledgerline.platform.metrics import HTTPMetrics
from ledgerline.platform.tracing import context_from, span_of

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
        tracer: Tracer | None = None,
    ) -> None:
        """``tracer``: each request (but the probes' and /metrics) runs in a
        server span, whose parent is the request's W3C ``traceparent``."""
        self._app = app
        self._tracer = tracer
        self._metrics = metrics
        self._log = logger
        self._access_log = access_log
        self._timeout = request_timeout
        self._max_body = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        if self._tracer is None or scope["path"] in UNTRACED_PATHS:
            await self._envelope(scope, receive, send, None)
            return
        # The span the envelope opens itself: the generic ASGI
        # instrumentation cost 60-110 us a request, sampled or not, against
        # 15-35 here (docs/decisions.md, Tracing). span_of makes it current
        # without start_as_current_span's generator context managers.
        with span_of(
            self._tracer, scope["method"], context=_incoming_context(scope), kind=SpanKind.SERVER
        ) as span:
            recording = span if span.is_recording() else None
            if recording is not None:
                recording.set_attributes(
                    {
                        "http.request.method": scope["method"],
                        "url.scheme": scope.get("scheme", "http"),
                        "url.path": scope["path"],  # never the query: it may carry an email
                    }
                )
            await self._envelope(scope, receive, send, recording)

    async def _envelope(
        self, scope: Scope, receive: Receive, send: Send, span: Span | None
    ) -> None:
        started_at = time.perf_counter()
        request_id = _request_id(scope)
        status = 500
        response_started = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                status = message["status"]
                response_started = True
                if span is not None:
                    _name_span(span, scope, status)
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
            template = _route_template(scope)
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


UNTRACED_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
_TRACE_HEADERS = {b"traceparent": "traceparent", b"tracestate": "tracestate"}


def _incoming_context(scope: Scope) -> Context | None:
    carrier = {
        _TRACE_HEADERS[name]: value.decode("latin-1")
        for name, value in scope["headers"]
        if name in _TRACE_HEADERS
    }
    return context_from(carrier)


def _route_template(scope: Scope) -> str:
    """The path template of the route that answered, never the path itself
    (metrics and span names stay bounded)."""
    return getattr(scope.get("route"), "path", None) or "unmatched"


def _name_span(span: Span, scope: Scope, status: int) -> None:
    """The server span by route template, not path (low cardinality), with
    the status; a 5xx marks it failed."""
    span.set_attribute("http.response.status_code", status)
    if status >= 500:
        span.set_status(Status(StatusCode.ERROR))
    template = _route_template(scope)
    span.update_name(f"{scope['method']} {template}")
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
