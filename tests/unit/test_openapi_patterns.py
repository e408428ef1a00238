"""The patterns the OpenAPI document gives text fields say what the domain
accepts: for names and descriptions exactly, for emails a part of it (every
address the pattern matches is accepted). Property tests, derandomized so a
run is repeatable."""

from __future__ import annotations

import re
import sys
from collections.abc import Callable

import pytest
from email_validator import SPECIAL_USE_DOMAIN_NAMES
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ledgerline.delivery.http.schemas import (
    EMAIL_PATTERN,
    WHITESPACE,
    letters_except,
    trimmed_text_pattern,
)
from ledgerline.domain.errors import InvalidArgumentError
from ledgerline.domain.order import DESCRIPTION_MAX_LENGTH, parse_description
from ledgerline.domain.user import NAME_MAX_LENGTH, Email, parse_name

DERANDOMIZED = settings(
    derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
# Whitespace of every kind, NUL, and characters that only look empty.
TRICKY = " \t\n\x0b\x1c\x85\xa0\u2007\u2028\u3000\x00\ufeff\u200bé"
NAME = re.compile(trimmed_text_pattern(NAME_MAX_LENGTH, required=True))
DESCRIPTION = re.compile(trimmed_text_pattern(DESCRIPTION_MAX_LENGTH, required=False))


def accepts(parse: Callable[[str], object], text: str) -> bool:
    try:
        parse(text)
    except InvalidArgumentError:
        return False
    return True


def test_the_whitespace_class_is_what_strip_removes() -> None:
    spaces = re.compile(f"[{WHITESPACE}]")
    everything = (chr(c) for c in range(sys.maxunicode + 1))
    assert [c for c in everything if spaces.fullmatch(c)] == [
        chr(c) for c in range(sys.maxunicode + 1) if chr(c).isspace()
    ]


def padded_text(core: int) -> st.SearchStrategy[str]:
    """Text around the length limit, with whitespace and NULs about."""
    pad = st.text(st.sampled_from(TRICKY), max_size=3)
    body = st.integers(core - 2, core + 2).map(lambda n: "x" * max(n, 0))
    return st.tuples(pad, body, pad).map("".join) | st.text(st.sampled_from(TRICKY + "ab"))


@pytest.mark.parametrize(
    ("pattern", "parse", "limit"),
    [
        pytest.param(NAME, parse_name, NAME_MAX_LENGTH, id="name"),
        pytest.param(DESCRIPTION, parse_description, DESCRIPTION_MAX_LENGTH, id="description"),
    ],
)
def test_a_trimmed_text_pattern_matches_exactly_what_the_domain_accepts(
    pattern: re.Pattern[str], parse: Callable[[str], object], limit: int
) -> None:
    @DERANDOMIZED
    @given(padded_text(limit) | st.text(max_size=limit + 5))
    def check(text: str) -> None:
        assert bool(pattern.fullmatch(text)) == accepts(parse, text), repr(text)

    check()


@DERANDOMIZED
@given(st.from_regex(re.compile(EMAIL_PATTERN), fullmatch=True))
def test_every_email_the_pattern_matches_is_accepted(address: str) -> None:
    Email.parse(address)


@pytest.mark.parametrize(
    ("address", "matches"),
    [
        pytest.param("ada@example.com", True, id="plain"),
        pytest.param("ada.lovelace+tag@mail.example.co.uk", True, id="dots-plus-subdomains"),
        pytest.param("ada@example.test", False, id="special-use-test"),
        pytest.param("ada@localhost", False, id="no-dot"),
        pytest.param("ada@example.onion", False, id="special-use-onion"),
        pytest.param("ada@xn--exmple-cua.com", False, id="punycode-left-out"),
        pytest.param("ada@example.c0m", False, id="top-level-not-letters"),
        pytest.param("ada..l@example.com", False, id="double-dot"),
        pytest.param('"a b"@example.com', False, id="quoted-local-part"),
    ],
)
def test_the_email_pattern(address: str, matches: bool) -> None:
    assert bool(re.fullmatch(EMAIL_PATTERN, address)) == matches
    if matches:
        Email.parse(address)


def test_every_special_use_name_is_one_top_level_label() -> None:
    """The pattern leaves them out as the last label; a name of two labels
    would need more than that."""
    assert all(name.isalpha() and name.islower() for name in SPECIAL_USE_DOMAIN_NAMES)


@DERANDOMIZED
@given(st.text(st.sampled_from("aceilnoprst"), min_size=1, max_size=10))
def test_letters_except_leaves_out_exactly_the_words(word: str) -> None:
    words = ("arpa", "invalid", "local", "localhost", "onion", "test")
    pattern = re.compile(letters_except(words, 10))
    assert bool(pattern.fullmatch(word)) == (len(word) >= 2 and word not in words)
