"""The gRPC call envelope over a real server on the loopback, around a
behaviour that raises each domain error in turn: every row of API.md's
error table comes out as its gRPC status with its stable code, and
anything else as INTERNAL with the fixed message."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, cast

import grpc
import pytest

from ledgerline.delivery.error_table import ERROR_TABLE
from ledgerline.delivery.grpc.interceptor import CallEnvelope
from ledgerline.domain import errors
from ledgerline.domain.errors import DomainError
from ledgerline.platform.logging import get_logger
from ledgerline.platform.metrics import GRPCMetrics, HTTPMetrics
from ledgerline.usecase.users import UserService
from ledgerline.v1 import users_pb2, users_pb2_grpc

ERRORS: dict[str, type[DomainError]] = {
    cls.code: cls
    for cls in vars(errors).values()
    if isinstance(cls, type) and issubclass(cls, DomainError) and cls is not DomainError
}
SECRET = "do-not-leak-this"


async def _raise(request: users_pb2.RegisterRequest, context: Any) -> users_pb2.RegisterResponse:
    """Raises the domain error whose code the request's email names, or a
    plain exception with a secret in it."""
    if request.email in ERRORS:
        raise ERRORS[request.email]("said by the use case")
    raise RuntimeError(SECRET)


@pytest.fixture
async def stub() -> AsyncIterator[users_pb2_grpc.UserServiceStub]:
    envelope = CallEnvelope(
        cast(UserService, None),  # Register needs no caller: never asked
        metrics=GRPCMetrics(HTTPMetrics().registry),
        logger=get_logger("test"),
        request_timeout=5,
    )
    server = grpc.aio.server(interceptors=[envelope])
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                "ledgerline.v1.UserService",
                {
                    "Register": grpc.unary_unary_rpc_method_handler(
                        _raise,
                        request_deserializer=users_pb2.RegisterRequest.FromString,
                        response_serializer=users_pb2.RegisterResponse.SerializeToString,
                    )
                },
            ),
        )
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield users_pb2_grpc.UserServiceStub(channel)
    finally:
        await server.stop(None)


def test_every_code_of_the_table_has_a_domain_error() -> None:
    assert set(ERRORS) == set(ERROR_TABLE) - {"internal"}


@pytest.mark.parametrize("code", sorted(ERRORS))
async def test_each_domain_error_is_its_status_and_code(
    stub: users_pb2_grpc.UserServiceStub, code: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Register(users_pb2.RegisterRequest(email=code))
    error = caught.value
    assert error.code() == grpc.StatusCode[ERROR_TABLE[code].grpc_status]
    assert error.details() == "said by the use case"
    trailing = dict(error.trailing_metadata() or ())
    assert trailing["error-code"] == code
    assert trailing["x-request-id"]


async def test_anything_else_is_internal_with_the_fixed_message(
    stub: users_pb2_grpc.UserServiceStub,
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Register(users_pb2.RegisterRequest(email="boom"))
    error = caught.value
    assert error.code() == grpc.StatusCode.INTERNAL
    assert error.details() == "internal server error"
    assert dict(error.trailing_metadata() or ())["error-code"] == "internal"
    assert SECRET not in str(error.debug_error_string())
