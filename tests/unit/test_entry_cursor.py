"""Wallet entry cursors: exactly the form the API emits is accepted, and
CURSOR_PATTERN (what the OpenAPI document says) is that form."""

from __future__ import annotations

import base64
import binascii
import itertools
import re

import pytest

from ledgerline.domain.errors import InvalidArgumentError
from ledgerline.domain.ledger import CURSOR_MAX_SEQ, CURSOR_PATTERN, decode_cursor, encode_cursor

B64URL = list("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
PATTERN = re.compile(CURSOR_PATTERN)


def emitted_by_the_api(cursor: str) -> bool:
    """The oracle: some position in range encodes to exactly this text."""
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (ValueError, binascii.Error):
        return False
    digits = text.removeprefix("v1:")
    if digits == text or not (digits.isascii() and digits.isdigit()):
        return False
    seq = int(digits)
    return 1 <= seq <= CURSOR_MAX_SEQ and encode_cursor(seq) == cursor


def raw(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode()


@pytest.mark.parametrize(
    "seq",
    [1, 9, 10, 42, 99, 100, 999, 1000, 123_456, 1_234_567, 10**17, CURSOR_MAX_SEQ],
)
def test_every_emitted_cursor_decodes_to_its_position_and_matches_the_pattern(seq: int) -> None:
    cursor = encode_cursor(seq)
    assert decode_cursor(cursor) == seq
    assert PATTERN.fullmatch(cursor)


@pytest.mark.parametrize(
    "cursor",
    [
        pytest.param(raw("v1:5"), id="base64-padding-kept"),
        pytest.param(raw("v1:5") + "=", id="extra-padding"),
        pytest.param(encode_cursor(5) + "==", id="padding-added"),
        pytest.param(raw("v1:05").rstrip("="), id="zero-padded-number"),
        pytest.param(raw("v1:0005").rstrip("="), id="zero-padded-to-four-digits"),
        pytest.param(raw("v1:0").rstrip("="), id="zero"),
        pytest.param(raw(f"v1:{CURSOR_MAX_SEQ + 1}").rstrip("="), id="past-the-range"),
        pytest.param(encode_cursor(5)[:-1] + "R", id="non-canonical-trailing-bits"),
        pytest.param(base64.b64encode(b"v1:1>>").decode(), id="standard-not-url-alphabet"),
        pytest.param(encode_cursor(5) + "\n", id="trailing-newline"),
        pytest.param(" " + encode_cursor(5), id="leading-space"),
        pytest.param(encode_cursor(5).lower(), id="lower-cased"),
        pytest.param("", id="empty"),
    ],
)
def test_any_other_form_is_refused(cursor: str) -> None:
    assert not emitted_by_the_api(cursor)
    assert not PATTERN.fullmatch(cursor)
    with pytest.raises(InvalidArgumentError) as caught:
        decode_cursor(cursor)
    assert [d.field for d in caught.value.details] == ["cursor"]


# Every pair of characters that can open a digit group, and some that cannot.
LEADS = ["MD", "MT", "Mj", "Mz", "ND", "NT", "Nj", "Nz", "OD", "OT", "Oj", "PD", "LD", "MA"]


@pytest.mark.parametrize(
    ("prefix", "tails"),
    [
        pytest.param("djE6", [B64URL] * 3, id="one-to-three-characters"),
        pytest.param(encode_cursor(123), [B64URL] * 3, id="after-a-whole-group"),
        pytest.param("djE6", [LEADS, B64URL, B64URL], id="a-whole-group"),
        pytest.param(encode_cursor(10**14), [LEADS, B64URL, B64URL], id="the-sixth-group"),
        pytest.param(encode_cursor(10**17), [B64URL, B64URL], id="past-eighteen-digits"),
    ],
)
def test_the_pattern_is_exactly_the_emitted_form(prefix: str, tails: list[list[str]]) -> None:
    """Every text made of the prefix and a choice from each tail, and every
    shorter one, is checked against the oracle: no false positive, no false
    negative."""
    for length in range(len(tails) + 1):
        for tail in itertools.product(*tails[:length]):
            cursor = prefix + "".join(tail)
            assert bool(PATTERN.fullmatch(cursor)) == emitted_by_the_api(cursor), cursor


def test_a_position_past_the_range_cannot_be_encoded() -> None:
    with pytest.raises(ValueError, match="outside the cursor's range"):
        encode_cursor(CURSOR_MAX_SEQ + 1)
