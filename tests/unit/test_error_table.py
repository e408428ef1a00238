"""Every domain error has a row in the one error table, and the table is
API.md's, status for status."""

from __future__ import annotations

import inspect

import pytest

from ledgerline.delivery.error_table import ERROR_TABLE, ErrorMapping, mapping_for
from ledgerline.domain import errors

# API.md, "Errors": code -> (HTTP status, gRPC status), written out by hand.
API_MD_TABLE: dict[str, tuple[int, str]] = {
    "invalid_argument": (400, "INVALID_ARGUMENT"),
    "unauthenticated": (401, "UNAUTHENTICATED"),
    "permission_denied": (403, "PERMISSION_DENIED"),
    "not_found": (404, "NOT_FOUND"),
    "conflict": (409, "ALREADY_EXISTS"),
    "payment_in_progress": (409, "ABORTED"),
    "failed_precondition": (409, "FAILED_PRECONDITION"),
    "idempotency_mismatch": (422, "INVALID_ARGUMENT"),
    "insufficient_funds": (402, "FAILED_PRECONDITION"),
    "rate_limited": (429, "RESOURCE_EXHAUSTED"),
    "deadline_exceeded": (504, "DEADLINE_EXCEEDED"),
    "unavailable": (503, "UNAVAILABLE"),
    "internal": (500, "INTERNAL"),
}

DOMAIN_ERRORS: dict[str, type[errors.DomainError]] = {
    name: cls
    for name, cls in inspect.getmembers(errors, inspect.isclass)
    if issubclass(cls, errors.DomainError) and cls.__module__ == errors.__name__
}


def test_the_domain_error_module_was_found() -> None:
    assert "DomainError" in DOMAIN_ERRORS
    assert len(DOMAIN_ERRORS) == len(API_MD_TABLE)


@pytest.mark.parametrize("error", list(DOMAIN_ERRORS.values()), ids=list(DOMAIN_ERRORS))
def test_every_domain_error_code_is_in_the_table(error: type[errors.DomainError]) -> None:
    assert error.code in ERROR_TABLE
    assert error.code in API_MD_TABLE


def test_domain_error_codes_are_distinct() -> None:
    codes = [cls.code for cls in DOMAIN_ERRORS.values()]

    assert len(codes) == len(set(codes))


def test_every_table_code_is_raised_by_some_domain_error() -> None:
    assert {cls.code for cls in DOMAIN_ERRORS.values()} == set(ERROR_TABLE)


def test_table_has_exactly_api_md_codes() -> None:
    assert set(ERROR_TABLE) == set(API_MD_TABLE)


@pytest.mark.parametrize(
    ("code", "http_status", "grpc_status"),
    [(code, http, grpc) for code, (http, grpc) in API_MD_TABLE.items()],
    ids=list(API_MD_TABLE),
)
def test_table_row_matches_api_md(code: str, http_status: int, grpc_status: str) -> None:
    assert ERROR_TABLE[code] == ErrorMapping(http_status, grpc_status)
    assert mapping_for(code) == ErrorMapping(http_status, grpc_status)


def test_unknown_code_maps_to_internal() -> None:
    assert mapping_for("no_such_code") == ErrorMapping(500, "INTERNAL")


@pytest.mark.parametrize("error", list(DOMAIN_ERRORS.values()), ids=list(DOMAIN_ERRORS))
def test_every_domain_error_has_a_safe_default_message(error: type[errors.DomainError]) -> None:
    raised = error()

    assert raised.message == error.default_message
    assert raised.message
