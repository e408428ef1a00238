"""The Idempotency-Key header and the request fingerprint it is stored
with: method, path, caller and a hash of the body (canonical JSON, so key
order and whitespace do not matter)."""

from __future__ import annotations

import hashlib
import json

from fastapi import Request

from ledgerline.domain.errors import InvalidArgumentError
from ledgerline.domain.idempotency import IdempotentRequest
from ledgerline.domain.user import Principal


async def idempotent_request(request: Request, caller: Principal) -> IdempotentRequest:
    """The key as sent (the use case validates it, after its own permission
    checks) and the request's fingerprint."""
    key = request.headers.get("idempotency-key", "")
    body = await request.body()
    if body:
        try:
            body = json.dumps(json.loads(body), sort_keys=True, separators=(",", ":")).encode()
        except (ValueError, RecursionError) as exc:  # a body no model has parsed yet
            raise InvalidArgumentError("request body is not valid JSON") from exc
    digest = hashlib.sha256()
    # Lower-cased: the only variable parts of these paths are UUIDs, whose
    # case carries no meaning, so a retry that spells one differently is the
    # same request.
    for part in (request.method, request.url.path.lower(), str(caller.user_id)):
        digest.update(part.encode())
        digest.update(b"\n")
    digest.update(hashlib.sha256(body).digest())
    return IdempotentRequest(key, f"sha256:{digest.hexdigest()}")
