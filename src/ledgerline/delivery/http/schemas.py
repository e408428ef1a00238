"""Wire shapes of the REST API and what OpenAPI says of them.

Validation of business rules stays in the domain: a constraint the domain
enforces is *described* here (json_schema_extra), built from the domain's
own constants and patterns, so that the document calls valid exactly what
the service accepts without pydantic enforcing it a second time. What
pydantic enforces itself (types, the generous raw-length ceilings) it also
documents."""

from __future__ import annotations

import string
import uuid
from collections.abc import Iterable
from datetime import datetime
from typing import Annotated, Any, Literal

from email_validator import SPECIAL_USE_DOMAIN_NAMES
from pydantic import BaseModel, ConfigDict, Field
from typing_extensions import TypeAliasType

from ledgerline.domain.idempotency import IDEMPOTENCY_KEY_PATTERN
from ledgerline.domain.ledger import CURSOR_PATTERN, Balance, Credit, EntryPage
from ledgerline.domain.money import ISO_4217, MAX_AMOUNT
from ledgerline.domain.order import DESCRIPTION_MAX_LENGTH, Order
from ledgerline.domain.user import (
    EMAIL_MAX_LENGTH,
    NAME_MAX_LENGTH,
    PASSWORD_MAX_LENGTH,
    PASSWORD_MIN_LENGTH,
    User,
)
from ledgerline.usecase.payments import ENTRIES_DEFAULT_LIMIT, ENTRIES_MAX_LIMIT

# Generous ceilings against abuse, enforced here; the precise rules live in
# the domain.
_MAX_TEXT = 1024

# The characters str.strip() removes (str.isspace()), spelled out: "\s"
# means different sets in ECMA 262 (the patterns' dialect) and in Python.
WHITESPACE = r"\t-\r\x1c- \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
# Any character but NUL, which PostgreSQL cannot store. (Lone surrogates
# are refused too, but JSON text in UTF-8 cannot carry them unescaped, and
# ECMA 262 patterns without the "u" flag cannot name them.)
_TEXT = r"[^\x00]"


def trimmed_text_pattern(max_length: int, *, required: bool) -> str:
    """Text that is ``1..max_length`` characters (``0..`` unless required)
    once surrounding whitespace is trimmed, with no NUL anywhere."""
    edge = rf"[^{WHITESPACE}\x00]"
    core = f"{edge}(?:{_TEXT}{{0,{max_length - 2}}}{edge})?"
    return f"^[{WHITESPACE}]*{core if required else f'(?:{core})?'}[{WHITESPACE}]*$"


def _described(**schema: Any) -> Any:
    """A Field that documents ``schema`` (JSON Schema keywords) without
    pydantic enforcing it; pydantic's own keywords stay as given."""
    enforced = {k: schema.pop(k) for k in ("max_length", "strict", "default") if k in schema}
    return Field(json_schema_extra=schema, **enforced)


NO_NUL = r"^[^\x00]*$"

# The portable core of what the domain's email check (email-validator, no
# DNS) accepts, for clients and generators: a local part of one or two
# dot-separated atoms of ASCII, a lower-case ASCII domain of two to four
# labels (single hyphens only, so never the "--" of Punycode), the last of
# letters and not a special-use name (RFC 6761 and others: test, localhost,
# ...). Everything it matches is accepted; the service accepts more
# (internationalised addresses, upper-case domains, longer forms), as the
# field's description says. No lookarounds: generators cannot draw from
# them.
# The checker's own list, so that a name it adds is left out here too.
_SPECIAL_USE_TLDS = tuple(SPECIAL_USE_DOMAIN_NAMES)
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]"
_LABEL = r"[a-z0-9]{1,20}(?:-[a-z0-9]{1,20})?"


def letters_except(words: tuple[str, ...], longest: int) -> str:
    """A pattern for 2..longest lower-case letters that is none of ``words``
    (all of them that long or shorter), spelled without lookarounds: for
    each length, the strings that leave every word's path somewhere."""
    alternatives: list[str] = []
    free: list[tuple[int, int]] = []  # runs of lengths no word has: any letters
    for length in range(2, longest + 1):
        same = [w for w in words if len(w) == length]
        if same:
            alternatives.append(_avoiding("", same, length))
        elif free and free[-1][1] == length - 1:
            free[-1] = (free[-1][0], length)
        else:
            free.append((length, length))
    alternatives += [f"[a-z]{{{low},{high}}}" for low, high in free]
    return "(?:" + "|".join(alternatives) + ")"


def _avoiding(prefix: str, words: list[str], length: int) -> str:
    """What follows ``prefix`` in strings of ``length`` letters that are
    none of ``words`` (all of that length, all starting with ``prefix``)."""
    depth = len(prefix)
    rest = length - depth - 1
    nexts = sorted({word[depth] for word in words})
    others = _letter_class(c for c in string.ascii_lowercase if c not in nexts)
    branches = [others + (f"[a-z]{{{rest}}}" if rest else "")]
    if rest:  # one more letter of some word here, then leave it later
        for c in nexts:
            following = [word for word in words if word[depth] == c]
            branches.append(c + _avoiding(prefix + c, following, length))
    return "(?:" + "|".join(branches) + ")"


def _letter_class(letters: Iterable[str]) -> str:
    """[b-su-z] rather than [bcdefghijklmnopqrsuvwxyz]."""
    runs: list[list[str]] = []
    for letter in letters:
        if runs and ord(letter) == ord(runs[-1][-1]) + 1:
            runs[-1].append(letter)
        else:
            runs.append([letter])
    return "[" + "".join(r[0] if len(r) == 1 else f"{r[0]}-{r[-1]}" for r in runs) + "]"


EMAIL_PATTERN = (
    f"^{_ATEXT}{{1,30}}(?:\\.{_ATEXT}{{1,30}})?"
    f"@(?:{_LABEL}\\.){{1,3}}{letters_except(_SPECIAL_USE_TLDS, 24)}$"
)
CURRENCIES = sorted(ISO_4217)


class RegisterRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    email: str = _described(
        max_length=_MAX_TEXT,
        format="email",
        maxLength=EMAIL_MAX_LENGTH,
        pattern=EMAIL_PATTERN,
        description="An email address, unique case-insensitively. The pattern is the "
        "portable core of the addresses accepted; internationalised addresses, upper-case "
        "domains and surrounding whitespace (trimmed) are accepted too.",
        examples=["ada@example.com"],
    )
    password: str = _described(
        max_length=_MAX_TEXT,
        minLength=PASSWORD_MIN_LENGTH,
        maxLength=PASSWORD_MAX_LENGTH,
        pattern=NO_NUL,
        description=f"{PASSWORD_MIN_LENGTH} to {PASSWORD_MAX_LENGTH} characters, no NUL.",
        examples=["correct horse battery"],
    )
    name: str = _described(
        max_length=_MAX_TEXT,
        minLength=1,
        pattern=trimmed_text_pattern(NAME_MAX_LENGTH, required=True),
        description=f"1 to {NAME_MAX_LENGTH} characters once surrounding whitespace is "
        f"trimmed (and stored trimmed); no NUL. At most {_MAX_TEXT} as sent.",
        examples=["Ada Lovelace"],
    )


class TokenRequest(BaseModel):
    """Anything within the ceilings is a login attempt: a malformed email or
    a wrong password is 401, never 400 (docs/decisions.md)."""

    model_config = ConfigDict(extra="ignore")

    email: str = Field(max_length=_MAX_TEXT, examples=["ada@example.com"])
    password: str = Field(max_length=_MAX_TEXT, examples=["correct horse battery"])


class TokenResponse(BaseModel):
    access_token: str
    token_type: Literal["Bearer"] = "Bearer"  # noqa: S105
    expires_in: int = Field(gt=0, description="Seconds until the token expires.")


class UserResponse(BaseModel):
    id: uuid.UUID
    email: str
    name: str
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, user: User) -> UserResponse:
        return cls(
            id=user.id,
            email=user.email.value,
            name=user.name,
            created_at=user.created_at,
            updated_at=user.updated_at,
        )


class ErrorDetail(BaseModel):
    field: str
    message: str


class ErrorResponse(BaseModel):
    message: str = Field(min_length=1)
    code: str = Field(min_length=1, description="A stable machine code (API.md's table).")
    details: list[ErrorDetail] | None = None


class HealthResponse(BaseModel):
    status: Literal["ok"] = "ok"


class ReadinessResponse(BaseModel):
    status: Literal["ok"] = "ok"
    checks: dict[str, str]


class NotReadyResponse(ErrorResponse):
    checks: dict[str, str]


# Wallets and payments --------------------------------------------------------

# Strict: a JSON 12.0, "12" or true is not an amount. Money is never a float.
Amount = Annotated[
    int,
    _described(
        strict=True,
        minimum=1,
        maximum=MAX_AMOUNT,
        description="Minor units of the currency.",
        examples=[1299],
    ),
]
# A named alias: one Currency schema in the document (one enum in a
# generated client), referenced by every body that takes a currency.
Currency = TypeAliasType(
    "Currency",
    Annotated[
        str,
        _described(
            max_length=16,
            enum=CURRENCIES,
            description="An active ISO 4217 code, upper case.",
            examples=["EUR"],
        ),
    ],
)
# In answers: what was stored, whatever the list of active codes is today.
StoredCurrency = Annotated[str, Field(pattern="^[A-Z]{3}$", examples=["EUR"])]


class CreditRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    user_id: uuid.UUID
    amount: Amount
    currency: Currency


class CreditResponse(BaseModel):
    entry_id: uuid.UUID
    user_id: uuid.UUID
    amount: int = Field(ge=1, le=MAX_AMOUNT)
    currency: StoredCurrency
    balance: int = Field(ge=0)

    @classmethod
    def of(cls, credit: Credit) -> CreditResponse:
        return cls(
            entry_id=credit.entry_id,
            user_id=credit.user_id,
            amount=credit.money.amount,
            currency=credit.money.currency,
            balance=credit.balance,
        )


class BalanceResponse(BaseModel):
    currency: StoredCurrency
    amount: int = Field(ge=0)


class WalletResponse(BaseModel):
    balances: list[BalanceResponse]

    @classmethod
    def of(cls, balances: list[Balance]) -> WalletResponse:
        return cls(
            balances=[BalanceResponse(currency=b.currency, amount=b.amount) for b in balances]
        )


class EntryResponse(BaseModel):
    id: uuid.UUID
    kind: Literal["credit", "payment", "refund"]
    amount: int = Field(description="Signed: money out is negative.")
    currency: StoredCurrency
    balance_after: int = Field(ge=0)
    order_id: uuid.UUID | None
    created_at: datetime


class EntriesResponse(BaseModel):
    entries: list[EntryResponse]
    next_cursor: str | None = Field(
        description="The cursor of the next page; null on the last page.",
        json_schema_extra={"pattern": CURSOR_PATTERN},
    )

    @classmethod
    def of(cls, page: EntryPage) -> EntriesResponse:
        return cls(
            entries=[
                EntryResponse(
                    id=e.id,
                    kind=e.kind.value,
                    amount=e.amount,
                    currency=e.currency,
                    balance_after=e.balance_after,
                    order_id=e.order_id,
                    created_at=e.created_at,
                )
                for e in page.entries
            ],
            next_cursor=page.next_cursor,
        )


class CreateOrderRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    payee_id: uuid.UUID
    amount: Amount
    currency: Currency
    description: str | None = _described(
        default=None,
        max_length=_MAX_TEXT,
        pattern=trimmed_text_pattern(DESCRIPTION_MAX_LENGTH, required=False),
        description=f"At most {DESCRIPTION_MAX_LENGTH} characters once surrounding whitespace "
        "is trimmed (and stored trimmed; an empty one is stored as null); no NUL. "
        f"At most {_MAX_TEXT} as sent.",
    )


class OrderResponse(BaseModel):
    id: uuid.UUID
    payer_id: uuid.UUID
    payee_id: uuid.UUID
    amount: int = Field(ge=1, le=MAX_AMOUNT)
    currency: StoredCurrency
    description: str | None = Field(max_length=DESCRIPTION_MAX_LENGTH)
    status: Literal["pending", "paid", "refunded", "expired"]
    created_at: datetime
    updated_at: datetime
    paid_at: datetime | None

    @classmethod
    def of(cls, order: Order) -> OrderResponse:
        return cls(
            id=order.id,
            payer_id=order.payer_id,
            payee_id=order.payee_id,
            amount=order.money.amount,
            currency=order.money.currency,
            description=order.description,
            status=order.status.value,
            created_at=order.created_at,
            updated_at=order.updated_at,
            paid_at=order.paid_at,
        )


# Documentation of what the routes read themselves -----------------------------
#
# Parameters that a route reads from the request (so that its use case can
# check the caller's permission before the value) are documented here, in
# OpenAPI's own terms, rather than declared to the framework.

IDEMPOTENCY_KEY_PARAMETER: dict[str, Any] = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": True,
    "description": "1-255 visible ASCII characters; a retry with the same key and the "
    "same request replays the first answer, with another request it is 422.",
    "schema": {
        "type": "string",
        "minLength": 1,
        "maxLength": 255,
        "pattern": IDEMPOTENCY_KEY_PATTERN,
    },
}

EMAIL_QUERY_PARAMETER: dict[str, Any] = {
    "name": "email",
    "in": "query",
    "required": True,
    "description": "The address to look up, compared case-insensitively.",
    "schema": {
        "type": "string",
        "format": "email",
        "maxLength": EMAIL_MAX_LENGTH,
        "pattern": EMAIL_PATTERN,
    },
}

ENTRIES_QUERY_PARAMETERS: list[dict[str, Any]] = [
    {
        "name": "limit",
        "in": "query",
        "required": False,
        "description": f"Entries per page, 1 to {ENTRIES_MAX_LIMIT}, written in decimal digits.",
        "schema": {
            "type": "integer",
            "minimum": 1,
            "maximum": ENTRIES_MAX_LIMIT,
            "default": ENTRIES_DEFAULT_LIMIT,
        },
    },
    {
        "name": "cursor",
        "in": "query",
        "required": False,
        "description": "The next_cursor of the previous page, exactly as it was given.",
        "schema": {"type": "string", "pattern": CURSOR_PATTERN},
    },
]

_ERROR_MEANINGS = {
    400: "invalid_argument: bad input; `details` names each bad field",
    401: "unauthenticated: no valid bearer token (or, at login, bad credentials)",
    402: "insufficient_funds",
    403: "permission_denied",
    404: "not_found",
    409: "conflict, payment_in_progress or failed_precondition",
    413: "payload_too_large: the body is over 64 KiB",
    415: "unsupported_media_type: the body is not application/json in UTF-8",
    422: "idempotency_mismatch: the Idempotency-Key was used with another request",
    429: "rate_limited: too many calls; try again after Retry-After seconds",
    500: "internal",
    503: "unavailable: a dependency is down, or the server is stopping; retry",
    504: "deadline_exceeded",
}
_UNAUTHENTICATED_HEADERS = {
    "WWW-Authenticate": {"description": "Bearer", "schema": {"type": "string"}}
}
_RATE_LIMITED_HEADERS = {
    "Retry-After": {
        "description": "Whole seconds (at least 1) until the call may be tried again",
        "schema": {"type": "integer", "minimum": 1},
    }
}
# What any request may meet, whatever the operation.
_ALWAYS = (500, 503, 504)


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The error answers an operation can give, each with the error body."""
    responses: dict[int | str, dict[str, Any]] = {}
    for status in sorted({*statuses, *_ALWAYS}):
        response: dict[str, Any] = {"model": ErrorResponse, "description": _ERROR_MEANINGS[status]}
        if status == 401:
            response["headers"] = _UNAUTHENTICATED_HEADERS
        elif status == 429:
            response["headers"] = _RATE_LIMITED_HEADERS
        responses[status] = response
    return responses


def created_responses(location: str) -> dict[int | str, dict[str, Any]]:
    """A 201's Location header."""
    header = {"description": location, "schema": {"type": "string"}}
    return {201: {"headers": {"Location": header}}}
