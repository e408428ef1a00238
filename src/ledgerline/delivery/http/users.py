"""Users and authentication routes: parse, call the use case, render."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Request, Response

from ledgerline.delivery.http.routing import (
    Authenticator,
    JSONBodyRoute,
    authenticated_route,
    caller,
    render,
)
from ledgerline.delivery.http.schemas import (
    EMAIL_QUERY_PARAMETER,
    RegisterRequest,
    TokenRequest,
    TokenResponse,
    UserResponse,
    created_responses,
    error_responses,
)
from ledgerline.platform.client_address import IPAddress, TrustedProxies, parse_address
from ledgerline.platform.ratelimit import RateLimiter
from ledgerline.usecase.users import Registration, UserService


def users_routers(
    users: UserService,
    authenticate: Authenticator,
    limiter: RateLimiter,
    proxies: TrustedProxies,
) -> list[APIRouter]:
    public = APIRouter(prefix="/v1", route_class=JSONBodyRoute)

    def client_address(request: Request) -> IPAddress | None:
        peer = parse_address(request.client.host) if request.client else None
        return proxies.client_address(peer, request.headers.getlist("x-forwarded-for"))

    private = APIRouter(prefix="/v1", route_class=authenticated_route(authenticate))

    @public.post(
        "/users",
        status_code=201,
        response_model=UserResponse,
        tags=["users"],
        summary="Register a user",
        operation_id="register_user",
        responses={
            **created_responses("/v1/users/{id} of the new user"),
            **error_responses(400, 409, 413, 415, 429),
        },
    )
    async def register(body: RegisterRequest, request: Request) -> Response:
        await limiter.check_registration(client_address(request))
        user = await users.register(Registration(body.email, body.password, body.name))
        return render(UserResponse.of(user), 201, {"Location": f"/v1/users/{user.id}"})

    @public.post(
        "/auth/token",
        response_model=TokenResponse,
        tags=["auth"],
        summary="Exchange email and password for a token",
        operation_id="issue_token",
        responses=error_responses(400, 401, 413, 415, 429),
    )
    async def token(body: TokenRequest, request: Request) -> Response:
        await limiter.check_login(body.email, client_address(request))
        issued = await users.authenticate(body.email, body.password)
        return render(TokenResponse(access_token=issued.token, expires_in=issued.expires_in))

    @private.get(
        "/users/me",
        response_model=UserResponse,
        tags=["users"],
        summary="The calling user",
        operation_id="get_me",
        responses=error_responses(401),
    )
    async def me(request: Request) -> Response:
        return render(UserResponse.of(await users.get_me(caller(request))))

    @private.get(
        "/users/{user_id}",
        response_model=UserResponse,
        tags=["users"],
        summary="A user by id (yourself, or any as admin)",
        operation_id="get_user",
        responses=error_responses(400, 401, 404),
    )
    async def get_user(user_id: uuid.UUID, request: Request) -> Response:
        return render(UserResponse.of(await users.get_by_id(caller(request), user_id)))

    @private.get(
        "/users",
        response_model=UserResponse,
        tags=["users"],
        summary="Find a user by email (admins)",
        operation_id="find_user_by_email",
        responses=error_responses(400, 401, 403, 404),
        openapi_extra={"parameters": [EMAIL_QUERY_PARAMETER]},
    )
    async def find_user(request: Request) -> Response:
        # Read here and checked by the use case, after the caller's
        # permission: a non-admin gets 403 whatever they send, the framework
        # never refuses the query first.
        email = request.query_params.get("email", "")
        return render(UserResponse.of(await users.get_by_email(caller(request), email)))

    return [public, private]
