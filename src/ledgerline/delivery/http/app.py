"""Builds the FastAPI application from its dependencies."""

from __future__ import annotations

from dataclasses import dataclass

import structlog
from fastapi import FastAPI
from starlette.types import ASGIApp

from ledgerline.delivery.http.errors import install_error_handlers
from ledgerline.delivery.http.middleware import RequestEnvelope
from ledgerline.delivery.http.operations import operations_router
from ledgerline.delivery.http.payments import payments_router
from ledgerline.delivery.http.users import users_router
from ledgerline.platform.health import Readiness
from ledgerline.platform.metrics import HTTPMetrics
from ledgerline.usecase.payments import PaymentService
from ledgerline.usecase.users import UserService

MAX_BODY_BYTES = 64 * 1024


@dataclass(frozen=True, slots=True)
class HTTPDependencies:
    users: UserService
    payments: PaymentService
    readiness: Readiness
    metrics: HTTPMetrics
    logger: structlog.stdlib.BoundLogger
    request_timeout: float


def create_http_app(deps: HTTPDependencies) -> ASGIApp:
    api = FastAPI(
        title="Ledgerline",
        version="1.0.0",
        summary="User accounts, wallets and exactly-once payments.",
        openapi_url="/openapi.json",
        docs_url="/docs",
        redoc_url=None,
    )
    install_error_handlers(api)
    api.include_router(operations_router(deps.readiness, deps.metrics))
    api.include_router(users_router(deps.users))
    api.include_router(payments_router(deps.users, deps.payments))
    return RequestEnvelope(
        api,
        metrics=deps.metrics,
        logger=deps.logger,
        request_timeout=deps.request_timeout,
        max_body_bytes=MAX_BODY_BYTES,
    )
