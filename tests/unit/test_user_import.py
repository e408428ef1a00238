"""The bulk import's use case against in-memory fakes: the rules a row must
pass (registration's own), the checked blocks, and a run's loads: tallies,
the first of two rows with one email winning across batches loaded at once,
commits in order, failures and giving up."""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import Mapping

import argon2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledgerline.domain.errors import InvalidArgumentError, UnavailableError
from ledgerline.platform.tokens import JWTIssuer
from ledgerline.usecase.user_import import (
    BlockChecker,
    CheckedBlock,
    LoadedBatch,
    UserImport,
    check_password_hash,
    check_row,
    time_ordered_ids,
)
from ledgerline.usecase.users import Registration, UserService
from tests.fakes import (
    FakeClock,
    FakeHasher,
    InMemoryUnitOfWorkFactory,
    InMemoryUserImportSink,
)

HASH = (
    "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0c2FsdA"
    "$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g"
)


GOOD_ROWS: dict[str, tuple[Mapping[str, object], tuple[str, str, str, bool]]] = {
    # id: (fields, (email kept, key, name, gave a password))
    "password": (
        {"email": "ada@example.com", "name": "Ada", "password": "correct horse"},
        ("ada@example.com", "ada@example.com", "Ada", True),
    ),
    "password-hash": (
        {"email": "ada@example.com", "name": "Ada", "password_hash": HASH},
        ("ada@example.com", "ada@example.com", "Ada", False),
    ),
    "trimmed-and-keyed": (
        {"email": "  Ada@Example.COM ", "name": "  Ada L ", "password": "correct horse"},
        ("Ada@Example.COM", "ada@example.com", "Ada L", True),
    ),
    "empty-password-cell-beside-a-hash": (
        {"email": "ada@example.com", "name": "Ada", "password": "", "password_hash": HASH},
        ("ada@example.com", "ada@example.com", "Ada", False),
    ),
    "null-hash-beside-a-password": (
        {"email": "ada@example.com", "name": "Ada", "password": "pass word", "password_hash": None},
        ("ada@example.com", "ada@example.com", "Ada", True),
    ),
    "unicode-email": (
        {"email": "Éva@exämple.com", "name": "Éva", "password": "correct horse"},
        ("Éva@exämple.com", "éva@xn--exmple-cua.com", "Éva", True),
    ),
}


@pytest.mark.parametrize(("fields", "expected"), list(GOOD_ROWS.values()), ids=list(GOOD_ROWS))
def test_a_good_row_becomes_a_new_user(
    fields: Mapping[str, object], expected: tuple[str, str, str, bool]
) -> None:
    row = check_row(fields)

    assert (row.email.value, row.email.key, row.name, row.password is not None) == expected
    assert (row.password is None) != (row.password_hash is None)


BAD_ROWS: dict[str, tuple[Mapping[str, object], str]] = {
    # id: (fields, the reason, exactly)
    "unknown-field": (
        {"email": "a@example.com", "name": "A", "password": "password1", "role": "admin"},
        'unknown field "role" (the fields are email, name, password, password_hash)',
    ),
    "missing-email": (
        {"name": "A", "password": "password1"},
        "missing field email",
    ),
    "missing-email-and-name": (
        {"password": "password1"},
        "missing fields email, name",
    ),
    "neither-password-nor-hash": (
        {"email": "a@example.com", "name": "A", "password": "", "password_hash": ""},
        "missing field password or password_hash (one of them is needed)",
    ),
    "both-password-and-hash": (
        {"email": "a@example.com", "name": "A", "password": "password1", "password_hash": HASH},
        "both password and password_hash are given (give one of them)",
    ),
    "email-not-a-string": (
        {"email": 42, "name": "A", "password": "password1"},
        "email: must be a string",
    ),
    "password-not-a-string": (
        {"email": "a@example.com", "name": "A", "password": False, "password_hash": HASH},
        "both password and password_hash are given (give one of them); password: must be a string",
    ),
    "bad-email": (
        {"email": "a@@example.com", "name": "A", "password": "password1"},
        "email: The part after the @-sign contains invalid characters: '@'.",
    ),
    "empty-email": (
        {"email": " ", "name": "A", "password": "password1"},
        "email: must not be empty",
    ),
    "empty-name": (
        {"email": "a@example.com", "name": "  ", "password": "password1"},
        "name: must be 1 to 100 characters after trimming",
    ),
    "long-name": (
        {"email": "a@example.com", "name": "n" * 101, "password": "password1"},
        "name: must be 1 to 100 characters after trimming",
    ),
    "short-password": (
        {"email": "a@example.com", "name": "A", "password": "short"},
        "password: must be 8 to 128 characters",
    ),
    "long-password": (
        {"email": "a@example.com", "name": "A", "password": "p" * 129},
        "password: must be 8 to 128 characters",
    ),
    "nul-in-name": (
        {"email": "a@example.com", "name": "A\x00B", "password": "password1"},
        "name: must be valid text (no NUL characters or lone surrogates)",
    ),
    "undecodable-bytes-in-email": (
        {"email": "a\udcff@example.com", "name": "A", "password": "password1"},
        "email: must be valid text (no NUL characters or lone surrogates)",
    ),
    "every-bad-value-at-once": (
        {"email": "nope", "name": "", "password": "short"},
        "email: An email address must have an @-sign.; "
        "name: must be 1 to 100 characters after trimming; "
        "password: must be 8 to 128 characters",
    ),
    "bcrypt-hash": (
        {"email": "a@example.com", "name": "A", "password_hash": "$2b$12$" + "a" * 53},
        "password_hash: must be an Argon2id hash in PHC string form "
        "($argon2id$v=19$m=...,t=...,p=...$salt$hash)",
    ),
}


@pytest.mark.parametrize(("fields", "reason"), list(BAD_ROWS.values()), ids=list(BAD_ROWS))
def test_a_bad_row_is_refused_with_a_clear_reason(
    fields: Mapping[str, object], reason: str
) -> None:
    with pytest.raises(InvalidArgumentError) as refused:
        check_row(fields)

    assert refused.value.message == reason


def _argon2id(time_cost: int, memory_kib: int, lanes: int, salt_len: int, hash_len: int) -> str:
    hasher = argon2.PasswordHasher(
        time_cost=time_cost,
        memory_cost=memory_kib,
        parallelism=lanes,
        salt_len=salt_len,
        hash_len=hash_len,
        type=argon2.Type.ID,
    )
    return hasher.hash("a password")


@pytest.mark.parametrize(
    "password_hash",
    [
        _argon2id(1, 8, 1, 16, 32),
        _argon2id(2, 19 * 1024, 1, 16, 32),
        _argon2id(1, 64, 4, 8, 4),  # the shortest salt and hash Argon2 allows
        _argon2id(1, 32, 2, 32, 64),
    ],
    ids=["cheapest", "owasp", "shortest-salt-and-hash", "long-salt-and-hash"],
)
def test_hashes_argon2_cffi_makes_are_kept(password_hash: str) -> None:
    assert check_password_hash(password_hash) == password_hash


NOT_ARGON2ID = {
    "argon2i": _argon2id(1, 8, 1, 16, 32).replace("$argon2id$", "$argon2i$"),
    "argon2d": _argon2id(1, 8, 1, 16, 32).replace("$argon2id$", "$argon2d$"),
    "old-version": _argon2id(1, 8, 1, 16, 32).replace("$v=19$", "$v=16$"),
    "no-version": _argon2id(1, 8, 1, 16, 32).replace("$v=19$", "$"),
    "memory-below-8-kib-per-lane": "$argon2id$v=19$m=8,t=1,p=2$c2FsdHNhbHQ$aGFzaGhhc2g",
    "zero-iterations": "$argon2id$v=19$m=8,t=0,p=1$c2FsdHNhbHQ$aGFzaGhhc2g",
    "memory-past-32-bits": "$argon2id$v=19$m=4294967296,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2g",
    "lanes-past-24-bits": "$argon2id$v=19$m=999999999,t=1,p=16777216$c2FsdHNhbHQ$aGFzaGhhc2g",
    "params-out-of-order": "$argon2id$v=19$t=1,m=8,p=1$c2FsdHNhbHQ$aGFzaGhhc2g",
    "salt-too-short": "$argon2id$v=19$m=8,t=1,p=1$c2FsdA$aGFzaGhhc2g",
    "padded-base64": "$argon2id$v=19$m=8,t=1,p=1$c2FsdHNhbHQ=$aGFzaGhhc2g",
    "impossible-base64-length": "$argon2id$v=19$m=8,t=1,p=1$c2FsdHNhbHRzY$aGFzaGhhc2g",
    "no-hash": "$argon2id$v=19$m=8,t=1,p=1$c2FsdHNhbHQ",
    "trailing-space": _argon2id(1, 8, 1, 16, 32) + " ",
    "plain-text": "correct horse battery staple",
    "too-long": "$argon2id$v=19$m=8,t=1,p=1$c2FsdHNhbHQ$" + "a" * 500,
}


@pytest.mark.parametrize("password_hash", list(NOT_ARGON2ID.values()), ids=list(NOT_ARGON2ID))
def test_anything_but_an_argon2id_phc_string_is_refused(password_hash: str) -> None:
    with pytest.raises(InvalidArgumentError) as refused:
        check_password_hash(password_hash)

    assert refused.value.details[0].field == "password_hash"


PHC_SHAPED = re.compile(
    r"\$argon2id\$v=19\$m=[1-9][0-9]{0,4},t=[1-9][0-9]{0,2},p=[1-9]"
    r"\$[A-Za-z0-9+/]{11,24}\$[A-Za-z0-9+/]{6,24}"
)


@settings(max_examples=300, derandomize=True, deadline=None)
@given(st.from_regex(PHC_SHAPED, fullmatch=True))
def test_what_is_kept_is_what_argon2_can_read(candidate: str) -> None:
    try:
        kept = check_password_hash(candidate)
    except InvalidArgumentError:
        return
    params = argon2.extract_parameters(kept)  # raises InvalidHashError if it cannot
    assert params.type is argon2.Type.ID


# The same addresses through registration and through the import: the same
# ones refused, the same kept with the same keys (both parse with Email.parse).
ADDRESSES = [
    "ada@example.com",
    "Ada.Lovelace+tag@Example.CO.UK",
    " padded@example.com ",
    "éva@exämple.com",
    "ada@XN--EXMPLE-CUA.com",
    "ada@example.test",
    "ada@localhost",
    "a..b@example.com",
    '"quoted"@example.com',
    "ada@ab--cd.com",
    "x@" + "a" * 64 + ".com",
    "no-at-sign",
]


@pytest.mark.parametrize("address", ADDRESSES)
async def test_the_import_and_registration_take_the_same_addresses(address: str) -> None:
    uow = InMemoryUnitOfWorkFactory()
    clock = FakeClock()
    tokens = JWTIssuer("a-secret-long-enough-for-hs256-0123456789", 900, clock)
    service = UserService(users=uow.store, uow=uow, hasher=FakeHasher(), tokens=tokens, clock=clock)
    try:
        registered: str | None = (
            await service.register(Registration(address, "password1", "Ada"))
        ).email.key
    except InvalidArgumentError:
        registered = None
    try:
        imported: str | None = check_row(
            {"email": address, "name": "Ada", "password": "password1"}
        ).email.key
    except InvalidArgumentError:
        imported = None

    assert imported == registered


# ---------------------------------------------------------------- blocks


def test_a_checked_block_holds_new_users_their_passwords_and_the_rejects() -> None:
    checker = BlockChecker()
    checker.add(2, {"email": "a@example.com", "name": "A", "password_hash": HASH})
    checker.add(3, {"email": "b@example.com", "name": "B", "password": "password1"})
    checker.reject(4, "not valid CSV: unexpected end of data")
    checker.add(5, {"email": "bad", "name": "C", "password": "password1"})

    block = checker.block(2, 5, end=123)

    assert [(u[0], u[2], u[3], u[4], u[5]) for u in block.users] == [
        (2, "a@example.com", "a@example.com", "A", HASH),
        (3, "b@example.com", "b@example.com", "B", ""),
    ]
    assert block.passwords == [(1, "password1")]
    assert block.rejects == [
        (4, "not valid CSV: unexpected end of data"),
        (5, "email: An email address must have an @-sign."),
    ]
    assert (block.first_line, block.last_line, block.end, block.rows) == (2, 5, 123, 4)


def test_new_user_ids_are_uuid7_growing_with_time() -> None:
    ids = time_ordered_ids()
    made = [next(ids) for _ in range(3000)]
    parsed = [uuid.UUID(text) for text in made]

    assert len(set(made)) == 3000
    assert {u.version for u in parsed} == {7}
    assert {u.variant for u in parsed} == {uuid.RFC_4122}
    stamps = [u.int >> 80 for u in parsed]  # milliseconds
    assert stamps == sorted(stamps)


# ------------------------------------------------------------------- runs


def _block(first_line: int, *emails: str, password: str | None = None) -> CheckedBlock:
    checker = BlockChecker()
    for line, email in enumerate(emails, start=first_line):
        secret = {"password": password} if password else {"password_hash": HASH}
        checker.add(line, {"email": email, "name": "User", **secret})
    last = first_line + len(emails) - 1
    return checker.block(first_line, last, end=100 * last)


class Run:
    def __init__(self, sink: InMemoryUserImportSink, loaders: int = 2) -> None:
        self.sink = sink
        self.loaded: list[LoadedBatch] = []
        self.clock = FakeClock()
        self.importer = UserImport(
            sink=sink,
            hasher=FakeHasher(),
            clock=self.clock,
            on_loaded=self.loaded.append,
            loaders=loaders,
        )

    async def load_all(self, *batches: list[CheckedBlock]) -> None:
        for batch in batches:
            await self.importer.load(batch)
        await self.importer.settle()


@pytest.mark.parametrize("loaders", [1, 2, 3], ids=["one-loader", "two-loaders", "three"])
async def test_of_two_rows_with_one_email_the_first_wins_across_batches(loaders: int) -> None:
    sink = InMemoryUserImportSink()
    run = Run(sink, loaders)
    first = _block(2, "a@example.com", "b@example.com", "A@example.com")
    second = _block(5, "B@EXAMPLE.com", "c@example.com")
    third = _block(7, "c@example.com", "d@example.com", "a@example.com")

    await run.load_all([first], [second], [third])

    assert {key: user[0] for key, user in sink.users.items()} == {
        "a@example.com": 2,
        "b@example.com": 3,
        "c@example.com": 6,
        "d@example.com": 8,
    }
    tally = run.importer.tally
    assert (tally.imported, tally.skipped, tally.rejected) == (4, 4, 0)
    assert (tally.last_line, tally.end) == (9, 900)
    assert [(b.imported, b.skipped) for b in run.loaded] == [(2, 1), (1, 1), (1, 2)]


async def test_emails_already_there_are_skipped() -> None:
    sink = InMemoryUserImportSink()
    await Run(sink).load_all([_block(2, "a@example.com", "b@example.com")])
    again = Run(sink)

    await again.load_all([_block(2, "a@example.com", "b@example.com", "c@example.com")])

    tally = again.importer.tally
    assert (tally.imported, tally.skipped) == (1, 2)
    assert sorted(sink.users) == ["a@example.com", "b@example.com", "c@example.com"]


async def test_batches_loaded_at_once_commit_and_are_reported_in_order() -> None:
    # The earlier loads work longest: left alone, the later would commit first.
    sink = InMemoryUserImportSink(work_seconds={1: 0.03, 2: 0.02, 4: 0.02})
    run = Run(sink, loaders=3)
    blocks = [_block(2 + 2 * i, f"u{i}@example.com", f"v{i}@example.com") for i in range(6)]

    await run.load_all(*([block] for block in blocks))

    assert [commit[0][0] for commit in sink.commits] == [2, 4, 6, 8, 10, 12]
    assert [batch.last_line for batch in run.loaded] == [3, 5, 7, 9, 11, 13]


async def test_a_batch_of_blocks_is_one_load_and_its_rejects_are_reported() -> None:
    sink = InMemoryUserImportSink()
    run = Run(sink)
    checker = BlockChecker()
    checker.add(2, {"email": "a@example.com", "name": "A", "password_hash": HASH})
    checker.add(3, {"email": "a@example", "name": "B", "password_hash": HASH})
    with_reject = checker.block(2, 3, end=30)

    await run.load_all([with_reject, _block(4, "c@example.com")])

    assert sink.calls == 1
    assert len(run.loaded) == 1
    assert run.loaded[0].rejects == [
        (3, "email: The part after the @-sign is not valid. It should have a period.")
    ]
    tally = run.importer.tally
    assert (tally.imported, tally.skipped, tally.rejected, tally.rows) == (2, 0, 1, 3)


async def test_passwords_are_hashed_before_the_load() -> None:
    sink = InMemoryUserImportSink()
    run = Run(sink)
    block = _block(2, "a@example.com", "b@example.com", password="password1")

    with pytest.raises(ValueError, match="must be hashed"):
        await run.importer.load([block])
    hashed = await run.importer.hash_passwords(block)
    await run.load_all([hashed])

    expected = await FakeHasher().hash("password1")
    assert [user[5] for user in sink.users.values()] == [expected, expected]
    assert hashed.passwords == []


async def test_a_failed_load_is_raised_and_the_batch_after_it_does_not_commit() -> None:
    sink = InMemoryUserImportSink(fail_load=2)
    run = Run(sink, loaders=2)

    with pytest.raises(UnavailableError):
        await run.load_all(
            [_block(2, "a@example.com")],
            [_block(3, "b@example.com")],
            [_block(4, "c@example.com")],
            [_block(5, "d@example.com")],
        )

    assert sorted(sink.users) == ["a@example.com"]
    assert run.importer.tally.last_line == 2


async def test_abandoned_loads_roll_back() -> None:
    started = asyncio.Event()

    class SlowSink(InMemoryUserImportSink):
        async def load(self, *args: object, **kwargs: object) -> tuple[int, int]:
            started.set()
            await asyncio.sleep(3600)
            raise AssertionError("not reached")

    sink = SlowSink()
    run = Run(sink)
    await run.importer.load([_block(2, "a@example.com")])
    await started.wait()

    await run.importer.abandon()
    await run.importer.settle()

    assert sink.users == {}
    assert run.importer.tally.rows == 0
