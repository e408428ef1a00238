"""Helpers shared by the HTTP contract tests."""

from __future__ import annotations

import uuid
from typing import Any

import httpx

from tests.integration.conftest import Account


def assert_error(response: httpx.Response, status: int, code: str | None) -> dict[str, Any]:
    """Every non-2xx answer: the status, a JSON object with a non-empty
    string "message" and "code" (the expected one, when given), and an
    X-Request-ID."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].split(";")[0].strip() == "application/json"
    body = response.json()
    assert isinstance(body, dict), body
    assert isinstance(body.get("message"), str), body
    assert body["message"]
    assert isinstance(body.get("code"), str), body
    assert body["code"]
    if code is not None:
        assert body["code"] == code, body
    assert response.headers.get("X-Request-ID")
    return body


def headers(account: Account | None, key: str | bytes | None = None) -> dict[bytes, bytes]:
    """Bearer auth for ``account`` and, when given, an Idempotency-Key (as
    raw bytes, so tests can send what a well-behaved client would not)."""
    out: dict[bytes, bytes] = {}
    if account is not None:
        out[b"authorization"] = f"Bearer {account.token}".encode()
    if key is not None:
        out[b"idempotency-key"] = key.encode() if isinstance(key, str) else key
    return out


def new_key() -> str:
    return uuid.uuid4().hex
