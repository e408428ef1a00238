"""What a client generated from /openapi.json is made of: an operation id
per operation (its function's name), one named schema per body, and the
error body on every error answer. The ids are the generated client's API:
changing one is a breaking change, so they are listed here."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest

OPERATION_IDS = {
    ("get", "/healthz"): "get_liveness",
    ("get", "/readyz"): "get_readiness",
    ("get", "/metrics"): "get_metrics",
    ("post", "/v1/users"): "register_user",
    ("get", "/v1/users"): "find_user_by_email",
    ("post", "/v1/auth/token"): "issue_token",
    ("get", "/v1/users/me"): "get_me",
    ("get", "/v1/users/{user_id}"): "get_user",
    ("post", "/v1/admin/credits"): "credit_wallet",
    ("get", "/v1/wallet"): "get_wallet",
    ("get", "/v1/wallet/entries"): "list_wallet_entries",
    ("post", "/v1/orders"): "create_order",
    ("get", "/v1/orders/{order_id}"): "get_order",
    ("post", "/v1/orders/{order_id}/pay"): "pay_order",
    ("post", "/v1/orders/{order_id}/refund"): "refund_order",
}
ERROR_BODIES = {"#/components/schemas/ErrorResponse", "#/components/schemas/NotReadyResponse"}


@pytest.fixture
async def document(client: httpx.AsyncClient) -> dict[str, Any]:
    found = (await client.get("/openapi.json")).json()
    assert isinstance(found, dict)
    return found


def operations(document: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {
        (method, path): operation
        for path, methods in document["paths"].items()
        for method, operation in methods.items()
    }


async def test_every_operation_has_its_stable_readable_id(document: dict[str, Any]) -> None:
    ids = {key: operation.get("operationId") for key, operation in operations(document).items()}

    assert ids == OPERATION_IDS
    assert all(re.fullmatch(r"[a-z]+(?:_[a-z]+)*", i) for i in OPERATION_IDS.values())
    assert len(set(OPERATION_IDS.values())) == len(OPERATION_IDS)


async def test_every_body_is_one_named_schema(document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]
    bodies = [op["requestBody"] for op in operations(document).values() if "requestBody" in op]

    assert bodies
    for body in bodies:
        assert list(body["content"]) == ["application/json"]
        assert body["content"]["application/json"]["schema"]["$ref"].startswith(
            "#/components/schemas/"
        )
    # No framework-made wrappers, no input and output twins of one model.
    assert not [name for name in schemas if name.startswith("Body_") or "-" in name]


@pytest.mark.parametrize("schema", ["CreditRequest", "CreateOrderRequest"])
async def test_a_currency_is_one_named_schema(document: dict[str, Any], schema: str) -> None:
    """One Currency enum in a generated client, not one per body."""
    currency = document["components"]["schemas"][schema]["properties"]["currency"]

    assert currency == {"$ref": "#/components/schemas/Currency"}
    assert "EUR" in document["components"]["schemas"]["Currency"]["enum"]


async def test_every_error_answer_documents_the_error_body(document: dict[str, Any]) -> None:
    for key, operation in operations(document).items():
        for status, response in operation["responses"].items():
            if int(status) >= 400:
                schema = response["content"]["application/json"]["schema"]
                assert schema["$ref"] in ERROR_BODIES, (key, status)
