"""Whole import runs (the pipeline of main/importer.py: file blocks checked
in worker processes, passwords hashed, batches loaded two at a time) into
the real database: good, bad, duplicate and mixed rows, in CSV and JSON
Lines; the rejects file; and a second run skipping what the first imported.
Batches of three rows, so that every file spans several."""

from __future__ import annotations

import csv
import json
import uuid
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import argon2
import asyncpg
import pytest

from ledgerline.domain.events import UserRegistered
from ledgerline.main.core import Core
from ledgerline.main.importer import (
    ImportFailedError,
    ImportFile,
    ImportResult,
    run_import,
    worker_processes,
)
from ledgerline.repository.postgres.users import PostgresUserRepository
from ledgerline.usecase.users import Registration
from tests.integration.conftest import PASSWORD, cheap_settings

pytestmark = pytest.mark.timeout(120)

HASH = argon2.PasswordHasher(time_cost=1, memory_cost=8, parallelism=1).hash("imported secret")


@pytest.fixture(scope="module")
def processes() -> Iterator[ProcessPoolExecutor]:
    with worker_processes(2) as pool:
        yield pool


@dataclass(frozen=True)
class Case:
    name: str
    lines: list[str]
    # (imported, skipped, rejected)
    counts: tuple[int, int, int]
    # the users there afterwards: email key -> name
    users: dict[str, str]
    # (line, reason) of each rejected row
    rejects: list[tuple[int, str]]


def _csv(*rows: tuple[str, ...]) -> list[str]:
    lines: list[str] = []
    for row in rows:
        with_commas = [f'"{cell}"' if "," in cell or "\n" in cell else cell for cell in row]
        lines.append(",".join(with_commas))
    return lines


def _jsonl(*rows: dict[str, object]) -> list[str]:
    return [json.dumps(row) for row in rows]


CASES = [
    Case(
        "users.csv",
        _csv(
            ("email", "name", "password_hash", "password"),
            ("ada@example.com", "Ada", HASH, ""),
            ("bob@example.com", "Bob", "", "bob's password"),
            ("cy@example.com", "Cy", HASH, ""),
            ("di@example.com", "Di", HASH, ""),
        ),
        (4, 0, 0),
        {
            "ada@example.com": "Ada",
            "bob@example.com": "Bob",
            "cy@example.com": "Cy",
            "di@example.com": "Di",
        },
        [],
    ),
    Case(
        "bad.csv",
        _csv(
            ("email", "name", "password"),
            ("not-an-email", "Ada", "password1"),
            ("bob@example.com", "", "password1"),
            ("cy@example.com", "Cy", "short"),
            ("di@example.com", "Di", "password1", "extra"),
        ),
        (0, 0, 4),
        {},
        [
            (2, "email: An email address must have an @-sign."),
            (3, "name: must be 1 to 100 characters after trimming"),
            (4, "password: must be 8 to 128 characters"),
            (5, "has 4 fields, the header has 3"),
        ],
    ),
    Case(
        "duplicates.csv",
        _csv(
            ("email", "name", "password_hash"),
            ("ada@example.com", "Ada first", HASH),
            ("ADA@example.com", "Ada in the same batch", HASH),
            ("bob@example.com", "Bob", HASH),
            ("Ada@Example.com", "Ada in the next batch", HASH),
            ("bob@EXAMPLE.com", "Bob again", HASH),
            ("taken@example.com", "Not the registered one", HASH),
            ("cy@example.com", "Cy", HASH),
            ("ada@example.com", "Ada far after", HASH),
        ),
        (3, 5, 0),
        {
            "ada@example.com": "Ada first",
            "bob@example.com": "Bob",
            "cy@example.com": "Cy",
            "taken@example.com": "Registered",
        },
        [],
    ),
    Case(
        "mixed.jsonl",
        [
            *_jsonl(
                {"email": "ada@example.com", "name": "Ada", "password_hash": HASH},
                {"email": "bob@example.com", "name": "Bob", "password": "bob's password"},
                {"email": "ada@example.com", "name": "Ada again", "password_hash": HASH},
                {"email": "cy@example.com", "name": "Cy", "password": "pw", "password_hash": HASH},
                {"email": "taken@example.com", "name": "T", "password_hash": HASH},
                {"email": "di@example.com", "name": "Di"},
                {"email": "ed@example.com", "name": "Ed", "password_hash": "$2b$12$abc"},
            ),
            "{not json",
            "",
            *_jsonl({"email": "fay@example.com", "name": "Fay", "password_hash": HASH}),
        ],
        (3, 2, 4),
        {
            "ada@example.com": "Ada",
            "bob@example.com": "Bob",
            "fay@example.com": "Fay",
            "taken@example.com": "Registered",
        },
        [
            (4, "both password and password_hash are given (give one of them)"),
            (6, "missing field password or password_hash (one of them is needed)"),
            (
                7,
                "password_hash: must be an Argon2id hash in PHC string form "
                "($argon2id$v=19$m=...,t=...,p=...$salt$hash)",
            ),
            (8, "not valid JSON: Expecting property name enclosed in double quotes at column 2"),
        ],
    ),
]


async def _import(database_url: str, path: Path, processes: ProcessPoolExecutor) -> ImportResult:
    return await run_import(
        cheap_settings(), database_url, ImportFile(path), processes, batch_rows=3, loaders=2
    )


async def _users(pool: asyncpg.Pool) -> dict[str, str]:
    return {row["email_key"]: row["name"] for row in await pool.fetch("SELECT * FROM users")}


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
async def test_an_import_run(
    case: Case,
    core: Core,
    pool: asyncpg.Pool,
    database_url: str,
    processes: ProcessPoolExecutor,
    tmp_path: Path,
) -> None:
    await core.users.register(Registration("taken@example.com", PASSWORD, "Registered"))
    path = tmp_path / case.name
    path.write_text("\n".join(case.lines) + "\n", encoding="utf-8")

    result = await _import(database_url, path, processes)

    tally = result.tally
    assert (tally.imported, tally.skipped, tally.rejected) == case.counts
    assert (result.interrupted_by, tally.end) == (None, path.stat().st_size)
    expected_users = {"taken@example.com": "Registered", **case.users}
    assert await _users(pool) == expected_users
    with result.rejects.open(newline="", encoding="utf-8") as rejects:
        assert [tuple(row) for row in csv.reader(rejects)] == [
            ("line", "reason"),
            *((str(line), reason) for line, reason in case.rejects),
        ]
    # One event per user, as UserRegistered.of(the stored user) gives it.
    repository = PostgresUserRepository(pool)
    events = await pool.fetch("SELECT aggregate_id, version, payload::text AS p FROM outbox")
    assert len(events) == len(expected_users)
    for event in events:
        user = await repository.get_by_id(event["aggregate_id"])
        assert user is not None
        assert json.loads(event["p"]) == UserRegistered.of(user).data()
        assert event["version"] == 1


async def test_passwords_are_hashed_with_the_configured_argon2id(
    pool: asyncpg.Pool, database_url: str, processes: ProcessPoolExecutor, tmp_path: Path
) -> None:
    path = tmp_path / "plain.jsonl"
    rows = [
        {"email": f"u{i}@example.com", "name": "U", "password": f"password {i}"} for i in range(5)
    ]
    path.write_text("\n".join(json.dumps(row) for row in rows) + "\n")

    await _import(database_url, path, processes)

    hasher = argon2.PasswordHasher()
    settings = cheap_settings()
    for row in rows:
        stored = await pool.fetchval(
            "SELECT password_hash FROM users WHERE email_key = $1", row["email"]
        )
        assert hasher.verify(stored, row["password"])
        params = argon2.extract_parameters(stored)
        assert (params.type, params.time_cost, params.memory_cost) == (
            argon2.Type.ID,
            settings.argon2_time_cost,
            settings.argon2_memory_kib,
        )


async def test_a_second_run_skips_everything_the_first_imported(
    pool: asyncpg.Pool, database_url: str, processes: ProcessPoolExecutor, tmp_path: Path
) -> None:
    path = tmp_path / "users.csv"
    rows = [("email", "name", "password_hash")]
    rows += [(f"user{i}@example.com", f"User {i}", HASH) for i in range(20)]
    path.write_text("\n".join(_csv(*rows)) + "\n")
    first = await _import(database_url, path, processes)
    ids = await pool.fetch("SELECT id FROM users ORDER BY id")

    second = await _import(database_url, path, processes)

    assert (first.tally.imported, first.tally.skipped) == (20, 0)
    assert (second.tally.imported, second.tally.skipped, second.tally.rejected) == (0, 20, 0)
    assert await pool.fetch("SELECT id FROM users ORDER BY id") == ids
    assert await pool.fetchval("SELECT count(*) FROM outbox") == 20
    assert all(isinstance(row["id"], uuid.UUID) and row["id"].version == 7 for row in ids)


async def test_a_batch_that_fails_stops_the_run_and_the_batches_before_it_stay(
    pool: asyncpg.Pool, database_url: str, processes: ProcessPoolExecutor, tmp_path: Path
) -> None:
    # This test's own database refuses one user, as a database in trouble
    # might refuse a batch.
    await pool.execute(
        "CREATE FUNCTION refuse_boom() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
        " IF NEW.email_key = 'boom@example.com' THEN RAISE EXCEPTION 'boom refused'; END IF;"
        " RETURN NEW; END $$"
    )
    await pool.execute(
        "CREATE TRIGGER refuse_boom BEFORE INSERT ON users FOR EACH ROW"
        " EXECUTE FUNCTION refuse_boom()"
    )
    emails = [f"user{i}@example.com" for i in range(30)]
    emails[13] = "boom@example.com"  # line 15, in the fifth batch (lines 14 to 16)
    path = tmp_path / "users.csv"
    path.write_text(
        "\n".join(_csv(("email", "name", "password_hash"), *((e, "U", HASH) for e in emails)))
        + "\n"
    )

    with pytest.raises(ImportFailedError, match="boom refused") as failed:
        await _import(database_url, path, processes)

    tally = failed.value.tally
    assert (tally.imported, tally.skipped, tally.rejected, tally.last_line) == (12, 0, 0, 13)
    assert set(await _users(pool)) == set(emails[:12])
    assert await pool.fetchval("SELECT count(*) FROM outbox") == 12
