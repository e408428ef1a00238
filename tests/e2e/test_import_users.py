"""`ledgerline import users FILE` as an operator runs it: the summary line and
the rejects file, a file refused for its header, an import stopped by
SIGINT or SIGTERM half-way (exit 130 or 0, the committed batches whole
with their events, a second run doing the rest and nothing twice), and the
embedded PostgreSQL when no database is configured."""

from __future__ import annotations

import asyncio
import csv
import re
import signal
import subprocess
import time
from pathlib import Path

import asyncpg
import psutil
import pytest

from tests.e2e.conftest import JWT_SECRET, LEDGERLINE, clean_env

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

HASH = (
    "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0c2FsdA"
    "$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g"
)
SUMMARY = re.compile(r"^imported (\d+), skipped (\d+), rejected (\d+)$", re.MULTILINE)


def _import(path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [LEDGERLINE, "import", "users", str(path), *args],
        env=clean_env(LEDGERLINE_JWT_SECRET=JWT_SECRET, **env),
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )


def _start_import(path: Path, *args: str, **env: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [LEDGERLINE, "import", "users", str(path), *args],
        env=clean_env(LEDGERLINE_JWT_SECRET=JWT_SECRET, **env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _summary(stdout: str) -> tuple[int, int, int]:
    found = SUMMARY.search(stdout)
    assert found is not None, stdout
    imported, skipped, rejected = (int(n) for n in found.groups())
    return imported, skipped, rejected


async def test_an_import_prints_its_summary_and_lists_its_rejects(
    database_url: str, tmp_path: Path
) -> None:
    path = tmp_path / "users.csv"
    path.write_text(
        "email,name,password_hash\n"
        f'ada@example.com,Ada,"{HASH}"\n'
        f'ada@example.com,Ada again,"{HASH}"\n'
        f'bad-email,Bob,"{HASH}"\n'
        f'cy@example.com,Cy,"{HASH}"\n'
    )

    result = await asyncio.to_thread(_import, path, LEDGERLINE_DATABASE_URL=database_url)

    assert result.returncode == 0, result.stderr
    assert result.stdout == "imported 2, skipped 1, rejected 1\n"
    assert f"rejected rows are listed in {path}.rejects.csv" in result.stderr
    with (tmp_path / "users.csv.rejects.csv").open(newline="") as rejects:
        assert list(csv.reader(rejects)) == [
            ["line", "reason"],
            ["4", "email: An email address must have an @-sign."],
        ]
    conn = await asyncpg.connect(database_url)
    try:
        assert await conn.fetchval("SELECT count(*) FROM users") == 2
        assert await conn.fetchval("SELECT count(*) FROM outbox") == 2
    finally:
        await conn.close()


async def test_a_file_with_a_bad_header_is_refused_and_changes_nothing(
    database_url: str, tmp_path: Path
) -> None:
    path = tmp_path / "users.csv"
    path.write_text(f'email,name,password_hash,role\nada@example.com,Ada,"{HASH}",admin\n')

    result = await asyncio.to_thread(_import, path, LEDGERLINE_DATABASE_URL=database_url)

    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.strip() == (
        f'error: {path}: line 1: unknown column "role" '
        "(the columns are email, name, password, password_hash)"
    )
    assert not (tmp_path / "users.csv.rejects.csv").exists()
    conn = await asyncpg.connect(database_url)
    try:
        assert await conn.fetchval("SELECT count(*) FROM users") == 0
    finally:
        await conn.close()


def test_a_database_that_does_not_answer_stops_the_import_with_one_line(tmp_path: Path) -> None:
    path = tmp_path / "users.csv"
    path.write_text(f'email,name,password_hash\nada@example.com,Ada,"{HASH}"\n')

    result = _import(path, LEDGERLINE_DATABASE_URL="postgresql://postgres@127.0.0.1:1/nothing")

    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("error: the import stopped: ")
    assert result.stderr.rstrip().endswith("(nothing was imported)")
    assert not (tmp_path / "users.csv.rejects.csv").exists()


async def test_a_file_whose_rejects_cannot_be_written_is_refused(
    database_url: str, tmp_path: Path
) -> None:
    path = tmp_path / "users.csv"
    path.write_text(f'email,name,password_hash\nada@example.com,Ada,"{HASH}"\n')
    (tmp_path / "users.csv.rejects.csv").mkdir()  # a directory where the file would go

    result = await asyncio.to_thread(_import, path, LEDGERLINE_DATABASE_URL=database_url)

    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"error: {path}: cannot write the rejects file {path}.rejects.csv: Is a directory"
    )
    conn = await asyncpg.connect(database_url)
    try:
        assert await conn.fetchval("SELECT count(*) FROM users") == 0
    finally:
        await conn.close()


ROWS = 150_000


def _large_file(path: Path) -> dict[int, str]:
    """A CSV of ROWS rows: every 97th row a bad email, every 89th a repeat
    of an earlier row's email. Returns the email key each line makes a new
    user with (the first line of each email)."""
    firsts: dict[int, str] = {}
    seen: set[str] = set()
    with path.open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(("email", "name", "password_hash"))
        for i in range(ROWS):
            line = i + 2
            if i % 97 == 96:
                email = f"bad{i}@@example.com"
            elif i % 89 == 88:
                email = f"user{i // 2}@example.com"
            else:
                email = f"user{i}@example.com"
            writer.writerow((email, f"User {i}", HASH))
            if "@@" not in email and email not in seen:
                seen.add(email)
                firsts[line] = email
    return firsts


async def _state(database_url: str) -> tuple[set[str], int, int]:
    """The users' email keys, the events, and the users that have not
    exactly one event."""
    conn = await asyncpg.connect(database_url)
    try:
        keys = {row["email_key"] for row in await conn.fetch("SELECT email_key FROM users")}
        events = await conn.fetchval("SELECT count(*) FROM outbox")
        odd = await conn.fetchval(
            "SELECT count(*) FROM users u WHERE (SELECT count(*) FROM outbox o"
            " WHERE o.aggregate_type = 'user' AND o.aggregate_id = u.id) <> 1"
        )
        return keys, events, odd
    finally:
        await conn.close()


async def _wait_for_users(database_url: str, at_least: int, seconds: float = 120) -> int:
    conn = await asyncpg.connect(database_url)
    try:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            count = int(await conn.fetchval("SELECT count(*) FROM users"))
            if count >= at_least:
                return count
            await asyncio.sleep(0.05)
        raise AssertionError(f"fewer than {at_least} users after {seconds} s")
    finally:
        await conn.close()


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["sigint", "sigterm"])
async def test_an_interrupted_import_keeps_whole_batches_and_a_rerun_does_the_rest(
    database_url: str, tmp_path: Path, signum: signal.Signals
) -> None:
    path = tmp_path / "users.csv"
    firsts = await asyncio.to_thread(_large_file, path)
    proc = _start_import(path, "--batch-size", "2000", LEDGERLINE_DATABASE_URL=database_url)
    try:
        await _wait_for_users(database_url, at_least=1)
        proc.send_signal(signum)
        stdout, stderr = await asyncio.to_thread(proc.communicate, timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

    # A clean stop on SIGTERM, as serve and worker; Ctrl-C is the shell's 130.
    assert proc.returncode == (0 if signum is signal.SIGTERM else 130), stderr
    imported, skipped, rejected = _summary(stdout)
    stopped = re.search(rf"interrupted by {signum.name}: the rows up to line (\d+) ", stderr)
    assert stopped is not None, stderr
    last_line = int(stopped.group(1))
    assert 2 <= last_line < ROWS + 1, "the signal was meant to land half-way"
    # Exactly the file's new users up to that line, each with its one event.
    keys, events, odd = await _state(database_url)
    assert keys == {email for line, email in firsts.items() if line <= last_line}
    assert (imported, events, odd) == (len(keys), len(keys), 0)
    assert imported + skipped + rejected == last_line - 1

    rerun = await asyncio.to_thread(_import, path, LEDGERLINE_DATABASE_URL=database_url)

    assert rerun.returncode == 0, rerun.stderr
    again = _summary(rerun.stdout)
    keys, events, odd = await _state(database_url)
    assert keys == set(firsts.values())
    assert (events, odd) == (len(keys), 0)
    assert again[0] == len(firsts) - imported  # nothing imported twice
    assert sum(again) == ROWS


def _postmasters(data_dir: Path) -> list[psutil.Process]:
    pgdata = str(data_dir / "postgres")
    return [p for p in psutil.process_iter(["cmdline"]) if pgdata in (p.info["cmdline"] or [])]


async def test_with_no_database_configured_it_imports_into_the_embedded_postgres(
    tmp_path: Path,
) -> None:
    path = tmp_path / "users.jsonl"
    path.write_text(
        '{"email": "ada@example.com", "name": "Ada", "password": "correct horse"}\n'
        f'{{"email": "bob@example.com", "name": "Bob", "password_hash": "{HASH}"}}\n'
    )
    data_dir = str(tmp_path / "data")

    first = await asyncio.to_thread(_import, path, LEDGERLINE_DATA_DIR=data_dir)
    second = await asyncio.to_thread(_import, path, LEDGERLINE_DATA_DIR=data_dir)

    assert first.returncode == 0, first.stderr
    assert first.stdout == "imported 2, skipped 0, rejected 0\n"
    assert second.returncode == 0, second.stderr
    assert second.stdout == "imported 0, skipped 2, rejected 0\n"
    assert _postmasters(tmp_path / "data") == [], "the embedded PostgreSQL outlived the import"
