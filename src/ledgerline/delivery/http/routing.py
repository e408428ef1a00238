"""Route classes for the API's two cross-cutting rules, applied before the
framework parses anything: authenticated routes answer 401 without a valid
bearer token, then 403 when the route's permission check refuses the caller
(before a word of the request is validated), and body routes answer 415 to
a body that is not JSON.

Authentication is a route class rather than a FastAPI dependency because it
runs on nearly every request and the dependency machinery costs more than
the check itself; the principal travels in the ASGI scope."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute
from pydantic import BaseModel

from ledgerline.delivery.http.errors import error_response
from ledgerline.domain.user import Principal

Handler = Callable[[Request], Coroutine[Any, Any, Response]]
Authenticator = Callable[[Request], Principal]
Permission = Callable[[Principal], None]
_PRINCIPAL = "ledgerline.principal"


def _is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )


class JSONBodyRoute(APIRoute):
    requires_auth = False

    def get_route_handler(self) -> Handler:
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


def authenticated_route(
    authenticate: Authenticator, permit: Permission | None = None
) -> type[JSONBodyRoute]:
    """``permit`` raises PermissionDeniedError for a caller who may not use
    the route at all; it runs before the body or any parameter is read."""

    class AuthenticatedRoute(JSONBodyRoute):
        requires_auth = True

        def get_route_handler(self) -> Handler:
            handler = super().get_route_handler()

            async def authenticated(request: Request) -> Response:
                principal = authenticate(request)
                if permit is not None:
                    permit(principal)
                request.scope[_PRINCIPAL] = principal
                return await handler(request)

            return authenticated

    return AuthenticatedRoute


def caller(request: Request) -> Principal:
    """The principal an authenticated route established."""
    principal: Principal = request.scope[_PRINCIPAL]
    return principal


def render(
    model: BaseModel, status_code: int = 200, headers: dict[str, str] | None = None
) -> Response:
    """Serialises straight to JSON bytes: the route's response_model still
    documents the shape, without validating our own output a second time."""
    return Response(
        model.__pydantic_serializer__.to_json(model),
        status_code=status_code,
        media_type="application/json",
        headers=headers,
    )
