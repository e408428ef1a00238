"""The three services of ledgerline.v1: parse the message, call the use
case, render. Authentication, deadlines and errors are the interceptor's."""

from __future__ import annotations

from typing import Any

import grpc

from ledgerline.delivery.grpc.calls import caller, metadata_value, metadata_values
from ledgerline.delivery.grpc.convert import (
    balance_message,
    credit_message,
    entry_message,
    order_message,
    parse_id,
    user_message,
)
from ledgerline.platform.client_address import IPAddress, TrustedProxies, parse_grpc_peer
from ledgerline.platform.ratelimit import RateLimiter
from ledgerline.usecase.payments import ENTRIES_DEFAULT_LIMIT, NewOrder, PaymentService
from ledgerline.usecase.users import Registration, UserService
from ledgerline.v1 import (
    payments_pb2,
    payments_pb2_grpc,
    users_pb2,
    users_pb2_grpc,
    wallet_pb2,
    wallet_pb2_grpc,
)

Context = grpc.aio.ServicerContext[Any, Any]
IDEMPOTENCY_KEY = "idempotency-key"
FORWARDED_FOR = "x-forwarded-for"


class UserServicer(users_pb2_grpc.UserServiceServicer):
    def __init__(self, users: UserService, limiter: RateLimiter, proxies: TrustedProxies) -> None:
        self._users = users
        self._limiter = limiter
        self._proxies = proxies

    def _client_address(self, context: Context) -> IPAddress | None:
        """The peer, or behind a trusted proxy the client it names in
        ``x-forwarded-for`` (REST's rule)."""
        peer = parse_grpc_peer(context.peer())
        return self._proxies.client_address(peer, metadata_values(context, FORWARDED_FOR))

    async def Register(  # noqa: N802 - the RPC's name
        self, request: users_pb2.RegisterRequest, context: Context
    ) -> users_pb2.RegisterResponse:
        await self._limiter.check_registration(self._client_address(context))
        registration = Registration(request.email, request.password, request.name)
        user = await self._users.register(registration)
        return users_pb2.RegisterResponse(user=user_message(user))

    async def Login(  # noqa: N802
        self, request: users_pb2.LoginRequest, context: Context
    ) -> users_pb2.LoginResponse:
        await self._limiter.check_login(request.email, self._client_address(context))
        issued = await self._users.authenticate(request.email, request.password)
        return users_pb2.LoginResponse(
            access_token=issued.token,
            token_type="Bearer",  # noqa: S106 - the scheme's name, not a secret
            expires_in=issued.expires_in,
        )

    async def GetUser(  # noqa: N802
        self, request: users_pb2.GetUserRequest, context: Context
    ) -> users_pb2.GetUserResponse:
        user = await self._users.get_by_id(caller(), parse_id(request.id, "id"))
        return users_pb2.GetUserResponse(user=user_message(user))

    async def GetMe(  # noqa: N802
        self, request: users_pb2.GetMeRequest, context: Context
    ) -> users_pb2.GetMeResponse:
        return users_pb2.GetMeResponse(user=user_message(await self._users.get_me(caller())))

    async def GetUserByEmail(  # noqa: N802
        self, request: users_pb2.GetUserByEmailRequest, context: Context
    ) -> users_pb2.GetUserByEmailResponse:
        user = await self._users.get_by_email(caller(), request.email)
        return users_pb2.GetUserByEmailResponse(user=user_message(user))


class WalletServicer(wallet_pb2_grpc.WalletServiceServicer):
    def __init__(self, payments: PaymentService) -> None:
        self._payments = payments

    async def GetWallet(  # noqa: N802
        self, request: wallet_pb2.GetWalletRequest, context: Context
    ) -> wallet_pb2.GetWalletResponse:
        balances = await self._payments.balances(caller())
        return wallet_pb2.GetWalletResponse(balances=[balance_message(b) for b in balances])

    async def ListEntries(  # noqa: N802
        self, request: wallet_pb2.ListEntriesRequest, context: Context
    ) -> wallet_pb2.ListEntriesResponse:
        limit = request.page_size or ENTRIES_DEFAULT_LIMIT
        page = await self._payments.entries(caller(), limit, request.page_token or None)
        return wallet_pb2.ListEntriesResponse(
            entries=[entry_message(e) for e in page.entries],
            next_page_token=page.next_cursor or "",
        )

    async def Credit(  # noqa: N802
        self, request: wallet_pb2.CreditRequest, context: Context
    ) -> wallet_pb2.CreditResponse:
        who = caller()
        # Permission before the request's fields are read, as over REST.
        self._payments.authorize_credit(who)
        credit = await self._payments.credit(
            who,
            parse_id(request.user_id, "user_id"),
            request.amount,
            request.currency,
            metadata_value(context, IDEMPOTENCY_KEY),
        )
        return credit_message(credit)


class PaymentServicer(payments_pb2_grpc.PaymentServiceServicer):
    def __init__(self, payments: PaymentService) -> None:
        self._payments = payments

    async def CreateOrder(  # noqa: N802
        self, request: payments_pb2.CreateOrderRequest, context: Context
    ) -> payments_pb2.CreateOrderResponse:
        new = NewOrder(
            payee_id=parse_id(request.payee_id, "payee_id"),
            amount=request.amount,
            currency=request.currency,
            description=request.description or None,
        )
        order = await self._payments.create_order(caller(), new)
        return payments_pb2.CreateOrderResponse(order=order_message(order))

    async def GetOrder(  # noqa: N802
        self, request: payments_pb2.GetOrderRequest, context: Context
    ) -> payments_pb2.GetOrderResponse:
        order = await self._payments.get_order(caller(), parse_id(request.id, "id"))
        return payments_pb2.GetOrderResponse(order=order_message(order))

    async def PayOrder(  # noqa: N802
        self, request: payments_pb2.PayOrderRequest, context: Context
    ) -> payments_pb2.PayOrderResponse:
        paid = await self._payments.process_payment(
            caller(), parse_id(request.id, "id"), metadata_value(context, IDEMPOTENCY_KEY)
        )
        return payments_pb2.PayOrderResponse(order=order_message(paid))

    async def RefundOrder(  # noqa: N802
        self, request: payments_pb2.RefundOrderRequest, context: Context
    ) -> payments_pb2.RefundOrderResponse:
        refunded = await self._payments.refund(
            caller(), parse_id(request.id, "id"), metadata_value(context, IDEMPOTENCY_KEY)
        )
        return payments_pb2.RefundOrderResponse(order=order_message(refunded))
