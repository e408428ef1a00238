"""Bearer-token authentication, and its description in OpenAPI."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from fastapi import Request
from fastapi.routing import APIRoute

from ledgerline.delivery.http.routing import Authenticator
from ledgerline.domain.user import Principal
from ledgerline.usecase.users import UserService

SECURITY_SCHEME = {
    "bearerAuth": {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
        "description": "An access token from POST /v1/auth/token",
    }
}


def bearer_authenticator(users: UserService) -> Authenticator:
    def authenticate(request: Request) -> Principal:
        # The raw ASGI headers: cheaper than building Starlette's Headers
        # on a path every authenticated request takes.
        value = next((v for k, v in request.scope["headers"] if k == b"authorization"), b"")
        return users.principal_from_bearer(value.decode("latin-1"))

    return authenticate


def document_security(schema: dict[str, Any], routes: Iterable[object]) -> dict[str, Any]:
    """Marks every operation of an authenticated route as needing the bearer
    scheme."""
    schema.setdefault("components", {}).setdefault("securitySchemes", {}).update(SECURITY_SCHEME)
    paths = schema.get("paths", {})
    for route in routes:
        if isinstance(route, APIRoute) and getattr(route, "requires_auth", False):
            for method in route.methods or ():
                operation = paths.get(route.path_format, {}).get(method.lower())
                if operation is not None:
                    operation["security"] = [{"bearerAuth": []}]
    return schema
