"""Bulk import benchmark: `ledgerline import users` against a raw COPY of the
same rows into the same table, on this machine's PostgreSQL, in the same
run; and (--plain N) the hashing of plain passwords against the cores'
Argon2id limit, measured in the same run.

    .venv/bin/python -m bench.import_users                  # 1,000,000 rows, 1 % bad
    .venv/bin/python -m bench.import_users --rows 200000 --bad-fraction 0.05
    .venv/bin/python -m bench.import_users --plain 2000

Rows mode. A CSV of --rows users with password hashes is generated in a
temporary directory: Argon2id PHC strings of the service's parameters with
random salt and hash bytes (the import keeps a hash as given, checking only
its form, so real hashes would cost hours and change nothing);
--bad-fraction of the rows are broken, in turn a bad email, an empty name,
a bcrypt hash and a missing column. A fresh database `ledgerline_bench_import`
is made on --database-url and migrated, then:

1. raw COPY (the reference): the good rows, prepared in memory beforehand
   (ids made as the import makes them, email keys as Email.parse makes
   them), go into users in one binary COPY (asyncpg copy_records_to_table);
   its time is the reference;
2. the database is made again, and `ledgerline import users FILE` runs as a
   subprocess (JSON logs), its process tree's memory sampled every 0.1 s;
   its rows/s are taken over the whole command (start-up included) and
   over the import itself (its closing log line);
3. raw COPY again, on a fresh database: the reference is the mean of the
   two, so that a machine whose speed drifts weighs on both sides.

Then the figures are checked: every good row imported (with its event),
every bad row in FILE.rejects.csv with its line number. The exit code is 1
when they are not.

Plain mode (--plain N): N rows with plain passwords; the Argon2id limit is
measured first and last (a thread per core hashing in a tight loop with the
service's default parameters, for --limit-seconds), and the import's hashes
per second (its own time, from its closing log line) are set against it.

The database and the temporary directory are dropped in `finally` blocks.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import csv
import json
import os
import random
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import argon2
import asyncpg
import psutil

from bench.run import (
    DEFAULT_ADMIN_URL,
    VENV_BIN,
    drop_database,
    machine_line,
    migrated_database,
)
from ledgerline.config import Settings
from ledgerline.domain.user import Email
from ledgerline.usecase.user_import import time_ordered_ids

BENCH_DB = "ledgerline_bench_import"
TARGET_RATIO = 0.2
TARGET_HASH_RATIO = 0.9
PEAK_RSS_LIMIT_MB = 300
USER_COLUMNS = (
    "id",
    "email",
    "email_key",
    "name",
    "password_hash",
    "is_admin",
    "created_at",
    "updated_at",
)


@dataclass
class Generated:
    path: Path
    good: list[tuple[str, str, str]] = field(default_factory=list)  # email, name, hash
    bad_lines: set[int] = field(default_factory=set)


def _fake_argon2id(rnd: random.Random, params: str) -> str:
    salt = base64.b64encode(rnd.randbytes(16)).decode().rstrip("=")
    digest = base64.b64encode(rnd.randbytes(32)).decode().rstrip("=")
    return f"$argon2id$v=19${params}${salt}${digest}"


def generate(directory: Path, rows: int, bad_fraction: float, *, plain: bool) -> Generated:
    """The CSV; the first line is the header, so row i is on line i + 2."""
    s = Settings()
    params = f"m={s.argon2_memory_kib},t={s.argon2_time_cost},p={s.argon2_parallelism}"
    rnd = random.Random(20261202)
    generated = Generated(directory / ("plain.csv" if plain else "users.csv"))
    domains = [f"example{n}.com" for n in range(50)] + ["mail.example.org", "example.co.uk"]
    bad_every = round(1 / bad_fraction) if bad_fraction > 0 else 0
    with generated.path.open("w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out)
        writer.writerow(("email", "name", "password" if plain else "password_hash"))
        for i in range(rows):
            email = f"user{i}.{rnd.randrange(36**4):04x}@{rnd.choice(domains)}"
            name = f"User Number {i}"
            secret = f"pass-{i}-{rnd.randrange(10**6)}" if plain else _fake_argon2id(rnd, params)
            row: tuple[str, ...] = (email, name, secret)
            if bad_every and i % bad_every == bad_every - 1:
                generated.bad_lines.add(i + 2)
                kind = (i // bad_every) % 4
                if kind == 0:
                    row = (email.replace("@", "@@"), name, secret)
                elif kind == 1:
                    row = (email, "   ", secret)
                elif kind == 2:
                    row = (email, name, "$2b$12$" + "a" * 53 if not plain else "short")
                else:
                    row = (email, name)
            else:
                generated.good.append((email, name, secret))
            writer.writerow(row)
    return generated


# -------------------------------------------------------------- raw COPY


def fresh_database(admin_url: str) -> str:
    return migrated_database(admin_url, BENCH_DB)


async def _raw_copy(url: str, records: list[tuple[object, ...]]) -> float:
    conn = await asyncpg.connect(url)
    try:
        started = time.perf_counter()
        await conn.copy_records_to_table("users", records=records, columns=USER_COLUMNS)
        return time.perf_counter() - started
    finally:
        await conn.close()


def raw_copy(admin_url: str, good: list[tuple[str, str, str]]) -> float:
    """Rows per second of one binary COPY of the good rows into users."""
    url = fresh_database(admin_url)
    now = datetime.now(UTC)
    ids = time_ordered_ids()
    records: list[tuple[object, ...]] = [
        (next(ids), email, Email.parse(email).key, name, password_hash, False, now, now)
        for email, name, password_hash in good
    ]
    seconds = asyncio.run(_raw_copy(url, records))
    return len(records) / seconds


# ---------------------------------------------------------------- import


@dataclass
class ImportRun:
    returncode: int
    wall_seconds: float
    own_seconds: float | None  # the import's own time, from its closing log line
    summary: tuple[int, int, int] | None
    peak_main_rss_mb: float
    peak_workers_rss_mb: list[float]
    stderr_tail: str

    @property
    def peak_tree_rss_mb(self) -> float:
        """An upper bound: the workers' peaks count the pages they share
        with the main process (forked from it) again."""
        return self.peak_main_rss_mb + sum(self.peak_workers_rss_mb)


def _high_water_mark(pid: int) -> int:
    """A process's peak RSS (VmHWM) since it started its program, in bytes:
    exact, where a sample of its RSS could miss a peak between samples."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def _sample_memory(pid: int, stop: threading.Event, peaks: dict[int, int]) -> None:
    """Keeps each process's peak RSS (pid: bytes) in the tree under pid."""
    try:
        main = psutil.Process(pid)
        while not stop.is_set():
            try:
                pids = [pid, *(child.pid for child in main.children(recursive=True))]
            except psutil.Error:
                return
            for each in pids:
                with contextlib.suppress(OSError):  # gone meanwhile
                    peaks[each] = max(peaks.get(each, 0), _high_water_mark(each))
            stop.wait(0.05)
    except psutil.Error:
        return


def run_import(db_url: str, path: Path, workdir: Path) -> ImportRun:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEDGERLINE_")}
    env.update(
        LEDGERLINE_DATABASE_URL=db_url,
        LEDGERLINE_JWT_SECRET=secrets.token_urlsafe(48),
        LEDGERLINE_DATA_DIR=str(workdir / "data"),
        LEDGERLINE_LOG_FORMAT="json",
    )
    log = workdir / "import.log"
    peaks: dict[int, int] = {}
    stop = threading.Event()
    started = time.perf_counter()
    with log.open("w") as err:
        proc = subprocess.Popen(
            [str(VENV_BIN / "ledgerline"), "import", "users", str(path)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
        )
        sampler = threading.Thread(target=_sample_memory, args=(proc.pid, stop, peaks))
        sampler.start()
        try:
            stdout, _ = proc.communicate(timeout=3600)
        finally:
            stop.set()
            sampler.join()
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    wall = time.perf_counter() - started
    lines = log.read_text().splitlines()
    own: float | None = None
    for line in lines:
        if '"import ended"' in line:
            own = float(json.loads(line)["seconds"])
    summary = None
    if stdout.startswith("imported "):
        parts = stdout.split("\n", 1)[0].replace(",", "").split()
        summary = (int(parts[1]), int(parts[3]), int(parts[5]))
    return ImportRun(
        returncode=proc.returncode,
        wall_seconds=wall,
        own_seconds=own,
        summary=summary,
        peak_main_rss_mb=peaks.pop(proc.pid, 0) / 2**20,
        peak_workers_rss_mb=[peak / 2**20 for peak in peaks.values()],
        stderr_tail="\n".join(lines[-5:]),
    )


async def _counts(url: str) -> tuple[int, int]:
    conn = await asyncpg.connect(url)
    try:
        users = int(await conn.fetchval("SELECT count(*) FROM users"))
        events = int(await conn.fetchval("SELECT count(*) FROM outbox"))
        return users, events
    finally:
        await conn.close()


def rejected_lines(path: Path) -> set[int]:
    with Path(f"{path}.rejects.csv").open(newline="", encoding="utf-8") as rejects:
        reader = csv.reader(rejects)
        next(reader)
        return {int(row[0]) for row in reader}


# ----------------------------------------------------------------- Argon2


def argon2_limit(seconds: float, threads: int) -> float:
    """Hashes per second of ``threads`` threads hashing in a tight loop with
    the service's default Argon2id parameters (argon2-cffi releases the GIL)."""
    s = Settings()
    hasher = argon2.PasswordHasher(
        time_cost=s.argon2_time_cost,
        memory_cost=s.argon2_memory_kib,
        parallelism=s.argon2_parallelism,
        type=argon2.Type.ID,
    )
    deadline = time.perf_counter() + seconds

    def loop() -> int:
        done = 0
        while time.perf_counter() < deadline:
            hasher.hash(f"password {done}")
            done += 1
        return done

    started = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        total = sum(pool.map(lambda _: loop(), range(threads)))
    return total / (time.perf_counter() - started)


# -------------------------------------------------------------------- run


@dataclass
class Options:
    database_url: str
    rows: int
    bad_fraction: float
    plain: int | None
    limit_seconds: float


def _import_line(label: str, rows: int, run: ImportRun) -> str:
    own = f"{rows / run.own_seconds:,.0f} rows/s" if run.own_seconds else "?"
    return (
        f"  {label}: {rows / run.wall_seconds:,.0f} rows/s over the whole command "
        f"({run.wall_seconds:.1f} s), {own} over the import itself "
        f"({run.own_seconds or float('nan'):.1f} s)"
    )


def run_rows(opts: Options, workdir: Path) -> int:
    print(machine_line(), flush=True)
    generated = generate(workdir, opts.rows, opts.bad_fraction, plain=False)
    size_mb = generated.path.stat().st_size / 2**20
    good, bad = len(generated.good), len(generated.bad_lines)
    print(
        f"generated {opts.rows:,} rows ({good:,} good, {bad:,} bad), {size_mb:,.0f} MB", flush=True
    )

    copy_before = raw_copy(opts.database_url, generated.good)
    print(f"  raw COPY (before): {copy_before:,.0f} rows/s", flush=True)
    db_url = fresh_database(opts.database_url)
    run = run_import(db_url, generated.path, workdir)
    users, events = asyncio.run(_counts(db_url))
    copy_after = raw_copy(opts.database_url, generated.good)
    print(f"  raw COPY (after):  {copy_after:,.0f} rows/s", flush=True)
    reference = (copy_before + copy_after) / 2

    print(_import_line("import", opts.rows, run))
    wall_ratio = opts.rows / run.wall_seconds / reference
    own_ratio = opts.rows / run.own_seconds / reference if run.own_seconds else float("nan")
    print(
        f"  ratio to raw COPY ({reference:,.0f} rows/s, mean of the two): "
        f"{wall_ratio:.3f} (whole command), {own_ratio:.3f} (import itself); "
        f"target >= {TARGET_RATIO}: {'PASS' if wall_ratio >= TARGET_RATIO else 'FAIL'}"
        f" (whole command), {'PASS' if own_ratio >= TARGET_RATIO else 'FAIL'} (import itself)"
    )
    workers = ", ".join(f"{peak:.0f}" for peak in run.peak_workers_rss_mb)
    print(
        f"  peak RSS (VmHWM): main process {run.peak_main_rss_mb:.0f} MB "
        f"(limit {PEAK_RSS_LIMIT_MB} MB: "
        f"{'PASS' if run.peak_main_rss_mb < PEAK_RSS_LIMIT_MB else 'FAIL'}); "
        f"worker processes {workers} MB; sum {run.peak_tree_rss_mb:.0f} MB (an upper bound: "
        "the workers, forked, share most of their pages with the main process)"
    )
    print(f"  summary: {run.summary}; database: {users:,} users, {events:,} events")
    listed = rejected_lines(generated.path) if run.returncode == 0 else set()
    ok = (
        run.returncode == 0
        and run.summary == (good, 0, bad)
        and (users, events) == (good, good)
        and listed == generated.bad_lines
    )
    print(
        f"  checks: exit {run.returncode}; every good row imported with its event, every bad "
        f"row in the rejects file with its line: {'yes' if ok else 'NO'}"
    )
    if not ok:
        print(run.stderr_tail, file=sys.stderr)
    return 0 if ok else 1


def run_plain(opts: Options, workdir: Path, rows: int) -> int:
    print(machine_line(), flush=True)
    cores = len(os.sched_getaffinity(0))
    generated = generate(workdir, rows, 0.0, plain=True)
    limit_before = argon2_limit(opts.limit_seconds, cores)
    print(f"  Argon2id limit (before), {cores} threads: {limit_before:.1f} hashes/s", flush=True)
    db_url = fresh_database(opts.database_url)
    run = run_import(db_url, generated.path, workdir)
    limit_after = argon2_limit(opts.limit_seconds, cores)
    print(f"  Argon2id limit (after), {cores} threads:  {limit_after:.1f} hashes/s", flush=True)
    limit = (limit_before + limit_after) / 2
    users, _ = asyncio.run(_counts(db_url))
    print(_import_line("import", rows, run).replace("rows/s", "hashes/s"))
    own = rows / run.own_seconds if run.own_seconds else float("nan")
    ratio = own / limit
    print(
        f"  ratio to the limit ({limit:.1f} hashes/s, mean of the two): {ratio:.3f} "
        f"(import itself); target >= {TARGET_HASH_RATIO}: "
        f"{'PASS' if ratio >= TARGET_HASH_RATIO else 'FAIL'}"
    )
    ok = run.returncode == 0 and run.summary == (rows, 0, 0) and users == rows
    print(f"  checks: exit {run.returncode}, {users} users: {'yes' if ok else 'NO'}")
    return 0 if ok else 1


def run(opts: Options) -> int:
    workdir = Path(tempfile.mkdtemp(prefix="ledgerline-bench-import-"))
    try:
        if opts.plain:
            return run_plain(opts, workdir, opts.plain)
        return run_rows(opts, workdir)
    finally:
        drop_database(opts.database_url, BENCH_DB)
        shutil.rmtree(workdir, ignore_errors=True)


def parse_args(argv: Sequence[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(description="Ledgerline bulk import benchmark.")
    parser.add_argument(
        "--database-url",
        default=os.environ.get("BENCH_ADMIN_URL", DEFAULT_ADMIN_URL),
        help="a PostgreSQL server's maintenance database; the bench makes its own",
    )
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--bad-fraction", type=float, default=0.01)
    parser.add_argument(
        "--plain", type=int, default=None, metavar="N", help="N rows of plain passwords instead"
    )
    parser.add_argument("--limit-seconds", type=float, default=10.0)
    args = parser.parse_args(argv)
    if not 0 <= args.bad_fraction < 1:
        parser.error("--bad-fraction must be in [0, 1)")
    return Options(**vars(args))


def main(argv: Sequence[str] | None = None) -> int:
    return run(parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
