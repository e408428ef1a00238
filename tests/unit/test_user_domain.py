"""The user's value objects: what a valid email, name and password are."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from ledgerline.domain.errors import FieldViolation, InvalidArgumentError
from ledgerline.domain.user import Email, check_password, parse_name
from ledgerline.domain.validation import collect_violations

# A syntactically valid address of exactly 254 characters: a 64-character
# local part (the most RFC 5321 allows) and a 189-character domain.
LONGEST_EMAIL = "a" * 64 + "@" + "b" * 63 + "." + "c" * 63 + "." + "d" * 57 + ".com"
TOO_LONG_EMAIL = "a" * 64 + "@" + "b" * 63 + "." + "c" * 63 + "." + "d" * 58 + ".com"

VALID_EMAILS: dict[str, tuple[str, str, str]] = {
    # id: (raw, kept value, normalized)
    "plain": ("ada@example.com", "ada@example.com", "ada@example.com"),
    "trims-spaces": ("  ada@example.com  ", "ada@example.com", "ada@example.com"),
    "trims-tabs-and-newlines": ("\tada@example.com\n", "ada@example.com", "ada@example.com"),
    "keeps-case-normalizes-lower": ("Ada.L@Example.COM", "Ada.L@Example.COM", "ada.l@example.com"),
    "plus-tag": ("ada+tag@example.com", "ada+tag@example.com", "ada+tag@example.com"),
    "subdomain": ("ada@mail.example.co.uk", "ada@mail.example.co.uk", "ada@mail.example.co.uk"),
    "exactly-254-chars": (LONGEST_EMAIL, LONGEST_EMAIL, LONGEST_EMAIL),
    "non-ascii-lower-cased": ("Éva@example.com", "Éva@example.com", "éva@example.com"),
    "decomposed-is-composed": ("e\u0301va@example.com", "e\u0301va@example.com", "éva@example.com"),
    "unicode-domain-as-idna": ("ada@exämple.com", "ada@exämple.com", "ada@xn--exmple-cua.com"),
    "idna-domain-kept": (
        "ada@XN--EXMPLE-CUA.com",
        "ada@XN--EXMPLE-CUA.com",
        "ada@xn--exmple-cua.com",
    ),
}


def test_two_spellings_of_one_address_share_a_key() -> None:
    spellings = ["ünï@exämple.com", "u\u0308ni\u0308@exa\u0308mple.com", "ÜNÏ@xn--exmple-cua.com"]
    assert len({Email.parse(s).normalized for s in spellings}) == 1


@pytest.mark.parametrize(
    ("raw", "value", "normalized"), list(VALID_EMAILS.values()), ids=list(VALID_EMAILS)
)
def test_email_parse_accepts(raw: str, value: str, normalized: str) -> None:
    email = Email.parse(raw)

    assert email.value == value
    assert email.normalized == normalized


INVALID_EMAILS: dict[str, str] = {
    "empty": "",
    "whitespace-only": "   ",
    "too-long-255-chars": TOO_LONG_EMAIL,
    "too-long-after-trim-still": "  " + TOO_LONG_EMAIL + "  ",
    "no-at-sign": "no-at-sign",
    "nothing-after-at": "a@",
    "nothing-before-at": "@b.com",
    "space-in-local-part": "a b@c.com",
    "two-at-signs": "a@b@c.com",
    "domain-without-dot": "a@localhost",
    "double-dot-in-local-part": "a..b@c.com",
}


@pytest.mark.parametrize("raw", list(INVALID_EMAILS.values()), ids=list(INVALID_EMAILS))
def test_email_parse_rejects(raw: str) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        Email.parse(raw)

    assert caught.value.code == "invalid_argument"
    assert [d.field for d in caught.value.details] == ["email"]


def test_email_too_long_says_the_limit() -> None:
    assert len(TOO_LONG_EMAIL) == 255
    with pytest.raises(InvalidArgumentError) as caught:
        Email.parse(TOO_LONG_EMAIL)

    assert "254" in caught.value.details[0].message


VALID_NAMES: dict[str, tuple[str, str]] = {
    # id: (raw, parsed)
    "one-char": ("A", "A"),
    "plain": ("Ada Lovelace", "Ada Lovelace"),
    "trimmed": ("  Ada  ", "Ada"),
    "100-chars": ("n" * 100, "n" * 100),
    "100-chars-after-trim": ("  " + "n" * 100 + "\t", "n" * 100),
    "non-ascii": ("Zoë Ŝmith", "Zoë Ŝmith"),
}


@pytest.mark.parametrize(("raw", "parsed"), list(VALID_NAMES.values()), ids=list(VALID_NAMES))
def test_parse_name_accepts(raw: str, parsed: str) -> None:
    assert parse_name(raw) == parsed


INVALID_NAMES: dict[str, str] = {
    "empty": "",
    "spaces-only": "    ",
    "mixed-whitespace-only": " \t\n ",
    "101-chars": "n" * 101,
}


@pytest.mark.parametrize("raw", list(INVALID_NAMES.values()), ids=list(INVALID_NAMES))
def test_parse_name_rejects(raw: str) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        parse_name(raw)

    assert [d.field for d in caught.value.details] == ["name"]


VALID_PASSWORDS: dict[str, str] = {
    "8-chars": "p" * 8,
    "128-chars": "p" * 128,
    "spaces-count-as-characters": "  pass  ",
    "non-ascii": "pässwörd",
}


@pytest.mark.parametrize("raw", list(VALID_PASSWORDS.values()), ids=list(VALID_PASSWORDS))
def test_check_password_accepts_unchanged(raw: str) -> None:
    assert check_password(raw) == raw


INVALID_PASSWORDS: dict[str, str] = {
    "empty": "",
    "7-chars": "p" * 7,
    "129-chars": "p" * 129,
}


@pytest.mark.parametrize("raw", list(INVALID_PASSWORDS.values()), ids=list(INVALID_PASSWORDS))
def test_check_password_rejects(raw: str) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        check_password(raw)

    assert [d.field for d in caught.value.details] == ["password"]


def _email(raw: str) -> Callable[[], Email]:
    return lambda: Email.parse(raw)


def _name(raw: str) -> Callable[[], str]:
    return lambda: parse_name(raw)


def _password(raw: str) -> Callable[[], str]:
    return lambda: check_password(raw)


def _fails_without_field() -> str:
    raise InvalidArgumentError("something is off")


COLLECTED_FAILURES: dict[str, tuple[tuple[Callable[[], object], ...], list[str]]] = {
    # id: (checks, fields reported, in order)
    "all-three-bad": (
        (_email("nope"), _name(""), _password("short")),
        ["email", "name", "password"],
    ),
    "first-and-last-bad": (
        (_email(""), _name("Ada"), _password("p" * 129)),
        ["email", "password"],
    ),
    "only-middle-bad": ((_email("a@b.com"), _name(" "), _password("password")), ["name"]),
    "two-checks-both-bad": ((_name("n" * 101), _password("")), ["name", "password"]),
    "error-without-details-has-empty-field": ((_name("Ada"), _fails_without_field), [""]),
}


@pytest.mark.parametrize(
    ("checks", "fields"), list(COLLECTED_FAILURES.values()), ids=list(COLLECTED_FAILURES)
)
def test_collect_violations_reports_every_failing_field(
    checks: tuple[Callable[[], object], ...], fields: list[str]
) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        collect_violations(*checks)

    assert [d.field for d in caught.value.details] == fields
    for detail in caught.value.details:
        assert detail.message
        assert detail.message in caught.value.message


def test_collect_violations_returns_values_in_order_when_all_pass() -> None:
    email, name, password = collect_violations(
        _email(" Ada@Example.com "), _name(" Ada "), _password("password1")
    )

    assert (email, name, password) == (Email.parse("Ada@Example.com"), "Ada", "password1")


def test_collect_violations_keeps_each_checks_own_message() -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        collect_violations(_name(""), _password(""))

    with pytest.raises(InvalidArgumentError) as name_alone:
        parse_name("")
    with pytest.raises(InvalidArgumentError) as password_alone:
        check_password("")
    assert caught.value.details == (
        FieldViolation("name", name_alone.value.details[0].message),
        FieldViolation("password", password_alone.value.details[0].message),
    )
