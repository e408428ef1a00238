"""The files ``ledgerline import users`` reads, and the one it writes.

An input file is CSV with a header row, or JSON Lines when its name ends in
``.jsonl``. It is read as bytes, in blocks of about a given number of lines
that end where a record ends (for CSV, at a line end outside quotes), so
that a block can be decoded, parsed and checked on its own, in a worker
process (``check_block``), with its line numbers known: the file's first
line is line 1 (a CSV file's header), whatever the format.

Text is UTF-8 (a byte order mark at the start is skipped). Bytes that are
not UTF-8 spoil only the row they are in: its fields then hold text
PostgreSQL could not store, which the domain's rules refuse.

Rejected rows go to ``FILE.rejects.csv``: their line and the reason, never
the row itself (it may hold a password)."""

from __future__ import annotations

import asyncio
import csv
import enum
import io
import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from ledgerline.usecase.user_import import FIELDS, REQUIRED_FIELDS, BlockChecker, CheckedBlock

READ_SIZE = 1 << 20
# Past this much without the end of a CSV record in sight (a quote left
# open), the block is cut at a line end anyway: memory stays bounded, and
# the record's rows are refused for what they then are.
MAX_BLOCK_BYTES = 8 << 20
_BOM = b"\xef\xbb\xbf"


class InputFormat(enum.StrEnum):
    CSV = "csv"
    JSONL = "jsonl"

    @classmethod
    def of(cls, path: Path) -> InputFormat:
        return cls.JSONL if path.suffix.lower() == ".jsonl" else cls.CSV


class InputError(Exception):
    """The file cannot be imported at all (its header, its encoding, no
    place for its rejects)."""


def rejects_path(path: Path) -> Path:
    return path.with_name(f"{path.name}.rejects.csv")


@dataclass(frozen=True, slots=True)
class Block:
    """Whole records of the input: ``data`` starts on line ``first_line``
    and ends at byte ``end`` of the file."""

    first_line: int
    data: bytes
    end: int


@dataclass(frozen=True, slots=True)
class BlockJob:
    """What a worker process needs to check a block."""

    format: InputFormat
    header: tuple[str, ...]  # a CSV file's columns; empty for JSON Lines
    block: Block


class ImportFile:
    """An input file: its format, its size and (CSV) its header, read and
    checked when it is opened; then its blocks."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.format = InputFormat.of(path)
        self.size = path.stat().st_size
        self.header: tuple[str, ...] = ()
        self._start = 0  # where the data starts: after the header, or the BOM
        self._first_line = 1
        with path.open("rb") as file:
            self._read_header(file)

    def _read_header(self, file: IO[bytes]) -> None:
        head = file.read(len(_BOM))
        self._start = len(_BOM) if head == _BOM else 0
        if self.format is InputFormat.JSONL:
            return
        file.seek(self._start)
        line = file.readline(MAX_BLOCK_BYTES)
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError:
            raise InputError("line 1: the header row is not UTF-8 text") from None
        cells = next(csv.reader([text]), None)
        if not cells or not any(cell.strip() for cell in cells):
            raise InputError("line 1: a CSV file starts with a header row naming its columns")
        self.header = tuple(cell.strip() for cell in cells)
        self._start += len(line)
        self._first_line = 2
        check_header(self.header)

    async def jobs(self, lines_per_block: int) -> AsyncIterator[BlockJob]:
        """The file's data, a block of about ``lines_per_block`` lines at a time."""
        with self.path.open("rb") as file:
            file.seek(self._start)
            async for block in _blocks(
                file,
                start=self._start,
                first_line=self._first_line,
                lines=lines_per_block,
                quoted=self.format is InputFormat.CSV,
            ):
                yield BlockJob(self.format, self.header, block)


def check_header(header: tuple[str, ...]) -> None:
    """A CSV header names each column once, every column is a field, and
    the fields a row needs are there: anything else would refuse every row."""
    seen: set[str] = set()
    for name in header:
        if name in seen:
            raise InputError(f"line 1: the column {json.dumps(name)} appears twice")
        seen.add(name)
    unknown = [name for name in header if name not in FIELDS]
    if unknown:
        raise InputError(
            f"line 1: unknown column {', '.join(json.dumps(n) for n in unknown)} "
            f"(the columns are {', '.join(FIELDS)})"
        )
    missing = [name for name in REQUIRED_FIELDS if name not in seen]
    if missing:
        raise InputError(f"line 1: the header has no {' or '.join(missing)} column")
    if "password" not in seen and "password_hash" not in seen:
        raise InputError("line 1: the header has neither a password nor a password_hash column")


async def _blocks(
    file: IO[bytes], *, start: int, first_line: int, lines: int, quoted: bool
) -> AsyncIterator[Block]:
    buffer = b""
    offset = start  # of the buffer's first byte in the file
    line = first_line
    at_end = False
    while buffer or not at_end:
        cut = _cut(buffer, lines, quoted, at_end)
        if cut == 0:
            if not at_end and len(buffer) < MAX_BLOCK_BYTES:
                more = await asyncio.to_thread(file.read, READ_SIZE)
                at_end = not more
                buffer += more
                continue
            cut = _last_line_end(buffer) or len(buffer)
        data, buffer = buffer[:cut], buffer[cut:]
        offset += len(data)
        yield Block(line, data, offset)
        line += data.count(b"\n")


def _cut(buffer: bytes, lines: int, quoted: bool, at_end: bool) -> int:
    """Where the first block of about ``lines`` lines ends in ``buffer``:
    just after a line end that closes a record; 0 when the buffer does not
    yet hold enough lines (or, at the end of the file, any line end)."""
    count = buffer.count(b"\n")
    if count < lines and not at_end:
        return 0
    if count == 0:
        return len(buffer)  # the file's last line, without a line end
    # Lines are about the same length: aim at the end of line ``lines``.
    aim = len(buffer) * min(lines, count) // count if count > lines else len(buffer) - 1
    end = buffer.rfind(b"\n", 0, aim + 1)
    if end < 0:
        end = buffer.find(b"\n")
    if quoted:
        # A line end inside quotes is part of a field: move on until the
        # quotes before the cut are paired.
        quotes = buffer.count(b'"', 0, end)
        while quotes % 2:
            following = buffer.find(b"\n", end + 1)
            if following < 0:
                return len(buffer) if at_end else 0
            quotes += buffer.count(b'"', end, following)
            end = following
    return end + 1


def _last_line_end(buffer: bytes) -> int:
    return buffer.rfind(b"\n") + 1


# ----------------------------------------------------- in worker processes


def check_block(job: BlockJob) -> CheckedBlock:
    """Decodes, parses and checks one block; runs in a worker process."""
    block = job.block
    text = block.data.decode("utf-8", "surrogateescape")
    checker = BlockChecker()
    if job.format is InputFormat.CSV:
        _check_csv(text, block.first_line, job.header, checker)
    else:
        _check_json_lines(text, block.first_line, checker)
    ended = 1 if block.data.endswith(b"\n") else 0
    last_line = block.first_line + block.data.count(b"\n") - ended
    return checker.block(block.first_line, last_line, block.end)


def _check_csv(text: str, first_line: int, header: tuple[str, ...], checker: BlockChecker) -> None:
    # Only "\n" ends a line here, as it does where the block was cut; csv
    # itself takes "\r\n" as a line end.
    reader = csv.reader(io.StringIO(text, newline="\n"), strict=True)
    columns = len(header)
    read = 0  # lines the reader has taken
    while True:
        line = first_line + read
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            checker.reject(line, f"not valid CSV: {exc}")
            read = reader.line_num
            continue
        read = reader.line_num
        if not cells:
            continue  # a blank line is no row
        if len(cells) != columns:
            checker.reject(line, f"has {len(cells)} fields, the header has {columns}")
            continue
        checker.add(line, dict(zip(header, cells, strict=True)))


class _NotJSONError(ValueError):
    pass


def _unique_keys(pairs: list[tuple[str, object]]) -> dict[str, object]:
    fields = dict(pairs)
    if len(fields) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _NotJSONError(f"the key {json.dumps(key)} appears twice")
            seen.add(key)
    return fields


def _no_constant(name: str) -> object:
    raise _NotJSONError(f"{name} is not a JSON value")


# Built once: json.loads with hooks would build a decoder on every call.
_DECODER = json.JSONDecoder(object_pairs_hook=_unique_keys, parse_constant=_no_constant)


def _check_json_lines(text: str, first_line: int, checker: BlockChecker) -> None:
    for line, record in _numbered_lines(text, first_line):
        if not record.strip():
            continue  # a blank line is no row
        try:
            value = _DECODER.decode(record)
        except json.JSONDecodeError as exc:
            checker.reject(line, f"not valid JSON: {exc.msg} at column {exc.colno}")
            continue
        except ValueError as exc:  # a duplicate key, NaN, an integer past the digit limit
            checker.reject(line, f"not valid JSON: {exc}")
            continue
        except RecursionError:
            checker.reject(line, "not valid JSON: nested too deeply")
            continue
        if not isinstance(value, dict):
            checker.reject(line, "not a JSON object")
            continue
        checker.add(line, value)


def _numbered_lines(text: str, first_line: int) -> Iterator[tuple[int, str]]:
    for index, record in enumerate(text.split("\n")):
        yield first_line + index, record


# ------------------------------------------------------------ the rejects


class RejectsFile:
    """``FILE.rejects.csv``: a header, then a row per rejected line (its
    number and the reason), in the file's order. Made afresh by each run,
    and flushed after each batch, so it matches what the run committed."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self._file = path.open("w", encoding="utf-8", newline="")
        except OSError as exc:
            raise InputError(f"cannot write the rejects file {path}: {exc.strerror}") from None
        self._writer = csv.writer(self._file)
        self._writer.writerow(("line", "reason"))
        self._file.flush()

    def write(self, rejects: list[tuple[int, str]]) -> None:
        if rejects:
            self._writer.writerows(rejects)
            self._file.flush()

    def close(self) -> None:
        self._file.close()
