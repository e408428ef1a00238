"""Bearer-token authentication as a FastAPI dependency."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from ledgerline.domain.errors import UnauthenticatedError
from ledgerline.domain.user import Principal
from ledgerline.usecase.users import UserService

_bearer = HTTPBearer(auto_error=False, description="An access token from POST /v1/auth/token")


def principal_dependency(users: UserService) -> Callable[..., Awaitable[Principal]]:
    async def principal(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> Principal:
        if credentials is None:
            raise UnauthenticatedError("missing bearer access token")
        return users.principal_from_token(credentials.credentials)

    return principal
