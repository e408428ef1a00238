"""Users and authentication routes: parse, call the use case, render.

No `from __future__ import annotations` here: FastAPI reads the closures'
annotations at runtime, and `Caller` is local to the router factory."""

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response

from ledgerline.delivery.http.auth import principal_dependency
from ledgerline.delivery.http.routing import JSONBodyRoute
from ledgerline.delivery.http.schemas import (
    ErrorResponse,
    RegisterRequest,
    TokenRequest,
    TokenResponse,
    UserResponse,
)
from ledgerline.domain.user import Principal
from ledgerline.usecase.users import Registration, UserService

_ERRORS = {
    status: {"model": ErrorResponse}
    for status in (400, 401, 403, 404, 409, 413, 415, 500, 503, 504)
}


def users_router(users: UserService) -> APIRouter:
    router = APIRouter(prefix="/v1", route_class=JSONBodyRoute, responses=_ERRORS)  # type: ignore[arg-type]
    Caller = Annotated[Principal, Depends(principal_dependency(users))]  # noqa: N806

    @router.post("/users", status_code=201, tags=["users"], summary="Register a user")
    async def register(body: RegisterRequest, response: Response) -> UserResponse:
        user = await users.register(Registration(body.email, body.password, body.name))
        response.headers["Location"] = f"/v1/users/{user.id}"
        return UserResponse.of(user)

    @router.post("/auth/token", tags=["auth"], summary="Exchange email and password for a token")
    async def token(body: TokenRequest) -> TokenResponse:
        issued = await users.authenticate(body.email, body.password)
        return TokenResponse(access_token=issued.token, expires_in=issued.expires_in)

    @router.get("/users/me", tags=["users"], summary="The calling user")
    async def me(caller: Caller) -> UserResponse:
        return UserResponse.of(await users.get_me(caller))

    @router.get(
        "/users/{user_id}", tags=["users"], summary="A user by id (yourself, or any as admin)"
    )
    async def get_user(user_id: uuid.UUID, caller: Caller) -> UserResponse:
        return UserResponse.of(await users.get_by_id(caller, user_id))

    @router.get("/users", tags=["users"], summary="Find a user by email (admins)")
    async def find_user(
        email: Annotated[str, Query(min_length=1, max_length=1024)], caller: Caller
    ) -> UserResponse:
        return UserResponse.of(await users.get_by_email(caller, email))

    return router
