"""Wallet, order and admin-credit routes: parse, call the use case, render.
Every route here needs a bearer token."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response

from ledgerline.delivery.http.idempotency import idempotent_request
from ledgerline.delivery.http.routing import Authenticator, authenticated_route, caller, render
from ledgerline.delivery.http.schemas import (
    CreateOrderRequest,
    CreditRequest,
    CreditResponse,
    EntriesResponse,
    ErrorResponse,
    OrderResponse,
    WalletResponse,
)
from ledgerline.usecase.payments import ENTRIES_DEFAULT_LIMIT, NewOrder, PaymentService

_ERRORS: dict[int | str, dict[str, object]] = {
    status: {"model": ErrorResponse}
    for status in (400, 401, 402, 403, 404, 409, 413, 415, 422, 500, 503, 504)
}
_IDEMPOTENCY_HEADER = {
    "parameters": [
        {
            "name": "Idempotency-Key",
            "in": "header",
            "required": True,
            "description": "1-255 visible ASCII characters; a retry with the same key "
            "and request replays the first answer.",
            "schema": {"type": "string", "minLength": 1, "maxLength": 255},
        }
    ]
}


def payments_routers(payments: PaymentService, authenticate: Authenticator) -> list[APIRouter]:
    router = APIRouter(
        prefix="/v1", route_class=authenticated_route(authenticate), responses=_ERRORS
    )
    # Permission before validation: a caller who may not credit gets 403
    # before the body is parsed, as pay and refund check theirs before the key.
    admin = APIRouter(
        prefix="/v1",
        route_class=authenticated_route(authenticate, payments.authorize_credit),
        responses=_ERRORS,
    )

    @admin.post(
        "/admin/credits",
        status_code=201,
        response_model=CreditResponse,
        tags=["wallets"],
        summary="Credit a wallet (admins): the only way money enters",
        openapi_extra=_IDEMPOTENCY_HEADER,
    )
    async def credit(body: CreditRequest, request: Request) -> Response:
        who = caller(request)
        idempotency = idempotent_request(request, who, body.model_dump(mode="json"))
        result = await payments.credit(who, body.user_id, body.amount, body.currency, idempotency)
        return render(CreditResponse.of(result), 201)

    @router.get(
        "/wallet", response_model=WalletResponse, tags=["wallets"], summary="The caller's balances"
    )
    async def wallet(request: Request) -> Response:
        return render(WalletResponse.of(await payments.balances(caller(request))))

    @router.get(
        "/wallet/entries",
        response_model=EntriesResponse,
        tags=["wallets"],
        summary="The caller's ledger, newest first",
    )
    async def entries(
        request: Request,
        limit: Annotated[int, Query()] = ENTRIES_DEFAULT_LIMIT,
        cursor: Annotated[str | None, Query(max_length=200)] = None,
    ) -> Response:
        page = await payments.entries(caller(request), limit, cursor)
        return render(EntriesResponse.of(page))

    @router.post(
        "/orders",
        status_code=201,
        response_model=OrderResponse,
        tags=["orders"],
        summary="Create an order (payer)",
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
    )
    async def get_order(order_id: uuid.UUID, request: Request) -> Response:
        return render(OrderResponse.of(await payments.get_order(caller(request), order_id)))

    @router.post(
        "/orders/{order_id}/pay",
        response_model=OrderResponse,
        tags=["orders"],
        summary="Pay an order exactly once (payer)",
        openapi_extra=_IDEMPOTENCY_HEADER,
    )
    async def pay(order_id: uuid.UUID, request: Request) -> Response:
        who = caller(request)
        idempotency = idempotent_request(request, who, {"order_id": str(order_id)})
        return render(OrderResponse.of(await payments.process_payment(who, order_id, idempotency)))

    @router.post(
        "/orders/{order_id}/refund",
        response_model=OrderResponse,
        tags=["orders"],
        summary="Refund a paid order exactly once (payee, admin)",
        openapi_extra=_IDEMPOTENCY_HEADER,
    )
    async def refund(order_id: uuid.UUID, request: Request) -> Response:
        who = caller(request)
        idempotency = idempotent_request(request, who, {"order_id": str(order_id)})
        return render(OrderResponse.of(await payments.refund(who, order_id, idempotency)))

    return [admin, router]
