"""Wallet, order and admin-credit routes: parse, call the use case, render.
Every route here needs a bearer token."""

from __future__ import annotations

import re
import uuid

from fastapi import APIRouter, Request, Response

from ledgerline.delivery.http.routing import Authenticator, authenticated_route, caller, render
from ledgerline.delivery.http.schemas import (
    ENTRIES_QUERY_PARAMETERS,
    IDEMPOTENCY_KEY_PARAMETER,
    CreateOrderRequest,
    CreditRequest,
    CreditResponse,
    EntriesResponse,
    OrderResponse,
    WalletResponse,
    created_responses,
    error_responses,
)
from ledgerline.domain.errors import InvalidArgumentError
from ledgerline.usecase.payments import (
    ENTRIES_DEFAULT_LIMIT,
    ENTRIES_MAX_LIMIT,
    NewOrder,
    PaymentService,
)

_IDEMPOTENT = {"parameters": [IDEMPOTENCY_KEY_PARAMETER]}


def payments_routers(payments: PaymentService, authenticate: Authenticator) -> list[APIRouter]:
    router = APIRouter(prefix="/v1", route_class=authenticated_route(authenticate))
    # Permission before validation: a caller who may not credit gets 403
    # before the body is parsed, as pay and refund check theirs before the key.
    admin = APIRouter(
        prefix="/v1",
        route_class=authenticated_route(authenticate, payments.authorize_credit),
    )

    @admin.post(
        "/admin/credits",
        status_code=201,
        response_model=CreditResponse,
        tags=["wallets"],
        summary="Credit a wallet (admins): the only way money enters",
        operation_id="credit_wallet",
        responses=error_responses(400, 401, 403, 404, 409, 413, 415, 422),
        openapi_extra=_IDEMPOTENT,
    )
    async def credit(body: CreditRequest, request: Request) -> Response:
        result = await payments.credit(
            caller(request), body.user_id, body.amount, body.currency, _key(request)
        )
        return render(CreditResponse.of(result), 201)

    @router.get(
        "/wallet",
        response_model=WalletResponse,
        tags=["wallets"],
        summary="The caller's balances",
        operation_id="get_wallet",
        responses=error_responses(401),
    )
    async def wallet(request: Request) -> Response:
        return render(WalletResponse.of(await payments.balances(caller(request))))

    @router.get(
        "/wallet/entries",
        response_model=EntriesResponse,
        tags=["wallets"],
        summary="The caller's ledger, newest first",
        operation_id="list_wallet_entries",
        responses=error_responses(400, 401),
        openapi_extra={"parameters": ENTRIES_QUERY_PARAMETERS},
    )
    async def entries(request: Request) -> Response:
        query = request.query_params
        limit = _limit(query.get("limit"))
        page = await payments.entries(caller(request), limit, query.get("cursor"))
        return render(EntriesResponse.of(page))

    @router.post(
        "/orders",
        status_code=201,
        response_model=OrderResponse,
        tags=["orders"],
        summary="Create an order (payer)",
        operation_id="create_order",
        responses={
            **created_responses("/v1/orders/{id} of the new order"),
            **error_responses(400, 401, 404, 413, 415),
        },
    )
    async def create_order(body: CreateOrderRequest, request: Request) -> Response:
        order = await payments.create_order(
            caller(request), NewOrder(body.payee_id, body.amount, body.currency, body.description)
        )
        return render(OrderResponse.of(order), 201, {"Location": f"/v1/orders/{order.id}"})

    @router.get(
        "/orders/{order_id}",
        response_model=OrderResponse,
        tags=["orders"],
        summary="An order (payer, payee, admin)",
        operation_id="get_order",
        responses=error_responses(400, 401, 404),
    )
    async def get_order(order_id: uuid.UUID, request: Request) -> Response:
        return render(OrderResponse.of(await payments.get_order(caller(request), order_id)))

    @router.post(
        "/orders/{order_id}/pay",
        response_model=OrderResponse,
        tags=["orders"],
        summary="Pay an order exactly once (payer)",
        operation_id="pay_order",
        responses=error_responses(400, 401, 402, 403, 404, 409, 413, 422),
        openapi_extra=_IDEMPOTENT,
    )
    async def pay(order_id: uuid.UUID, request: Request) -> Response:
        paid = await payments.process_payment(caller(request), order_id, _key(request))
        return render(OrderResponse.of(paid))

    @router.post(
        "/orders/{order_id}/refund",
        response_model=OrderResponse,
        tags=["orders"],
        summary="Refund a paid order exactly once (payee, admin)",
        operation_id="refund_order",
        responses=error_responses(400, 401, 402, 403, 404, 409, 413, 422),
        openapi_extra=_IDEMPOTENT,
    )
    async def refund(order_id: uuid.UUID, request: Request) -> Response:
        refunded = await payments.refund(caller(request), order_id, _key(request))
        return render(OrderResponse.of(refunded))

    return [admin, router]


def _key(request: Request) -> str:
    """The Idempotency-Key as sent; the use case validates it after its own
    permission checks, and fingerprints the request it came with."""
    return request.headers.get("idempotency-key", "")


_DECIMAL = re.compile(r"[0-9]{1,9}")


def _limit(raw: str | None) -> int:
    """The page size as written: decimal digits only (no sign, spaces,
    underscores or fractions, which int() and pydantic would take). The use
    case checks the range."""
    if raw is None:
        return ENTRIES_DEFAULT_LIMIT
    if not _DECIMAL.fullmatch(raw):
        raise InvalidArgumentError.for_field(
            "limit", f"must be an integer from 1 to {ENTRIES_MAX_LIMIT}"
        )
    return int(raw)
