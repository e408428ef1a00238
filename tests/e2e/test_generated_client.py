"""A Python client generated from a running service's /openapi.json by the
pinned openapi-python-client, imported and driven through a whole payment:
register, log in, credit, create an order, pay it (and replay the payment),
refund it, with the error bodies parsed too. The generator must not warn:
what it warns about is fixed in the document."""

from __future__ import annotations

import asyncio
import importlib
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import JWT_SECRET, Service
from tests.e2e.test_openapi_fuzz import ARGON2_CHEAP, PASSWORD, make_admin

pytestmark = pytest.mark.e2e
StartService = Callable[..., Service]
VENV_BIN = Path(sys.executable).parent
GENERATOR = str(VENV_BIN / "openapi-python-client")
PACKAGE = "ledgerline_client"


def generate_client(service: Service, into: Path) -> str:
    """Generates the client package into ``into``; returns what the
    generator printed."""
    document = into / "openapi.json"
    document.write_text(httpx.get(f"{service.base_url}/openapi.json", timeout=10).text)
    run = subprocess.run(
        [
            *(GENERATOR, "generate", "--path", str(document)),
            *("--output-path", str(into / PACKAGE), "--meta", "none"),
        ],
        # Its post-hooks format the code with this environment's ruff.
        env={**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    return run.stdout + run.stderr


class GeneratedClient:
    """The generated package, imported from the test's directory."""

    def module(self, name: str) -> ModuleType:
        return importlib.import_module(f"{PACKAGE}.{name}")

    def operation(self, tag: str, operation_id: str) -> ModuleType:
        return self.module(f"api.{tag}.{operation_id}")

    @property
    def models(self) -> ModuleType:
        return self.module("models")


@pytest.fixture
def generated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[GeneratedClient]:
    monkeypatch.syspath_prepend(str(tmp_path))
    yield GeneratedClient()
    for name in [m for m in sys.modules if m == PACKAGE or m.startswith(f"{PACKAGE}.")]:
        del sys.modules[name]


async def test_a_payment_end_to_end_through_the_generated_client(
    start_service: StartService, database_url: str, tmp_path: Path, generated: GeneratedClient
) -> None:
    make_admin(database_url, tmp_path / "data")
    service = start_service(
        LEDGERLINE_DATABASE_URL=database_url, LEDGERLINE_JWT_SECRET=JWT_SECRET, **ARGON2_CHEAP
    )
    printed = await asyncio.to_thread(generate_client, service, tmp_path)
    assert "warning" not in printed.lower(), printed

    await asyncio.to_thread(drive_a_payment, generated, service.base_url)


def drive_a_payment(generated: GeneratedClient, base_url: str) -> None:
    client_module, models = generated.module("client"), generated.models
    register_user = generated.operation("users", "register_user")
    issue_token = generated.operation("auth", "issue_token")
    get_me = generated.operation("users", "get_me")
    credit_wallet = generated.operation("wallets", "credit_wallet")
    get_wallet = generated.operation("wallets", "get_wallet")
    create_order = generated.operation("orders", "create_order")
    get_order = generated.operation("orders", "get_order")
    pay_order = generated.operation("orders", "pay_order")
    refund_order = generated.operation("orders", "refund_order")

    anyone = client_module.Client(base_url=base_url, raise_on_unexpected_status=True)

    def log_in(email: str) -> Any:
        token = issue_token.sync(
            client=anyone, body=models.TokenRequest(email=email, password=PASSWORD)
        )
        assert isinstance(token, models.TokenResponse), token
        return client_module.AuthenticatedClient(
            base_url=base_url, token=token.access_token, raise_on_unexpected_status=True
        )

    def register(email: str, name: str) -> Any:
        user = register_user.sync(
            client=anyone, body=models.RegisterRequest(email=email, password=PASSWORD, name=name)
        )
        assert isinstance(user, models.UserResponse), user
        return user

    payer = register("payer@example.com", "Payer")
    payee = register("payee@example.com", "Payee")
    admin, as_payer, as_payee = map(
        log_in, ("admin@example.com", "payer@example.com", "payee@example.com")
    )

    me = get_me.sync(client=as_payer)
    assert (me.id, me.email, me.name) == (payer.id, "payer@example.com", "Payer")

    credit = credit_wallet.sync(
        client=admin,
        body=models.CreditRequest(user_id=payer.id, amount=5000, currency=models.Currency.EUR),
        idempotency_key="top-up-1",
    )
    assert isinstance(credit, models.CreditResponse), credit
    assert (credit.user_id, credit.amount, credit.balance) == (payer.id, 5000, 5000)

    order = create_order.sync(
        client=as_payer,
        body=models.CreateOrderRequest(
            payee_id=payee.id,
            amount=1299,
            currency=models.Currency.EUR,
            description="Tea",
        ),
    )
    assert isinstance(order, models.OrderResponse), order
    assert order.status == models.OrderResponseStatus.PENDING
    assert order.paid_at is None

    paid = pay_order.sync(order.id, client=as_payer, idempotency_key="pay-1")
    replayed = pay_order.sync_detailed(order.id, client=as_payer, idempotency_key="pay-1")
    assert isinstance(paid, models.OrderResponse), paid
    assert paid.status == models.OrderResponseStatus.PAID
    assert paid.paid_at is not None
    assert replayed.status_code == 200
    assert replayed.parsed == paid

    refunded = refund_order.sync(order.id, client=as_payee, idempotency_key="refund-1")
    assert isinstance(refunded, models.OrderResponse), refunded
    assert refunded.status == models.OrderResponseStatus.REFUNDED

    balances = get_wallet.sync(client=as_payer).balances
    assert [(b.currency, b.amount) for b in balances] == [("EUR", 5000)]
    seen_by_payee = get_order.sync(order.id, client=as_payee)
    assert seen_by_payee.status == models.OrderResponseStatus.REFUNDED

    # Errors arrive as the documented error body, parsed.
    again = pay_order.sync_detailed(order.id, client=as_payer, idempotency_key="pay-2")
    assert again.status_code == 409
    assert isinstance(again.parsed, models.ErrorResponse)
    assert again.parsed.code == "failed_precondition"
    unknown = get_order.sync(payee.id, client=as_payer)
    assert isinstance(unknown, models.ErrorResponse)
    assert unknown.code == "not_found"
