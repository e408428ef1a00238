"""Every failure becomes {"message", "code"} with the status from the error
table, in this one module: domain errors, validation errors, protocol errors
(404, 405, 413, 415) and anything unexpected (500, no internals)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match
from starlette.types import Send

from ledgerline.delivery.error_table import HTTP_ONLY_CODES, INTERNAL_MESSAGE, mapping_for
from ledgerline.domain.errors import DomainError, FieldViolation, RateLimitedError


class BodyTooLargeError(StarletteHTTPException):
    """The request body passed the size limit while it was being read. An
    HTTPException, because the framework turns any other error raised while
    it reads a body into a 400."""

    def __init__(self) -> None:
        super().__init__(413, "request body is too large")


def error_body(
    status: int,
    code: str,
    message: str,
    details: tuple[FieldViolation, ...] | list[dict[str, str]] = (),
) -> dict[str, Any]:
    # API.md: a 5xx never leaks internals; its message is always the same.
    body: dict[str, Any] = {"message": INTERNAL_MESSAGE if status >= 500 else message, "code": code}
    if details:
        body["details"] = [
            {"field": d.field, "message": d.message} if isinstance(d, FieldViolation) else d
            for d in details
        ]
    return body


def error_response(
    status: int,
    code: str,
    message: str,
    details: tuple[FieldViolation, ...] | list[dict[str, str]] = (),
    headers: Mapping[str, str] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> JSONResponse:
    body = {**error_body(status, code, message, details), **(extra or {})}
    return JSONResponse(body, status_code=status, headers=headers)


async def send_error(send: Send, status: int, code: str, message: str) -> None:
    """For the ASGI middleware, which answers before or around the framework."""
    payload = json.dumps(error_body(status, code, message)).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})


def _field_name(loc: tuple[int | str, ...]) -> str:
    # ("body", "email") -> "email"; ("path", "user_id") -> "user_id"
    parts = [str(p) for p in loc[1:]] if loc and loc[0] in ("body", "path", "query") else []
    return ".".join(parts) or str(loc[0] if loc else "body")


async def _domain_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, DomainError)
    status = mapping_for(exc.code).http_status
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    if isinstance(exc, RateLimitedError):
        headers = {"Retry-After": str(exc.retry_after_seconds)}
    details = getattr(exc, "details", ())
    return error_response(status, exc.code, exc.message, details, headers)


async def _validation_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    if any(e.get("type") == "json_invalid" for e in errors):
        return error_response(400, "invalid_argument", "request body is not valid JSON")
    details = [{"field": _field_name(tuple(e["loc"])), "message": str(e["msg"])} for e in errors]
    message = "; ".join(f"{d['field']}: {d['message']}" for d in details) or "invalid request"
    return error_response(400, "invalid_argument", message, details)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = HTTP_ONLY_CODES.get(exc.status_code, "internal" if exc.status_code >= 500 else "error")
    headers = exc.headers
    if exc.status_code == 405 and (allowed := _allowed_methods(request)):
        headers = {**(headers or {}), "Allow": allowed}
    return error_response(exc.status_code, code, str(exc.detail), headers=headers)


def _allowed_methods(request: Request) -> str:
    """Every method some route serves at this path: the router itself names
    only the first route whose path matched."""
    methods: set[str] = set()
    for route in request.app.router.routes:
        match, _ = route.matches({**request.scope, "method": "GET"})
        route_methods = getattr(route, "methods", None)
        if route_methods and match is not Match.NONE:
            methods |= set(route_methods)
    return ", ".join(sorted(methods))


async def _timeout(_: Request, exc: Exception) -> JSONResponse:
    return error_response(504, "deadline_exceeded", "deadline exceeded")


async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
    # Logged by the request middleware, which sees the exception re-raised.
    return error_response(500, "internal", INTERNAL_MESSAGE)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(DomainError, _domain_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(TimeoutError, _timeout)
    app.add_exception_handler(Exception, _unexpected)
