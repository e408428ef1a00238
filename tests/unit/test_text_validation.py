"""Text that PostgreSQL cannot store or UTF-8 cannot encode is bad input
(400), never a 500 from deep inside the driver."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from ledgerline.domain.errors import InvalidArgumentError
from ledgerline.domain.order import parse_description
from ledgerline.domain.user import Email, check_password, parse_name
from ledgerline.domain.validation import is_storable_text

BAD_TEXT = {"nul": "a\x00b", "lone-surrogate": "a\ud800b"}
PARSERS: dict[str, tuple[Callable[[str], object], str, str]] = {
    # field: (parser, a valid value to spoil, the field reported)
    "email": (Email.parse, "ada@example.com", "email"),
    "name": (parse_name, "Ada", "name"),
    "password": (check_password, "long enough password", "password"),
    "description": (parse_description, "tea", "description"),
}


@pytest.mark.parametrize("bad", BAD_TEXT.values(), ids=BAD_TEXT.keys())
@pytest.mark.parametrize("field", PARSERS, ids=PARSERS.keys())
def test_unstorable_text_is_invalid_argument(field: str, bad: str) -> None:
    parse, valid, reported = PARSERS[field]
    with pytest.raises(InvalidArgumentError) as caught:
        parse(valid[:1] + bad + valid[1:])
    assert [d.field for d in caught.value.details] == [reported]


@pytest.mark.parametrize(
    ("text", "storable"),
    [
        pytest.param("plain", True, id="ascii"),
        pytest.param("Éva 日本 🙂", True, id="unicode"),
        pytest.param("", True, id="empty"),
        pytest.param("\x00", False, id="nul"),
        pytest.param("\udfff", False, id="low-surrogate"),
    ],
)
def test_is_storable_text(text: str, storable: bool) -> None:
    assert is_storable_text(text) is storable
