from __future__ import annotations

import httpx

from tests.integration.conftest import AccountFactory


async def test_register_login_me(client: httpx.AsyncClient, make_account: AccountFactory) -> None:
    account = await make_account("smoke@example.com")
    me = await client.get("/v1/users/me", headers=account.auth)
    assert me.status_code == 200
    assert me.json()["id"] == account.id
