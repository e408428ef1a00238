"""Idempotency keys: what a client sends to make a retry safe."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
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


# The operations a key can make safe to retry, by name: a key used over one
# transport replays over any other.
ORDER_PAY = "order.pay"
ORDER_REFUND = "order.refund"
WALLET_CREDIT = "wallet.credit"

# Records written before the fingerprint left the HTTP layer name their
# operation by the transfer kind, and hashed the REST method and route in
# its place. They still replay until they expire (the retention period);
# after one retention period this table can go.
_EARLIER = {
    ORDER_PAY: ("payment", "POST /v1/orders/{order_id}/pay"),
    ORDER_REFUND: ("refund", "POST /v1/orders/{order_id}/refund"),
    WALLET_CREDIT: ("credit", "POST /v1/admin/credits"),
}


@dataclass(frozen=True, slots=True)
class IdempotentRequest:
    """A request a key makes safe to retry: the key as the client sent it
    (the use case validates it with parse_idempotency_key, after its own
    permission checks), the operation, and a fingerprint of what was asked:
    operation, caller and parsed parameters in canonical JSON, hashed. Built
    from what the request means, not how it was spelled or which transport
    carried it: a retry that writes a UUID in another form, orders its JSON
    differently, or comes over gRPC after REST, is the same request."""

    key: str
    operation: str
    fingerprint: str
    caller: UserId
    params: Mapping[str, object]

    @classmethod
    def of(
        cls, key: str, operation: str, caller: UserId, params: Mapping[str, object]
    ) -> IdempotentRequest:
        """``params``: the parsed parameters, JSON-ready (str, int, None)."""
        return cls(key, operation, _fingerprint(operation, caller, params), caller, params)

    def matches(self, record: IdempotencyRecord) -> bool:
        """Whether ``record`` was stored by this same request."""
        if record.operation == self.operation:
            return record.fingerprint == self.fingerprint
        # Hashed again the previous release's way only for such a record:
        # a pay does not pay for the compatibility.
        earlier_operation, route = _EARLIER[self.operation]
        return record.operation == earlier_operation and (
            record.fingerprint == _fingerprint(route, self.caller, self.params)
        )


def _fingerprint(operation: str, caller: UserId, params: Mapping[str, object]) -> str:
    canonical = json.dumps(
        {"op": operation, "caller": str(caller), "params": params},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=True,
    )
    return f"sha256:{hashlib.sha256(canonical.encode()).hexdigest()}"


@dataclass(frozen=True, slots=True)
class IdempotencyRecord:
    caller_id: UserId
    key: str
    fingerprint: str
    operation: str
    result: dict[str, Any]
    created_at: datetime
    expires_at: datetime
