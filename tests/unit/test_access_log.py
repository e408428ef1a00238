"""The access-log line, formatted without structlog's pipeline, says what
structlog would have said, and stays one valid JSON line whatever the
client sent."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
import structlog

import ledgerline.platform.logging as ledgerline_logging
from ledgerline.platform.logging import access_log, call_log, configure_logging, get_logger

FIELDS = {
    "method": "GET",
    "path": "/v1/users/me",
    "route": "/v1/users/me",
    "status": 200,
    "duration_ms": 1.25,
}


@pytest.fixture(autouse=True)
def _restore_logging(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """configure_logging changes process-wide state: put it back."""
    saved = structlog.get_config()
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    monkeypatch.setattr(ledgerline_logging, "_configured", ledgerline_logging._configured)
    yield
    structlog.configure(**saved)
    root.handlers[:] = handlers
    root.setLevel(level)


def test_a_json_line_has_the_keys_and_values_of_every_other_line() -> None:
    out = io.StringIO()
    configure_logging("INFO", "json", out)
    structlog.contextvars.bind_contextvars(request_id="abc123")
    try:
        get_logger("ledgerline.http").info("request", **FIELDS)
    finally:
        structlog.contextvars.unbind_contextvars("request_id")
    access_log("ledgerline.http")("GET", "/v1/users/me", "/v1/users/me", 200, 1.25, "abc123")
    structured, direct = (json.loads(line) for line in out.getvalue().splitlines())
    assert structured.pop("timestamp")[:16] == direct.pop("timestamp")[:16]
    assert direct == structured
    assert list(direct) == list(structured)


@pytest.mark.parametrize(
    "path",
    ['/v1/"quoted"\\', "/v1/line\nbreak\ttab", "/v1/ünïcödé/\u2028", "/v1/\x00\x1f"],
    ids=["quotes-and-backslash", "control-characters", "non-ascii", "nul"],
)
def test_a_hostile_path_stays_one_valid_json_line(path: str) -> None:
    out = io.StringIO()
    configure_logging("INFO", "json", out)
    access_log("ledgerline.http")("GET", path, "unmatched", 404, 0.5, "r-1")
    [line] = out.getvalue().splitlines()
    assert json.loads(line)["path"] == path
    assert line.isascii()


def test_the_timestamp_is_utc_iso_8601() -> None:
    out = io.StringIO()
    configure_logging("INFO", "json", out)
    access_log("ledgerline.http")("GET", "/healthz", "/healthz", 200, 0.1, "r-1")
    stamp = json.loads(out.getvalue())["timestamp"]
    assert stamp.endswith("Z")
    assert "+00:00" not in stamp


def test_above_info_nothing_is_written() -> None:
    out = io.StringIO()
    configure_logging("WARNING", "json", out)
    access_log("ledgerline.http")("GET", "/healthz", "/healthz", 200, 0.1, "r-1")
    assert out.getvalue() == ""


def test_console_lines_go_through_structlog() -> None:
    out = io.StringIO()
    configure_logging("INFO", "console", out)
    access_log("ledgerline.http")("GET", "/healthz", "/healthz", 200, 0.1, "r-7")
    text = out.getvalue()
    assert "request" in text
    assert "r-7" in text
    assert "/healthz" in text


def test_a_grpc_call_line_has_the_keys_and_values_structlog_gives() -> None:
    out = io.StringIO()
    configure_logging("INFO", "json", out)
    method = "/ledgerline.v1.UserService/GetMe"
    structlog.contextvars.bind_contextvars(request_id="r-9")
    try:
        get_logger("ledgerline.grpc").info("rpc", method=method, code="OK", duration_ms=0.75)
    finally:
        structlog.contextvars.unbind_contextvars("request_id")
    call_log("ledgerline.grpc")(method, "OK", 0.75, "r-9")
    structured, direct = (json.loads(line) for line in out.getvalue().splitlines())
    assert structured.pop("timestamp")[:16] == direct.pop("timestamp")[:16]
    assert direct == structured
    assert list(direct) == list(structured)


def test_no_grpc_call_line_above_info() -> None:
    out = io.StringIO()
    configure_logging("WARNING", "json", out)
    call_log("ledgerline.grpc")("/x/Y", "OK", 0.1, "r-1")
    assert out.getvalue() == ""
