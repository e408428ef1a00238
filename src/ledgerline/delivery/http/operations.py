"""Liveness, readiness and metrics."""

from __future__ import annotations

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse

from ledgerline.delivery.http.errors import error_response
from ledgerline.delivery.http.schemas import HealthResponse, NotReadyResponse, ReadinessResponse
from ledgerline.platform.health import Readiness
from ledgerline.platform.metrics import HTTPMetrics


def operations_router(readiness: Readiness, metrics: HTTPMetrics) -> APIRouter:
    router = APIRouter(tags=["operations"])

    @router.get("/healthz", summary="Liveness", operation_id="get_liveness")
    async def healthz() -> HealthResponse:
        return HealthResponse()

    @router.get(
        "/readyz",
        summary="Readiness",
        operation_id="get_readiness",
        response_model=ReadinessResponse,
        responses={
            503: {
                "model": NotReadyResponse,
                "description": "a dependency is down (named in checks), or shutdown has begun",
            }
        },
    )
    async def readyz() -> Response:
        checks = {} if readiness.shutting_down else await readiness.check()
        if readiness.shutting_down:  # before the checks, or while they ran
            checks["shutdown"] = "in_progress"
        if any(state != "ok" for state in checks.values()):
            return error_response(503, "unavailable", "not ready", extra={"checks": checks})
        return JSONResponse(ReadinessResponse(checks=checks).model_dump())

    @router.get(
        "/metrics",
        summary="Prometheus metrics",
        operation_id="get_metrics",
        response_class=Response,
        responses={
            200: {
                "description": "Prometheus text exposition",
                "content": {"text/plain": {"schema": {"type": "string"}}},
            }
        },
    )
    async def prometheus() -> Response:
        return Response(metrics.render(), media_type=metrics.content_type)

    # HEAD too (undocumented): load balancers and uptime checkers probe with it.
    router.add_api_route("/healthz", healthz, methods=["HEAD"], include_in_schema=False)
    router.add_api_route("/readyz", readyz, methods=["HEAD"], include_in_schema=False)
    return router
