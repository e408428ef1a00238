"""Importing users in bulk (``ledgerline import users FILE``): the rules a
row must pass to become a new user, which are registration's own (the
domain's Email, name and password rules), and the steps of a run, which
main/importer.py strings into a pipeline: rows checked a block at a time
(in worker processes: this part is pure and its results are picklable),
passwords hashed, and the new users loaded a batch per transaction through
the UserImportSink port, each with its UserRegistered event.

Every row ends up counted once: imported, skipped (its email was taken,
before the run or by an earlier row of the file) or rejected (it broke a
rule; its line and the reason are reported)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace

from ledgerline.domain.errors import InvalidArgumentError
from ledgerline.domain.ids import uuid7_int
from ledgerline.domain.ports import Clock, NewUserRow, PasswordHasher, UserImportSink
from ledgerline.domain.user import Email, check_password, parse_name
from ledgerline.domain.validation import check_text, collect_violations

REQUIRED_FIELDS = ("email", "name")
SECRET_FIELDS = ("password", "password_hash")
FIELDS = (*REQUIRED_FIELDS, *SECRET_FIELDS)

PASSWORD_HASH_MAX_LENGTH = 512
# An Argon2id hash in the PHC string format, as argon2-cffi (and libargon2)
# write it: version 19, memory (KiB), iterations and lanes, then the salt
# (at least 8 bytes) and the hash (at least 4), in unpadded base64.
_ARGON2ID_PHC = re.compile(
    r"\$argon2id\$v=19\$m=([1-9][0-9]{0,9}),t=([1-9][0-9]{0,9}),p=([1-9][0-9]{0,7})"
    r"\$([A-Za-z0-9+/]{11,})\$([A-Za-z0-9+/]{6,})"
)
_PHC_FORM = "an Argon2id hash in PHC string form ($argon2id$v=19$m=...,t=...,p=...$salt$hash)"


def check_password_hash(raw: str) -> str:
    """An Argon2id PHC string, kept as given: argon2 verifies it as it is."""
    check_text("password_hash", raw)
    if len(raw) > PASSWORD_HASH_MAX_LENGTH:
        raise InvalidArgumentError.for_field(
            "password_hash", f"must be at most {PASSWORD_HASH_MAX_LENGTH} characters"
        )
    match = _ARGON2ID_PHC.fullmatch(raw)
    if match is None or not _is_phc(match):
        raise InvalidArgumentError.for_field("password_hash", f"must be {_PHC_FORM}")
    return raw


def _is_phc(match: re.Match[str]) -> bool:
    memory, iterations, lanes = int(match[1]), int(match[2]), int(match[3])
    # Argon2's bounds (RFC 9106): 8 KiB of memory per lane, 32-bit memory
    # and iterations, 24-bit lanes; unpadded base64 is never 1 past a
    # multiple of 4 long.
    return (
        8 * lanes <= memory < 2**32
        and iterations < 2**32
        and lanes < 2**24
        and len(match[4]) % 4 != 1
        and len(match[5]) % 4 != 1
    )


@dataclass(frozen=True, slots=True)
class CheckedRow:
    """A row that passed the rules; exactly one of password and password_hash is set."""

    email: Email
    name: str
    password: str | None
    password_hash: str | None


def _given(fields: Mapping[str, object], name: str) -> object:
    """The field's value; None when it is not given, or empty or null (a
    CSV cell cannot be null)."""
    value = fields.get(name)
    return None if value == "" else value


def _names(names: Sequence[str]) -> str:
    return ", ".join(json.dumps(name, ensure_ascii=False) for name in names)


def _shape_problems(fields: Mapping[str, object]) -> list[str]:
    problems: list[str] = []
    unknown = sorted(name for name in fields if name not in FIELDS)
    if unknown:
        s = "s" if len(unknown) > 1 else ""
        problems.append(f"unknown field{s} {_names(unknown)} (the fields are {', '.join(FIELDS)})")
    missing = [name for name in REQUIRED_FIELDS if fields.get(name) is None]
    if missing:
        s = "s" if len(missing) > 1 else ""
        problems.append(f"missing field{s} {', '.join(missing)}")
    secrets = [name for name in SECRET_FIELDS if _given(fields, name) is not None]
    if not secrets:
        problems.append("missing field password or password_hash (one of them is needed)")
    elif len(secrets) > 1:
        problems.append("both password and password_hash are given (give one of them)")
    for name in FIELDS:
        value = fields.get(name)
        if value is not None and not isinstance(value, str):
            problems.append(f"{name}: must be a string")
    return problems


def check_row(fields: Mapping[str, object]) -> CheckedRow:
    """The row's new user, by registration's rules; InvalidArgumentError
    naming every problem (the rejected row's reason) otherwise."""
    email = fields.get("email")
    name = fields.get("name")
    password = _given(fields, "password")
    password_hash = _given(fields, "password_hash")
    # The common case, a row with the right fields, is checked straight
    # through (a bulk import checks millions); any problem, and the row is
    # checked again below, to name every problem it has.
    if (
        fields.keys() <= _FIELD_NAMES
        and isinstance(email, str)
        and isinstance(name, str)
        and (password is None) != (password_hash is None)
        and isinstance(password if password is not None else password_hash, str)
    ):
        try:
            return CheckedRow(
                Email.parse(email),
                parse_name(name),
                check_password(password) if isinstance(password, str) else None,
                check_password_hash(password_hash) if isinstance(password_hash, str) else None,
            )
        except InvalidArgumentError:
            pass
    raise InvalidArgumentError(_reason(fields))


_FIELD_NAMES = frozenset(FIELDS)


def _reason(fields: Mapping[str, object]) -> str:
    """Every problem of a row that is refused."""
    problems = _shape_problems(fields)
    if problems:
        return "; ".join(problems)
    text = {name: value for name, value in fields.items() if isinstance(value, str)}
    password = text.get("password")
    try:
        collect_violations(
            lambda: Email.parse(text["email"]),
            lambda: parse_name(text["name"]),
            lambda: (
                check_password(password)
                if password
                else check_password_hash(text.get("password_hash", ""))
            ),
        )
    except InvalidArgumentError as exc:
        return exc.message
    raise AssertionError("a row refused for no reason")


# --------------------------------------------------------------- blocks


def time_ordered_ids() -> Iterator[str]:
    """New user ids: UUIDv7 (RFC 9562), a millisecond timestamp then 74
    random bits, as 32 hex digits. Ids that grow with time go in at the end
    of the users' primary key, and of the outbox's indexes keyed by the
    user's id, instead of all over them: a million users load in about two
    thirds of the time they take with uuid4's random ids (bench/README.md).
    Random bits are drawn from os.urandom for a thousand ids at a time."""
    while True:
        pool = os.urandom(10 * 1024)
        for start in range(0, len(pool), 10):
            bits = int.from_bytes(pool[start : start + 10])
            yield f"{uuid7_int(time.time_ns() // 1_000_000, bits):032x}"


@dataclass(frozen=True, slots=True)
class CheckedBlock:
    """A block of the input's lines, checked, in the input's order.
    ``users`` holds the rows that passed; a row that gave a password has an
    empty password_hash until it is hashed, and is listed in ``passwords``
    (its index in ``users``, the password). ``end`` is where the block
    ends in the input (a byte offset), for progress."""

    first_line: int
    last_line: int
    end: int
    rows: int
    users: list[NewUserRow]
    passwords: list[tuple[int, str]]
    rejects: list[tuple[int, str]]


class BlockChecker:
    """Checks a block's rows one at a time, as a file reader parses them."""

    def __init__(self) -> None:
        self._ids = time_ordered_ids()
        self.users: list[NewUserRow] = []
        self.passwords: list[tuple[int, str]] = []
        self.rejects: list[tuple[int, str]] = []
        self.rows = 0

    def add(self, line: int, fields: Mapping[str, object]) -> None:
        try:
            row = check_row(fields)
        except InvalidArgumentError as exc:
            self.reject(line, exc.message)
            return
        self.rows += 1
        password_hash = row.password_hash or ""
        if row.password is not None:
            self.passwords.append((len(self.users), row.password))
        self.users.append(
            (line, next(self._ids), row.email.value, row.email.key, row.name, password_hash)
        )

    def reject(self, line: int, reason: str) -> None:
        self.rows += 1
        self.rejects.append((line, reason))

    def block(self, first_line: int, last_line: int, end: int) -> CheckedBlock:
        return CheckedBlock(
            first_line, last_line, end, self.rows, self.users, self.passwords, self.rejects
        )


# ------------------------------------------------------------------ run


@dataclass(frozen=True, slots=True)
class LoadedBatch:
    """A batch committed (one transaction): its rows' fates."""

    imported: int
    skipped: int
    rejects: list[tuple[int, str]]
    last_line: int
    end: int

    @property
    def rows(self) -> int:
        return self.imported + self.skipped + len(self.rejects)


@dataclass
class ImportTally:
    """What the committed batches did, and how far into the input they reach."""

    imported: int = 0
    skipped: int = 0
    rejected: int = 0
    last_line: int = 0
    end: int = 0

    @property
    def rows(self) -> int:
        return self.imported + self.skipped + self.rejected

    def add(self, batch: LoadedBatch) -> None:
        self.imported += batch.imported
        self.skipped += batch.skipped
        self.rejected += len(batch.rejects)
        self.last_line = max(self.last_line, batch.last_line)
        self.end = max(self.end, batch.end)


class UserImport:
    """One run: hashes the passwords of checked blocks and loads batches of
    them, keeping the tally. ``on_loaded`` hears of each committed batch (to
    write its rejects, show progress), in the input's order.

    Up to ``loaders`` batches are loaded at once (the database then works on
    more than one core), and they commit in the order they were given: each
    waits, before its COMMIT, for the one before it to end. A row whose email
    is in a batch still being loaded is skipped before it is sent: the
    earlier row wins whether that batch adds it or finds it taken, and two
    transactions never wait on each other's rows (the later would wait for
    the earlier's commit, which waits for the later: a deadlock the database
    cannot see). Batches that had ended before a batch began are committed:
    the database itself skips their emails.

    Loads run to their end on their own, even when the caller is cancelled
    (an interrupted run), so that the tally tells exactly what was
    committed: ``settle()`` waits for them, ``abandon()`` gives them up
    (rolled back, but for a COMMIT already sent)."""

    def __init__(
        self,
        *,
        sink: UserImportSink,
        hasher: PasswordHasher,
        clock: Clock,
        on_loaded: Callable[[LoadedBatch], None],
        loaders: int = 1,
    ) -> None:
        if loaders < 1:
            raise ValueError("at least one loader")
        self._sink = sink
        self._hasher = hasher
        self._clock = clock
        self._on_loaded = on_loaded
        self._loaders = loaders
        # Batches being loaded, oldest first, with the email keys they send.
        self._loading: deque[tuple[asyncio.Task[None], frozenset[str]]] = deque()
        self.tally = ImportTally()

    async def hash_passwords(self, block: CheckedBlock) -> CheckedBlock:
        if not block.passwords:
            return block
        hashes = await asyncio.gather(*(self._hasher.hash(pw) for _, pw in block.passwords))
        users = list(block.users)
        for (index, _), password_hash in zip(block.passwords, hashes, strict=True):
            users[index] = (*users[index][:5], password_hash)
        return replace(block, users=users, passwords=[])

    async def load(self, blocks: Sequence[CheckedBlock]) -> None:
        """Starts loading the blocks' users as one batch (one transaction),
        once fewer than ``loaders`` batches are being loaded; raises the
        error of a batch that failed. ``settle()`` waits for the last ones."""
        if any(block.passwords for block in blocks):
            raise ValueError("a block's passwords must be hashed before it is loaded")
        while self._loading and (len(self._loading) >= self._loaders or self._loading[0][0].done()):
            await self._end_oldest()
        users = [user for block in blocks for user in block.users]
        if self._loading:
            taken = frozenset().union(*(keys for _, keys in self._loading))
            users = [user for user in users if user[3] not in taken]
        previous = self._loading[-1][0] if self._loading else None
        task = asyncio.ensure_future(self._load(blocks, users, previous))
        self._loading.append((task, frozenset(user[3] for user in users)))

    async def settle(self) -> None:
        """Waits for every batch being loaded; raises the first failure."""
        while self._loading:
            await self._end_oldest()

    async def abandon(self) -> None:
        """Cancels the batches being loaded: they roll back."""
        tasks = [task for task, _ in self._loading]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)

    async def _end_oldest(self) -> None:
        task = self._loading[0][0]
        await asyncio.wait({task})
        self._loading.popleft()
        if task.cancelled() or task.exception() is None:
            return
        # A failure is raised here, not lost; the batches after it end too
        # (they do not commit after a batch that failed).
        rest = [later for later, _ in self._loading]
        self._loading.clear()
        if rest:
            await asyncio.wait(rest)
            for later in rest:
                if not later.cancelled():
                    later.exception()  # retrieved: it is this failure's echo
        task.result()

    async def _load(
        self,
        blocks: Sequence[CheckedBlock],
        users: list[NewUserRow],
        previous: asyncio.Task[None] | None,
    ) -> None:
        async def previous_ended() -> None:
            if previous is not None:
                await asyncio.wait({previous})  # not cancelled with this one
                if previous.cancelled():
                    raise asyncio.CancelledError  # the batch before was given up
                previous.result()  # or failed: this one must not commit either

        sent = sum(len(block.users) for block in blocks)
        if users:
            added, skipped = await self._sink.load(
                users, self._clock.now(), commit_after=previous_ended
            )
        else:
            await previous_ended()
            added, skipped = 0, 0
        batch = LoadedBatch(
            imported=added,
            skipped=skipped + sent - len(users),
            rejects=[reject for block in blocks for reject in block.rejects],
            last_line=blocks[-1].last_line,
            end=blocks[-1].end,
        )
        self.tally.add(batch)
        self._on_loaded(batch)
