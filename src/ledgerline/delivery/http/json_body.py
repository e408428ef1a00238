"""Request bodies as API.md defines JSON: UTF-8 text (strictly: Python's
json.loads would guess UTF-16 or UTF-32 from the bytes and let encoded
surrogates through), one value, no duplicate keys, none of Python's
non-standard NaN and Infinity, and a number whose value is whole is an
integer however it is written. FastAPI reads bodies through Request.json();
the body routes hand it a request whose json() is this."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

from starlette.requests import Request

from ledgerline.domain.errors import InvalidArgumentError

_NOT_JSON = "request body is not valid JSON"
# Whole numbers up to this become ints; every integer the API takes is far
# smaller, and a larger one stays a float (refused where an int is wanted)
# rather than cost a huge int conversion.
_WHOLE_LIMIT = 10**18


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # Called for every object, so the common case is one C-level dict build
    # and a length comparison; the duplicate is only looked for on failure.
    obj = dict(pairs)
    if len(obj) != len(pairs):
        duplicate = _first_duplicate(pairs)
        raise InvalidArgumentError(f"request body has the key {json.dumps(duplicate)} twice")
    return obj


def _first_duplicate(pairs: list[tuple[str, Any]]) -> str:
    seen: set[str] = set()
    for key, _ in pairs:
        if key in seen:
            return key
        seen.add(key)
    raise AssertionError("no duplicate key")


def _no_constant(name: str) -> Any:
    raise InvalidArgumentError(f"{_NOT_JSON}: {name} is not a JSON value")


def _number(text: str) -> int | float:
    """A number written with a fraction or an exponent. In JSON Schema, and
    so in the OpenAPI document, "integer" is any number whose value is whole:
    12.0 and 1.2e1 are the integer 12. Decided on the exact decimal value,
    never a float: 1.0000000000000001 is not 1."""
    try:
        value = Decimal(text)
        if value.copy_abs() <= _WHOLE_LIMIT and value == value.to_integral_value():
            return int(value)
    except ArithmeticError:  # an exponent past what Decimal holds: not a whole number we take
        pass
    return float(text)


# Built once: json.loads with hooks would build a decoder on every call.
_DECODER = json.JSONDecoder(
    object_pairs_hook=_unique_keys, parse_constant=_no_constant, parse_float=_number
)


def parse_json_body(body: bytes) -> Any:
    """The body's JSON value; InvalidArgumentError (400) for anything else."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidArgumentError("request body is not valid UTF-8") from None
    try:
        return _DECODER.decode(text)
    except (ValueError, RecursionError):
        # ValueError covers JSONDecodeError and integers past Python's digit
        # limit; RecursionError, nesting deeper than the parser goes.
        raise InvalidArgumentError(_NOT_JSON) from None


_UNPARSED = object()


class StrictJSONRequest(Request):
    """A request whose json() is parse_json_body, parsed once."""

    _parsed: Any = _UNPARSED

    async def json(self) -> Any:
        if self._parsed is _UNPARSED:
            self._parsed = parse_json_body(await self.body())
        return self._parsed
