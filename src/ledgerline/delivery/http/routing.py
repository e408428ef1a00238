"""Route classes for the API's cross-cutting rules, applied before the
framework parses anything, in this order: authenticated routes answer 401
without a valid bearer token, then 403 when the route's permission check
refuses the caller (before a word of the request is validated); body routes
answer 415 to a body that is not UTF-8 JSON and 400 to one that does not
parse (parse_json_body).

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
from ledgerline.delivery.http.json_body import StrictJSONRequest
from ledgerline.domain.user import Principal

Handler = Callable[[Request], Coroutine[Any, Any, Response]]
Authenticator = Callable[[Request], Principal]
Permission = Callable[[Principal], None]
_PRINCIPAL = "ledgerline.principal"


def media_type_refusal(content_type: str) -> str | None:
    """Why a body of this Content-Type is refused (415), or None. JSON is
    application/json or application/*+json; a charset, when given, must be
    UTF-8 (API.md: JSON is UTF-8)."""
    media, _, parameters = content_type.partition(";")
    media = media.strip().lower()
    if not (
        media == "application/json"
        or (media.startswith("application/") and media.endswith("+json"))
    ):
        return "request body must be application/json"
    for parameter in parameters.split(";"):
        name, _, value = parameter.partition("=")
        if name.strip().lower() == "charset" and value.strip().strip('"').lower() != "utf-8":
            return "request body must be JSON in UTF-8 (charset=utf-8, or no charset)"
    return None


class JSONBodyRoute(APIRoute):
    requires_auth = False

    def get_route_handler(self) -> Handler:
        handler = super().get_route_handler()
        if self.body_field is None:
            return handler

        async def json_only(request: Request) -> Response:
            refusal = media_type_refusal(request.headers.get("content-type", ""))
            if refusal is not None:
                return error_response(415, "unsupported_media_type", refusal)
            # Parsed here, before the framework reads it, so that a body
            # that is not JSON as API.md defines it is a 400 saying why.
            strict = StrictJSONRequest(request.scope, request.receive)
            if await strict.body():  # an empty body is the framework's "field required"
                await strict.json()
            return await handler(strict)

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
