"""The files a bulk import reads and writes: the CSV header checked before
anything is imported, blocks cut where records end, every row's line number
(a CSV file's header is line 1; a JSON Lines file's first line is line 1),
the reason a malformed row is refused, and the rejects file."""

from __future__ import annotations

import csv
import time
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from ledgerline.delivery.cli import import_files, import_progress
from ledgerline.delivery.cli.import_files import (
    ImportFile,
    InputError,
    RejectsFile,
    check_block,
    rejects_path,
)
from ledgerline.usecase.user_import import CheckedBlock, ImportTally

HASH = (
    "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0c2FsdA"
    "$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g"
)
QUOTED_HASH = f'"{HASH}"'  # a PHC string has commas in it


def _file(tmp_path: Path, name: str, data: bytes) -> ImportFile:
    path = tmp_path / name
    path.write_bytes(data)
    return ImportFile(path)


async def _check(file: ImportFile, lines_per_block: int = 2_000) -> list[CheckedBlock]:
    return [check_block(job) async for job in file.jobs(lines_per_block)]


def _lines(blocks: list[CheckedBlock]) -> tuple[list[tuple[int, str]], list[tuple[int, str]]]:
    """(line, email) of each new user, and (line, reason) of each reject."""
    users = [(user[0], user[2]) for block in blocks for user in block.users]
    rejects = [reject for block in blocks for reject in block.rejects]
    return users, rejects


GOOD_HEADERS = {
    "password-hash": (b"email,name,password_hash\n", ("email", "name", "password_hash")),
    "both-secrets": (
        b"name,password,email,password_hash\n",
        ("name", "password", "email", "password_hash"),
    ),
    "byte-order-mark": (b"\xef\xbb\xbfemail,name,password\n", ("email", "name", "password")),
    "spaces-and-crlf": (b"email , name,password\r\n", ("email", "name", "password")),
    "quoted": (b'"email","name","password"\n', ("email", "name", "password")),
}


@pytest.mark.parametrize(("data", "header"), list(GOOD_HEADERS.values()), ids=list(GOOD_HEADERS))
def test_a_csv_header_names_the_columns(
    tmp_path: Path, data: bytes, header: tuple[str, ...]
) -> None:
    assert _file(tmp_path, "users.csv", data).header == header


BAD_HEADERS = {
    "empty-file": (b"", "line 1: a CSV file starts with a header row naming its columns"),
    "blank-first-line": (b"\n", "line 1: a CSV file starts with a header row naming its columns"),
    "unknown-column": (
        b"email,name,password,role\n",
        'line 1: unknown column "role" (the columns are email, name, password, password_hash)',
    ),
    "column-twice": (b"email,name,email,password\n", 'line 1: the column "email" appears twice'),
    "no-name": (b"email,password\n", "line 1: the header has no name column"),
    "no-email-nor-name": (b"password\n", "line 1: the header has no email or name column"),
    "no-secret": (
        b"email,name\n",
        "line 1: the header has neither a password nor a password_hash column",
    ),
    "not-utf8": (b"email,n\xe4me,password\n", "line 1: the header row is not UTF-8 text"),
}


@pytest.mark.parametrize(("data", "message"), list(BAD_HEADERS.values()), ids=list(BAD_HEADERS))
def test_a_bad_csv_header_refuses_the_file(tmp_path: Path, data: bytes, message: str) -> None:
    with pytest.raises(InputError) as refused:
        _file(tmp_path, "users.csv", data)

    assert str(refused.value) == message


def test_a_jsonl_file_has_no_header(tmp_path: Path) -> None:
    file = _file(tmp_path, "users.JSONL", b'{"email": "a@example.com"}\n')

    assert (file.format, file.header) == (import_files.InputFormat.JSONL, ())


CSV_TEXT = (
    "email,name,password_hash\n"  # line 1
    f"a@example.com,Ada,{QUOTED_HASH}\n"  # 2
    f'b@example.com,"Bob\non two lines",{QUOTED_HASH}\n'  # 3-4: one record
    "\n"  # 5: blank, no row
    f"c@example.com,Cy,{QUOTED_HASH},extra\n"  # 6
    f'd@example.com,"Di, with a comma",{QUOTED_HASH}\r\n'  # 7
    f'e@example.com,"Ed"x,{QUOTED_HASH}\n'  # 8: bad quoting
    f"f@example.com,Fay,{QUOTED_HASH}"  # 9: no line end
)


@pytest.mark.parametrize("lines_per_block", [1, 2, 3, 2_000])
async def test_csv_rows_keep_their_line_numbers_however_the_file_is_cut(
    tmp_path: Path, lines_per_block: int
) -> None:
    file = _file(tmp_path, "users.csv", CSV_TEXT.encode())

    blocks = await _check(file, lines_per_block)

    users, rejects = _lines(blocks)
    assert users == [
        (2, "a@example.com"),
        (3, "b@example.com"),
        (7, "d@example.com"),
        (9, "f@example.com"),
    ]
    assert rejects == [
        (6, "has 4 fields, the header has 3"),
        (8, "not valid CSV: ',' expected after '\"'"),
    ]
    assert [user[4] for block in blocks for user in block.users][1] == "Bob\non two lines"
    assert blocks[-1].end == file.size
    assert sum(block.rows for block in blocks) == 6


async def test_bytes_that_are_not_utf8_spoil_only_their_row(tmp_path: Path) -> None:
    data = (
        b"email,name,password_hash\n"
        + f"a@example.com,Ada,{QUOTED_HASH}\n".encode()
        + b"b@example.com,B\xe4rbel,"  # Latin-1, not UTF-8
        + f"{QUOTED_HASH}\n".encode()
        + f"c@example.com,Cy,{QUOTED_HASH}\n".encode()
    )

    users, rejects = _lines(await _check(_file(tmp_path, "users.csv", data)))

    assert users == [(2, "a@example.com"), (4, "c@example.com")]
    assert rejects == [(3, "name: must be valid text (no NUL characters or lone surrogates)")]


JSONL_TEXT = (
    '{"email": "a@example.com", "name": "Ada", "password": "password1"}\n'  # line 1
    "\n"  # 2: blank
    '{"email": "b@example.com", "name": "Bob", "password_hash": null, "password": "pass word"}\n'
    "not json\n"  # 4
    '["a", "list"]\n'  # 5
    '{"email": "c@example.com", "email": "d@example.com", "name": "C", "password": "p1234567"}\n'
    '{"email": "e@example.com", "name": NaN, "password": "password1"}\n'  # 7
    '{"email": "f@example.com", "name": "Fay", "password": "password1", "admin": true}\n'  # 8
    '{"email": "g@example.com", "name": "Gus", "password": "password1"}'  # 9, no line end
)


@pytest.mark.parametrize("lines_per_block", [1, 4, 2_000])
async def test_json_lines_are_numbered_from_one(tmp_path: Path, lines_per_block: int) -> None:
    blocks = await _check(_file(tmp_path, "users.jsonl", JSONL_TEXT.encode()), lines_per_block)

    users, rejects = _lines(blocks)
    assert users == [(1, "a@example.com"), (3, "b@example.com"), (9, "g@example.com")]
    assert rejects == [
        (4, "not valid JSON: Expecting value at column 1"),
        (5, "not a JSON object"),
        (6, 'not valid JSON: the key "email" appears twice'),
        (7, "not valid JSON: NaN is not a JSON value"),
        (8, 'unknown field "admin" (the fields are email, name, password, password_hash)'),
    ]
    assert [password for block in blocks for _, password in block.passwords] == [
        "password1",
        "pass word",
        "password1",
    ]


async def test_a_quote_left_open_costs_a_bounded_block_not_the_whole_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(import_files, "READ_SIZE", 256)
    monkeypatch.setattr(import_files, "MAX_BLOCK_BYTES", 2048)
    rows = [f"u{i}@example.com,User {i},{QUOTED_HASH}\n" for i in range(200)]
    rows[10] = f'open@example.com,"Never closed,{QUOTED_HASH}\n'
    file = _file(tmp_path, "users.csv", ("email,name,password_hash\n" + "".join(rows)).encode())

    jobs = [job async for job in file.jobs(5)]

    assert max(len(job.block.data) for job in jobs) <= 2048 + 256
    blocks = [check_block(job) for job in jobs]
    users, rejects = _lines(blocks)
    accounted = sorted([line for line, _ in users] + [line for line, _ in rejects])
    assert accounted[:10] == list(range(2, 12))  # the rows before the open quote
    assert users[-1] == (201, "u199@example.com")  # and the rows after the cut
    assert 12 in [line for line, _ in rejects]


def test_the_rejects_file_lists_line_and_reason(tmp_path: Path) -> None:
    source = tmp_path / "users.csv"
    path = rejects_path(source)
    rejects = RejectsFile(path)
    rejects.write([(3, "email: must not be empty"), (9, 'has 4 fields, "the header" has 3')])
    rejects.write([])
    rejects.close()

    assert path.name == "users.csv.rejects.csv"
    with path.open(newline="", encoding="utf-8") as written:
        assert list(csv.reader(written)) == [
            ["line", "reason"],
            ["3", "email: must not be empty"],
            ["9", 'has 4 fields, "the header" has 3'],
        ]


def test_without_a_terminal_progress_is_a_log_line_every_few_seconds(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    now = [1000.0]
    monkeypatch.setattr(time, "monotonic", lambda: now[0])
    progress = import_progress.LogProgress("users.csv", file_size=1000)
    tally = ImportTally(imported=90, skipped=5, rejected=5, last_line=101, end=250)

    with capture_logs() as logs:
        now[0] += 1
        progress.update(tally)  # too soon for a line
        now[0] += import_progress.LOG_INTERVAL_SECONDS
        progress.update(tally)
        now[0] += 4
        progress.stop(tally)

    assert [(line["event"], line["rows"], line["line"]) for line in logs] == [
        ("import progress", 100, 101),
        ("import ended", 100, 101),
    ]
    assert (logs[0]["percent"], logs[0]["eta_seconds"]) == (25.0, 18)
    assert (logs[1]["seconds"], logs[1]["rows_per_second"]) == (10.0, 10)
