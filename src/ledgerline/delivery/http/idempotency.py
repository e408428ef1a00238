"""The Idempotency-Key header and the request fingerprint it is stored
with: the operation (method and route), the caller, and the request's
parsed parameters in canonical JSON. Built from what the request means, not
how it was spelled: a retry that writes a UUID in another form, orders its
JSON keys differently or adds whitespace is the same request."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping

from fastapi import Request
from fastapi.routing import APIRoute

from ledgerline.domain.idempotency import IdempotentRequest
from ledgerline.domain.user import Principal


def idempotent_request(
    request: Request, caller: Principal, params: Mapping[str, object]
) -> IdempotentRequest:
    """The key as sent (the use case validates it, after its own permission
    checks) and the fingerprint of the request. ``params`` are the parsed
    path and body values, already JSON-ready (strings, ints, None)."""
    key = request.headers.get("idempotency-key", "")
    route = request.scope.get("route")
    template = route.path if isinstance(route, APIRoute) else request.url.path
    canonical = json.dumps(
        {"op": f"{request.method} {template}", "caller": str(caller.user_id), "params": params},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=True,
    )
    return IdempotentRequest(key, f"sha256:{hashlib.sha256(canonical.encode()).hexdigest()}")
