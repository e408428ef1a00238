"""Wallet, order and admin-credit routes: parse, call the use case, render.

No `from __future__ import annotations`: FastAPI reads these closures'
annotations at runtime."""

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response

from ledgerline.delivery.http.auth import principal_dependency
from ledgerline.delivery.http.idempotency import idempotent_request
from ledgerline.delivery.http.routing import JSONBodyRoute
from ledgerline.delivery.http.schemas import (
    CreateOrderRequest,
    CreditRequest,
    CreditResponse,
    EntriesResponse,
    ErrorResponse,
    OrderResponse,
    WalletResponse,
)
from ledgerline.domain.user import Principal
from ledgerline.usecase.payments import ENTRIES_DEFAULT_LIMIT, NewOrder, PaymentService
from ledgerline.usecase.users import UserService

_ERRORS = {
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


def payments_router(users: UserService, payments: PaymentService) -> APIRouter:
    router = APIRouter(prefix="/v1", route_class=JSONBodyRoute, responses=_ERRORS)  # type: ignore[arg-type]
    Caller = Annotated[Principal, Depends(principal_dependency(users))]  # noqa: N806

    @router.post(
        "/admin/credits",
        status_code=201,
        tags=["wallets"],
        summary="Credit a wallet (admins): the only way money enters",
        openapi_extra=_IDEMPOTENCY_HEADER,
    )
    async def credit(body: CreditRequest, caller: Caller, request: Request) -> CreditResponse:
        idempotency = await idempotent_request(request, caller)
        result = await payments.credit(
            caller, body.user_id, body.amount, body.currency, idempotency
        )
        return CreditResponse.of(result)

    @router.get("/wallet", tags=["wallets"], summary="The caller's balances")
    async def wallet(caller: Caller) -> WalletResponse:
        return WalletResponse.of(await payments.balances(caller))

    @router.get("/wallet/entries", tags=["wallets"], summary="The caller's ledger, newest first")
    async def entries(
        caller: Caller,
        limit: Annotated[int, Query()] = ENTRIES_DEFAULT_LIMIT,
        cursor: Annotated[str | None, Query(max_length=200)] = None,
    ) -> EntriesResponse:
        return EntriesResponse.of(await payments.entries(caller, limit, cursor))

    @router.post("/orders", status_code=201, tags=["orders"], summary="Create an order (payer)")
    async def create_order(
        body: CreateOrderRequest, caller: Caller, response: Response
    ) -> OrderResponse:
        order = await payments.create_order(
            caller, NewOrder(body.payee_id, body.amount, body.currency, body.description)
        )
        response.headers["Location"] = f"/v1/orders/{order.id}"
        return OrderResponse.of(order)

    @router.get("/orders/{order_id}", tags=["orders"], summary="An order (payer, payee, admin)")
    async def get_order(order_id: uuid.UUID, caller: Caller) -> OrderResponse:
        return OrderResponse.of(await payments.get_order(caller, order_id))

    @router.post(
        "/orders/{order_id}/pay",
        tags=["orders"],
        summary="Pay an order exactly once (payer)",
        openapi_extra=_IDEMPOTENCY_HEADER,
    )
    async def pay(order_id: uuid.UUID, caller: Caller, request: Request) -> OrderResponse:
        idempotency = await idempotent_request(request, caller)
        return OrderResponse.of(await payments.pay(caller, order_id, idempotency))

    @router.post(
        "/orders/{order_id}/refund",
        tags=["orders"],
        summary="Refund a paid order exactly once (payee, admin)",
        openapi_extra=_IDEMPOTENCY_HEADER,
    )
    async def refund(order_id: uuid.UUID, caller: Caller, request: Request) -> OrderResponse:
        idempotency = await idempotent_request(request, caller)
        return OrderResponse.of(await payments.refund(caller, order_id, idempotency))

    return router
