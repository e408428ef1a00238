"""API.md's error table: one row per stable code, read by every transport."""

from __future__ import annotations

from typing import NamedTuple

# All a client learns of a failure nobody meant (API.md: every 5xx, and
# gRPC's INTERNAL, says only this).
INTERNAL_MESSAGE = "internal server error"


class ErrorMapping(NamedTuple):
    http_status: int
    grpc_status: str


ERROR_TABLE: dict[str, ErrorMapping] = {
    "invalid_argument": ErrorMapping(400, "INVALID_ARGUMENT"),
    "unauthenticated": ErrorMapping(401, "UNAUTHENTICATED"),
    "permission_denied": ErrorMapping(403, "PERMISSION_DENIED"),
    "not_found": ErrorMapping(404, "NOT_FOUND"),
    "conflict": ErrorMapping(409, "ALREADY_EXISTS"),
    "payment_in_progress": ErrorMapping(409, "ABORTED"),
    "failed_precondition": ErrorMapping(409, "FAILED_PRECONDITION"),
    "idempotency_mismatch": ErrorMapping(422, "INVALID_ARGUMENT"),
    "insufficient_funds": ErrorMapping(402, "FAILED_PRECONDITION"),
    "rate_limited": ErrorMapping(429, "RESOURCE_EXHAUSTED"),
    "deadline_exceeded": ErrorMapping(504, "DEADLINE_EXCEEDED"),
    "unavailable": ErrorMapping(503, "UNAVAILABLE"),
    "internal": ErrorMapping(500, "INTERNAL"),
}

# Protocol-level HTTP failures that no use case raises; codes of their own so
# that every non-2xx body still carries {"message", "code"}.
HTTP_ONLY_CODES: dict[int, str] = {
    400: "invalid_argument",
    401: "unauthenticated",
    403: "permission_denied",
    404: "not_found",
    405: "method_not_allowed",
    408: "request_timeout",
    413: "payload_too_large",
    415: "unsupported_media_type",
    431: "request_header_fields_too_large",
    500: "internal",
    503: "unavailable",
    504: "deadline_exceeded",
}


def mapping_for(code: str) -> ErrorMapping:
    return ERROR_TABLE.get(code, ERROR_TABLE["internal"])
