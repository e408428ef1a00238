"""A route class that answers 415 when a body endpoint gets a body that is
not JSON, before the framework tries to parse it."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute

from ledgerline.delivery.http.errors import error_response


def _is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )


class JSONBodyRoute(APIRoute):
    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        if self.body_field is None:
            return handler

        async def json_only(request: Request) -> Response:
            if not _is_json(request.headers.get("content-type", "")):
                return error_response(
                    415, "unsupported_media_type", "request body must be application/json"
                )
            return await handler(request)

        return json_only
