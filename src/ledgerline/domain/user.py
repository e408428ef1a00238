"""The user entity and its value objects."""

from __future__ import annotations

import re
import unicodedata
import uuid
from dataclasses import dataclass
from datetime import datetime

from email_validator import SPECIAL_USE_DOMAIN_NAMES, EmailNotValidError, validate_email

from ledgerline.domain.errors import InvalidArgumentError
from ledgerline.domain.validation import check_text

EMAIL_MAX_LENGTH = 254
PASSWORD_MIN_LENGTH = 8
PASSWORD_MAX_LENGTH = 128
NAME_MAX_LENGTH = 100

UserId = uuid.UUID


@dataclass(frozen=True, slots=True)
class Email:
    """An email address as the user typed it (trimmed), and the key it is
    compared by: the local part in Unicode NFC and lower case, the domain in
    its ASCII (IDNA) form. Two spellings of one address share a key."""

    value: str
    key: str = ""

    def __post_init__(self) -> None:
        if not self.key:  # built from a trusted value (a stored row, a test)
            object.__setattr__(self, "key", unicodedata.normalize("NFC", self.value).lower())

    @classmethod
    def parse(cls, raw: str) -> Email:
        value = check_text("email", raw).strip()
        if not value:
            raise InvalidArgumentError.for_field("email", "must not be empty")
        if len(value) > EMAIL_MAX_LENGTH:
            raise InvalidArgumentError.for_field(
                "email", f"must be at most {EMAIL_MAX_LENGTH} characters"
            )
        return cls(value, _plain_ascii_key(value) or _validated_key(value))

    @property
    def normalized(self) -> str:
        """The uniqueness key."""
        return self.key


def _validated_key(value: str) -> str:
    """email-validator's verdict on the address, and its key."""
    try:
        # Syntax only: deliverability would need DNS, which is I/O.
        checked = validate_email(value, check_deliverability=False)
    except EmailNotValidError as exc:
        raise InvalidArgumentError.for_field("email", str(exc)) from exc
    local = unicodedata.normalize("NFC", checked.local_part).lower()
    return f"{local}@{checked.ascii_domain.lower()}"


# Most addresses are plain ASCII: a dot-atom local part, an @ and a host name
# of letters, digits and hyphens whose last label ends with a letter. Of
# those, email-validator (with the defaults used above) accepts every one
# but those under a special-use domain and those whose domain has "--" in it
# (Punycode, and the labels RFC 5890 reserves, which it looks at closer);
# and its key for them is the address lower-cased: its Unicode checks and
# IDNA mapping change nothing in ASCII. It spends about 20 microseconds
# finding that out, most of a bulk import's time, so such an address is
# decided here; any other goes to email-validator.
# tests/unit/test_email_fast_path.py holds the two to the same answers.
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_LAST_LABEL = r"(?:[A-Za-z]|[A-Za-z0-9][A-Za-z0-9-]{0,61}[A-Za-z])"
_PLAIN_ASCII_ADDRESS = re.compile(rf"{_ATEXT}+(?:\.{_ATEXT}+)*@(?:{_LABEL}\.)+{_LAST_LABEL}")
_SPECIAL_USE_SUFFIXES = tuple(f".{name}" for name in SPECIAL_USE_DOMAIN_NAMES)


def _plain_ascii_key(value: str) -> str | None:
    """The key of a plain ASCII address that email-validator accepts (the
    caller has checked its length), or None: email-validator decides."""
    if _PLAIN_ASCII_ADDRESS.fullmatch(value) is None or "--" in value.partition("@")[2]:
        return None
    key = value.lower()
    if key.endswith(_SPECIAL_USE_SUFFIXES):
        return None
    return key


def parse_name(raw: str) -> str:
    name = check_text("name", raw).strip()
    if not 1 <= len(name) <= NAME_MAX_LENGTH:
        raise InvalidArgumentError.for_field(
            "name", f"must be 1 to {NAME_MAX_LENGTH} characters after trimming"
        )
    return name


def check_password(raw: str) -> str:
    check_text("password", raw)
    if not PASSWORD_MIN_LENGTH <= len(raw) <= PASSWORD_MAX_LENGTH:
        raise InvalidArgumentError.for_field(
            "password", f"must be {PASSWORD_MIN_LENGTH} to {PASSWORD_MAX_LENGTH} characters"
        )
    return raw


@dataclass(frozen=True, slots=True)
class User:
    id: UserId
    email: Email
    name: str
    password_hash: str
    is_admin: bool
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: what a verified access token says."""

    user_id: UserId
    is_admin: bool


@dataclass(frozen=True, slots=True)
class AccessToken:
    token: str
    expires_in: int
