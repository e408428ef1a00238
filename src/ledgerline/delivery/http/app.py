"""Builds the FastAPI application from its dependencies."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI
from fastapi.telemetry import TelemetryConfig
from opentelemetry.trace import TracerProvider
from starlette.types import ASGIApp

from ledgerline.delivery.http.auth import bearer_authenticator, document_security
from ledgerline.delivery.http.docs import docs_router
from ledgerline.delivery.http.errors import install_error_handlers
from ledgerline.delivery.http.middleware import RequestEnvelope
from ledgerline.delivery.http.operations import operations_router
from ledgerline.delivery.http.payments import payments_routers
from ledgerline.delivery.http.users import users_routers
from ledgerline.platform.client_address import TrustedProxies
from ledgerline.platform.health import Readiness
from ledgerline.platform.logging import Logger, access_log
from ledgerline.platform.metrics import HTTPMetrics
from ledgerline.platform.ratelimit import RateLimiter
from ledgerline.usecase.payments import PaymentService
from ledgerline.usecase.users import UserService

MAX_BODY_BYTES = 64 * 1024
OPENAPI_URL = "/openapi.json"
# FastAPI's own OpenTelemetry support, off: the request envelope makes the
# one server span and the metrics (a second span per request, or exporters
# set up from FASTAPI_OTEL_AUTO_CONFIGURE, would double them), and the check
# of the global providers it otherwise makes on every request is skipped.
NO_FRAMEWORK_TELEMETRY: TelemetryConfig = {
    "tracing": False,
    "metrics": False,
    "logs": False,
    "auto_configure": False,
}


@dataclass(frozen=True, slots=True)
class HTTPDependencies:
    users: UserService
    payments: PaymentService
    readiness: Readiness
    metrics: HTTPMetrics
    logger: Logger
    request_timeout: float
    rate_limiter: RateLimiter
    trusted_proxies: TrustedProxies
    # None: nothing is traced (platform/tracing.py).
    tracer_provider: TracerProvider | None = None


def create_http_app(deps: HTTPDependencies) -> ASGIApp:
    api = FastAPI(
        title="Ledgerline",
        version="1.0.0",
        summary="User accounts, wallets and exactly-once payments.",
        openapi_url=OPENAPI_URL,
        # /docs and /redoc are docs_router's, with assets served from here.
        docs_url=None,
        redoc_url=None,
        swagger_ui_oauth2_redirect_url=None,
        # A path with a trailing slash is simply not a route (404), rather
        # than a bodiless 307 to a Location built from the Host header.
        redirect_slashes=False,
        telemetry=NO_FRAMEWORK_TELEMETRY,
    )
    install_error_handlers(api)
    generate_openapi = api.openapi

    def openapi() -> dict[str, Any]:
        if api.openapi_schema is None:
            schema = document_security(generate_openapi(), api.routes)
            api.openapi_schema = _without_framework_validation_errors(schema)
        return api.openapi_schema

    api.openapi = openapi  # type: ignore[method-assign]
    authenticate = bearer_authenticator(deps.users)
    routers = [
        operations_router(deps.readiness, deps.metrics),
        *users_routers(deps.users, authenticate, deps.rate_limiter, deps.trusted_proxies),
        *payments_routers(deps.payments, authenticate),
        # Last: routes are matched in order, and the API's are the hot ones.
        docs_router(api.title, OPENAPI_URL),
    ]
    for router in routers:
        # Flat, not include_router(): this FastAPI keeps an included router
        # as one more dispatch layer on every request. The routes already
        # carry their prefix, responses and route class.
        api.router.routes.extend(router.routes)
    return RequestEnvelope(
        api,
        metrics=deps.metrics,
        logger=deps.logger,
        access_log=access_log("ledgerline.http"),
        request_timeout=deps.request_timeout,
        max_body_bytes=MAX_BODY_BYTES,
        tracer=None if deps.tracer_provider is None else deps.tracer_provider.get_tracer(TRACER),
    )


TRACER = "ledgerline.http"


def create_operations_app(
    readiness: Readiness, metrics: HTTPMetrics, logger: Logger, request_timeout: float
) -> ASGIApp:
    """Only /healthz, /readyz and /metrics, behind the same request envelope:
    the port a process without the API (the worker) is watched on."""
    api = FastAPI(
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
        redirect_slashes=False,
        telemetry=NO_FRAMEWORK_TELEMETRY,
    )
    install_error_handlers(api)
    api.router.routes.extend(operations_router(readiness, metrics).routes)
    return RequestEnvelope(
        api,
        metrics=metrics,
        logger=logger,
        access_log=access_log("ledgerline.http"),
        request_timeout=request_timeout,
        max_body_bytes=MAX_BODY_BYTES,
    )


_FRAMEWORK_422 = "#/components/schemas/HTTPValidationError"


def _without_framework_validation_errors(schema: dict[str, Any]) -> dict[str, Any]:
    """FastAPI documents a 422 ``HTTPValidationError`` on every operation
    with parameters; this service answers bad input with 400 and the error
    body (declared on each router), so that 422 is removed from the document,
    and with it the schemas only it used."""
    for operation in (op for path in schema.get("paths", {}).values() for op in path.values()):
        responses = operation.get("responses", {}) if isinstance(operation, dict) else {}
        content = responses.get("422", {}).get("content", {})
        if content.get("application/json", {}).get("schema", {}).get("$ref") == _FRAMEWORK_422:
            del responses["422"]
    schemas = schema.get("components", {}).get("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
    return schema
