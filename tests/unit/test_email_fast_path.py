"""Email.parse decides plain ASCII addresses itself, without email-validator
(a bulk import's largest cost). These tests hold it to the answers Email.parse
gave before, when email-validator decided every address: the same addresses
accepted, with the same keys, the same refused. Registration and the import
both parse through Email.parse, so they keep the same rules."""

from __future__ import annotations

import string
import unicodedata

import pytest
from email_validator import EmailNotValidError, validate_email
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ledgerline.domain.errors import InvalidArgumentError
from ledgerline.domain.user import EMAIL_MAX_LENGTH, Email, _plain_ascii_key
from ledgerline.domain.validation import check_text


def previous_parse(raw: str) -> tuple[str, str] | None:
    """Email.parse before the fast path (its value and key), None where it refused."""
    try:
        value = check_text("email", raw).strip()
    except InvalidArgumentError:
        return None
    if not value or len(value) > EMAIL_MAX_LENGTH:
        return None
    try:
        checked = validate_email(value, check_deliverability=False)
    except EmailNotValidError:
        return None
    local = unicodedata.normalize("NFC", checked.local_part).lower()
    return value, f"{local}@{checked.ascii_domain.lower()}"


def parse_now(raw: str) -> tuple[str, str] | None:
    try:
        email = Email.parse(raw)
    except InvalidArgumentError:
        return None
    return email.value, email.key


ATEXT = string.ascii_letters + string.digits + "!#$%&'*+/=?^_`{|}~-"
# What an address must not have, or may have only in places: each is a
# way for a plain-looking address not to be plain.
TRICKY = '.@"<>()[]\\,;: \t\x7fé\u0301\u00a0\uff20\u2024'
HOST = string.ascii_letters + string.digits + "-"
SPECIAL_LABELS = [
    "xn--exmple-cua",
    "XN--EXMPLE-CUA",
    "xn--",
    "ab--cd",
    "a--b",
    "a-",
    "-a",
    "1",
    "123",
    "com",
    "COM",
    "test",
    "Test",
    "localhost",
    "arpa",
    "invalid",
    "local",
    "onion",
    "example",
    "exämple",
    "a_b",
    "\uff43\uff4f\uff4d",  # full-width "com"
]

local_parts = st.one_of(
    st.text(st.sampled_from(ATEXT), min_size=1, max_size=10),
    st.lists(st.text(st.sampled_from(ATEXT), min_size=1, max_size=5), min_size=1, max_size=4).map(
        ".".join
    ),
    st.text(st.sampled_from(ATEXT + TRICKY), max_size=12),
    st.text(st.sampled_from("aB9."), min_size=60, max_size=70),
)
labels = st.one_of(
    st.text(st.sampled_from(HOST), min_size=1, max_size=8),
    st.text(st.sampled_from("aZ9-"), min_size=61, max_size=65),  # about the 63 limit
    st.sampled_from(SPECIAL_LABELS),
    st.text(st.sampled_from(HOST + TRICKY), max_size=6),
)
domains = st.one_of(
    st.lists(labels, min_size=1, max_size=5).map(".".join),
    st.lists(labels, min_size=3, max_size=6).map(lambda ls: ".".join(ls) + "."),
)
addresses = st.one_of(
    st.builds(lambda local, domain: f"{local}@{domain}", local_parts, domains),
    st.builds(lambda local, domain: f" {local}@{domain}\t", local_parts, domains),
    st.text(st.sampled_from(ATEXT + TRICKY), max_size=30),
    # about the 254-character limit
    st.builds(
        lambda local, n: f"{local}@{'d' * 60}.{'e' * 60}.{'f' * 60}.{'g' * n}.com",
        local_parts,
        st.integers(40, 70),
    ),
)

MANY = settings(
    max_examples=4000,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


@MANY
@given(addresses)
def test_email_parse_gives_the_answers_it_gave_before(raw: str) -> None:
    assert parse_now(raw) == previous_parse(raw)


# The fast path must decide the everyday addresses, or it saves nothing; and
# it must leave the others to email-validator.
DECIDED_HERE = {
    "plain": "ada@example.com",
    "mixed-case": "Ada.Lovelace@Example.CO.uk",
    "plus-tag": "ada+imports@example.com",
    "every-atext-character": "a!#$%&'*+/=?^_`{|}~-z@example.com",
    "digits-in-domain": "x@123.example4.com",
    "one-letter-tld": "x@example.c",
    "hyphen-inside-label": "x@my-host.example.com",
    "longest-label": "x@" + "a" * 63 + ".com",
    "info-mailbox": "INFO@example.com",
}
LEFT_TO_EMAIL_VALIDATOR = {
    "non-ascii-local": "éva@example.com",
    "non-ascii-domain": "ada@exämple.com",
    "punycode": "ada@xn--exmple-cua.com",
    "double-hyphen": "ada@ab--cd.com",
    "special-use": "ada@example.test",
    "special-use-upper": "ada@EXAMPLE.LOCAL",
    "no-dot": "ada@localhost",
    "numeric-tld": "ada@example.123",
    "label-too-long": "x@" + "a" * 64 + ".com",
    "quoted-local": '"ada"@example.com',
    "display-name": "Ada <ada@example.com>",
    "two-at-signs": "a@b@example.com",
    "double-dot": "a..b@example.com",
    "trailing-dot": "ada@example.com.",
    "leading-hyphen": "ada@-example.com",
    "underscore-in-domain": "ada@ex_ample.com",
}


@pytest.mark.parametrize("address", list(DECIDED_HERE.values()), ids=list(DECIDED_HERE))
def test_everyday_addresses_are_decided_without_email_validator(address: str) -> None:
    key = _plain_ascii_key(address)

    assert key is not None
    assert previous_parse(address) == (address, key)


@pytest.mark.parametrize(
    "address", list(LEFT_TO_EMAIL_VALIDATOR.values()), ids=list(LEFT_TO_EMAIL_VALIDATOR)
)
def test_other_addresses_are_left_to_email_validator(address: str) -> None:
    assert _plain_ascii_key(address) is None
    assert parse_now(address) == previous_parse(address)
