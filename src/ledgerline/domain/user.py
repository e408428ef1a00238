"""The user entity and its value objects."""

from __future__ import annotations

import unicodedata
import uuid
from dataclasses import dataclass
from datetime import datetime

from email_validator import EmailNotValidError, validate_email

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
        try:
            # Syntax only: deliverability would need DNS, which is I/O.
            checked = validate_email(value, check_deliverability=False)
        except EmailNotValidError as exc:
            raise InvalidArgumentError.for_field("email", str(exc)) from exc
        local = unicodedata.normalize("NFC", checked.local_part).lower()
        return cls(value, f"{local}@{checked.ascii_domain.lower()}")

    @property
    def normalized(self) -> str:
        """The uniqueness key."""
        return self.key


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
