"""The generated gRPC contract says what API.md says: package ledgerline.v1,
the three services with their methods, and one request and one response
message per RPC, named after it (buf's and Google's style)."""

from __future__ import annotations

import pytest
from google.protobuf.descriptor import FileDescriptor

from ledgerline.v1 import payments_pb2, users_pb2, wallet_pb2

SERVICES: dict[str, tuple[FileDescriptor, list[str]]] = {
    "UserService": (
        users_pb2.DESCRIPTOR,
        ["Register", "Login", "GetUser", "GetMe", "GetUserByEmail"],
    ),
    "WalletService": (wallet_pb2.DESCRIPTOR, ["GetWallet", "ListEntries", "Credit"]),
    "PaymentService": (
        payments_pb2.DESCRIPTOR,
        ["CreateOrder", "GetOrder", "PayOrder", "RefundOrder"],
    ),
}


@pytest.mark.parametrize("service", list(SERVICES))
def test_each_service_has_the_methods_of_the_contract(service: str) -> None:
    file, methods = SERVICES[service]
    assert file.package == "ledgerline.v1"
    descriptor = file.services_by_name[service]
    assert descriptor.full_name == f"ledgerline.v1.{service}"
    assert [m.name for m in descriptor.methods] == methods


@pytest.mark.parametrize("service", list(SERVICES))
def test_each_rpc_has_its_own_request_and_response(service: str) -> None:
    file, _ = SERVICES[service]
    for method in file.services_by_name[service].methods:
        assert method.input_type.name == f"{method.name}Request"
        assert method.output_type.name == f"{method.name}Response"
        assert not method.client_streaming
        assert not method.server_streaming


MONEY_MESSAGES = [
    wallet_pb2.Balance,
    wallet_pb2.Entry,
    wallet_pb2.CreditRequest,
    wallet_pb2.CreditResponse,
    payments_pb2.Order,
    payments_pb2.CreateOrderRequest,
]


@pytest.mark.parametrize("message", MONEY_MESSAGES, ids=lambda m: m.DESCRIPTOR.name)
def test_money_is_an_int64_amount_and_a_currency_code(message: type[object]) -> None:
    fields = message.DESCRIPTOR.fields_by_name  # type: ignore[attr-defined]
    assert fields["amount"].type == fields["amount"].TYPE_INT64
    assert fields["currency"].type == fields["currency"].TYPE_STRING


def test_times_are_protobuf_timestamps() -> None:
    for message in (users_pb2.User, payments_pb2.Order, wallet_pb2.Entry):
        assert "create_time" in message.DESCRIPTOR.fields_by_name
        for field in message.DESCRIPTOR.fields:
            if field.name.endswith("_time"):
                assert field.message_type is not None, field.full_name
                assert field.message_type.full_name == "google.protobuf.Timestamp"
