"""Request bodies as API.md defines JSON: UTF-8 text (strictly: Python's
json.loads would guess UTF-16 or UTF-32 from the bytes and let encoded
surrogates through), one value, no duplicate keys, none of Python's
non-standard NaN and Infinity. FastAPI reads bodies through Request.json();
the body routes hand it a request whose json() is this."""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request

from ledgerline.domain.errors import InvalidArgumentError

_NOT_JSON = "request body is not valid JSON"


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


def parse_json_body(body: bytes) -> Any:
    """The body's JSON value; InvalidArgumentError (400) for anything else."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidArgumentError("request body is not valid UTF-8") from None
    try:
        return json.loads(text, object_pairs_hook=_unique_keys, parse_constant=_no_constant)
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
