"""Liveness, readiness and metrics."""

from __future__ import annotations

from fastapi import APIRouter, Response

from ledgerline.delivery.http.errors import error_body
from ledgerline.delivery.http.schemas import HealthResponse, ReadinessResponse
from ledgerline.platform.health import Readiness
from ledgerline.platform.metrics import HTTPMetrics


def operations_router(readiness: Readiness, metrics: HTTPMetrics) -> APIRouter:
    router = APIRouter(tags=["operations"])

    @router.get("/healthz", summary="Liveness")
    async def healthz() -> HealthResponse:
        return HealthResponse()

    @router.get(
        "/readyz",
        summary="Readiness",
        responses={503: {"description": "a dependency is down, or shutdown has begun"}},
    )
    async def readyz(response: Response) -> ReadinessResponse | dict[str, object]:
        if readiness.shutting_down:
            response.status_code = 503
            return error_body("unavailable", "shutting down")
        checks = await readiness.check()
        failed = sorted(name for name, state in checks.items() if state != "ok")
        if failed:
            response.status_code = 503
            return {
                **error_body("unavailable", f"not ready: {', '.join(failed)}"),
                "checks": checks,
            }
        return ReadinessResponse(checks=checks)

    @router.get("/metrics", summary="Prometheus metrics", response_class=Response)
    async def prometheus() -> Response:
        return Response(metrics.render(), media_type=metrics.content_type)

    return router
