"""The envelope of every ledgerline.v1 call, as an interceptor that wraps
the method handler itself (grpc.aio's intercept_service alone sees only the
method's name and metadata): request id, authentication, the deadline, the
error mapping, one log line and metrics. Health and reflection pass
through untouched."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeAlias

import grpc
import structlog

from ledgerline.delivery.error_table import INTERNAL_MESSAGE, mapping_for
from ledgerline.delivery.grpc.calls import metadata_value, reset_caller, set_caller
from ledgerline.delivery.request_id import VALID_REQUEST_ID, new_request_id
from ledgerline.domain.errors import DomainError, RateLimitedError
from ledgerline.platform.deadline import within
from ledgerline.platform.logging import Logger, call_log
from ledgerline.platform.metrics import GRPCMetrics
from ledgerline.usecase.users import UserService

PACKAGE_PREFIX = "/ledgerline.v1."
# Calls that need no access token.
PUBLIC_METHODS = frozenset(
    {"/ledgerline.v1.UserService/Register", "/ledgerline.v1.UserService/Login"}
)
REQUEST_ID = "x-request-id"
ERROR_CODE = "error-code"  # trailing metadata: API.md's stable code
# Trailing metadata of RESOURCE_EXHAUSTED (rate_limited): whole seconds
# until the call may be tried again, as REST's Retry-After header.
RETRY_AFTER = "retry-after"

Context = grpc.aio.ServicerContext[Any, Any]
Behavior = Callable[[Any, Context], Awaitable[Any]]
Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"  # generic only in the stubs
Continuation: TypeAlias = "Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]]"


class CallEnvelope(grpc.aio.ServerInterceptor):
    def __init__(
        self,
        users: UserService,
        *,
        metrics: GRPCMetrics,
        logger: Logger,
        request_timeout: float,
    ) -> None:
        self._users = users
        self._metrics = metrics
        self._log = logger
        self._call_log = call_log("ledgerline.grpc")
        self._timeout = request_timeout

    async def intercept_service(
        self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> Handler | None:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or handler.unary_unary is None or not method.startswith(PACKAGE_PREFIX):
            return handler
        behavior: Behavior = handler.unary_unary  # type: ignore[assignment] # aio: a coroutine
        return grpc.unary_unary_rpc_method_handler(
            self._enveloped(method, behavior),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )

    def _enveloped(self, method: str, behavior: Behavior) -> Behavior:
        authenticated = method not in PUBLIC_METHODS

        async def call(request: Any, context: Context) -> Any:
            started = time.perf_counter()
            request_id = _request_id(context)
            structlog.contextvars.bind_contextvars(request_id=request_id)
            status = grpc.StatusCode.OK
            caller_token = None
            try:
                if authenticated:
                    authorization = metadata_value(context, "authorization")
                    caller_token = set_caller(self._users.principal_from_bearer(authorization))
                async with within(self._deadline(context)):
                    response = await behavior(request, context)
                context.set_trailing_metadata(((REQUEST_ID, request_id),))
                return response
            except DomainError as exc:
                status = _status(exc.code)
                extra = (
                    ((RETRY_AFTER, str(exc.retry_after_seconds)),)
                    if isinstance(exc, RateLimitedError)
                    else ()
                )
                await _abort(context, status, exc.message, exc.code, request_id, extra)
            except TimeoutError:
                status = grpc.StatusCode.DEADLINE_EXCEEDED
                await _abort(context, status, "deadline exceeded", "deadline_exceeded", request_id)
            except asyncio.CancelledError:
                status = grpc.StatusCode.CANCELLED
                raise
            except grpc.aio.AbortError:  # the behaviour ended the call itself
                status = _status_of(context)
                raise
            except Exception:  # noqa: BLE001 - the outermost net: log it, answer INTERNAL
                self._log.exception("unhandled error", method=method)
                status = grpc.StatusCode.INTERNAL
                await _abort(context, status, INTERNAL_MESSAGE, "internal", request_id)
            finally:
                if caller_token is not None:
                    reset_caller(caller_token)
                elapsed = time.perf_counter() - started
                self._metrics.observe(method, status.name, elapsed)
                self._call_log(method, status.name, round(elapsed * 1000, 2), request_id)
                structlog.contextvars.unbind_contextvars("request_id")

        return call

    def _deadline(self, context: Context) -> float:
        """The client's deadline (None: it set none), capped by the
        service's own request timeout."""
        remaining = context.time_remaining()
        return self._timeout if remaining is None else min(remaining, self._timeout)


def _status(code: str) -> grpc.StatusCode:
    return grpc.StatusCode[mapping_for(code).grpc_status]


async def _abort(
    context: Context,
    status: grpc.StatusCode,
    message: str,
    code: str,
    request_id: str,
    extra: tuple[tuple[str, str], ...] = (),
) -> None:
    await context.abort(
        status,
        message,
        trailing_metadata=((ERROR_CODE, code), (REQUEST_ID, request_id), *extra),
    )


def _status_of(context: Context) -> grpc.StatusCode:
    code = context.code()
    return code if isinstance(code, grpc.StatusCode) else grpc.StatusCode.UNKNOWN


def _request_id(context: Context) -> str:
    incoming = metadata_value(context, REQUEST_ID)
    if incoming and VALID_REQUEST_ID.match(incoming):
        return incoming
    return new_request_id()
