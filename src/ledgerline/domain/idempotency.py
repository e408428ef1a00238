"""Idempotency keys: what a client sends to make a retry safe."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ledgerline.domain.errors import InvalidArgumentError
from ledgerline.domain.user import UserId

# 1 to 255 visible ASCII characters; also the header's pattern in OpenAPI.
IDEMPOTENCY_KEY_PATTERN = "^[!-~]{1,255}$"
_VISIBLE_ASCII = re.compile(IDEMPOTENCY_KEY_PATTERN)


def parse_idempotency_key(raw: str | None) -> str:
    if raw is None or raw == "":
        raise InvalidArgumentError.for_field("Idempotency-Key", "the header is required")
    if not _VISIBLE_ASCII.fullmatch(raw):
        raise InvalidArgumentError.for_field(
            "Idempotency-Key", "must be 1 to 255 visible ASCII characters"
        )
    return raw


@dataclass(frozen=True, slots=True)
class IdempotentRequest:
    """The key as the client sent it (the use case validates it with
    parse_idempotency_key) and a fingerprint of the request it came with
    (method, path, caller and body, hashed by the transport)."""

    key: str
    fingerprint: str


@dataclass(frozen=True, slots=True)
class IdempotencyRecord:
    caller_id: UserId
    key: str
    fingerprint: str
    operation: str
    result: dict[str, Any]
    created_at: datetime
    expires_at: datetime
