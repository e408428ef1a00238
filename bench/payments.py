"""Payments benchmark: paid orders per second with many payers in parallel
(no contention), and the latency of a contended pay (many callers racing
for one order), against `ledgerline serve --workers 2` with Redis locks and
PostgreSQL on this machine.

    .venv/bin/python -m bench.payments                 # from the repository root
    .venv/bin/python -m bench.payments --duration 15 --connections 64

Set-up, all on loopback and bounded in time: a fresh database
`ledgerline_bench_payments` on the machine's PostgreSQL, migrated; an admin,
payers and payees inserted directly; every payer credited through the API
(POST /v1/admin/credits, so the ledger is real); pending orders inserted
directly. Then wrk pays distinct orders (each request its own order and its
own Idempotency-Key) for --duration seconds, and the figures are checked
against the database: paid orders == 200 answers, wallets == credits. Then
--rounds rounds of --racers concurrent pay calls on one fresh order each.
Everything started is stopped, and the database dropped, in finally blocks.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import httpx

from bench.run import (
    DEFAULT_ADMIN_URL,
    VENV_BIN,
    WrkResult,
    create_database,
    drop_database,
    free_port,
    machine_line,
    run_wrk,
    running,
    service_env,
    with_database,
)
from ledgerline.domain.user import Principal
from ledgerline.platform.clock import SystemClock
from ledgerline.platform.tokens import JWTIssuer

BENCH_DB = "ledgerline_bench_payments"
TARGET_PAID_PER_SECOND = 500
CREDIT = 10**9
PRICE = 100
FAKE_HASH = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaGhhc2g"

PAY_LUA = r"""
-- Each thread pays its own share of the orders listed in the jobs file:
-- one order per request, each with its own Idempotency-Key.
local threads = {}
statuses = {}

function setup(thread)
  table.insert(threads, thread)
  thread:set("tid", #threads)
  thread:set("nthreads", 0)
end

function init(args)
  jobs = {}
  local n = tonumber(args[1])
  local i = 0
  for line in io.lines(args[2]) do
    if i % n == tid - 1 then
      local order, token = line:match("(%S+) (%S+)")
      table.insert(jobs, {order, token})
    end
    i = i + 1
  end
  next_job = 0
end

function request()
  next_job = next_job + 1
  local job = jobs[next_job]
  if job == nil then
    job = jobs[1]  -- out of orders: repeats (answered 409), which the report shows
  end
  return wrk.format("POST", "/v1/orders/" .. job[1] .. "/pay", {
    ["Authorization"] = "Bearer " .. job[2],
    ["Idempotency-Key"] = "bench-" .. job[1],
  })
end

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
  local total = {}
  for _, thread in ipairs(threads) do
    local s = thread:get("statuses")
    for code, count in pairs(s) do
      total[code] = (total[code] or 0) + count
    end
  end
  for code, count in pairs(total) do
    io.write(string.format("STATUS %d %d\n", code, count))
  end
end
"""


@dataclass
class Options:
    admin_url: str
    redis_url: str
    duration: int
    threads: int
    connections: int
    payers: int
    orders: int
    workers: int
    rounds: int
    racers: int


@dataclass
class People:
    admin: str
    payers: list[uuid.UUID]
    payees: list[uuid.UUID]
    tokens: dict[uuid.UUID, str]


async def seed_people(db_url: str, opts: Options, issuer: JWTIssuer) -> People:
    now = datetime.now(UTC)
    admin_id = uuid.uuid4()
    payers = [uuid.uuid4() for _ in range(opts.payers)]
    payees = [uuid.uuid4() for _ in range(opts.payers)]
    rows = [(admin_id, "admin@bench.example", True)]
    rows += [(u, f"payer{i}@bench.example", False) for i, u in enumerate(payers)]
    rows += [(u, f"payee{i}@bench.example", False) for i, u in enumerate(payees)]
    conn = await asyncpg.connect(db_url)
    try:
        await conn.executemany(
            "INSERT INTO users (id, email, email_key, name, password_hash, is_admin, created_at,"
            " updated_at) VALUES ($1, $2, $2, 'Bench', $3, $4, $5, $5)",
            [(uid, email, FAKE_HASH, admin, now) for uid, email, admin in rows],
        )
    finally:
        await conn.close()
    tokens = {uid: issuer.issue(Principal(uid, False)).token for uid in payers}
    admin = issuer.issue(Principal(admin_id, True)).token
    return People(admin, payers, payees, tokens)


async def seed_orders(db_url: str, people: People, count: int) -> list[uuid.UUID]:
    """Pending orders, payer i paying payee i: no two payers share a wallet."""
    now = datetime.now(UTC)
    rows = []
    for n in range(count):
        i = n % len(people.payers)
        rows.append((uuid.uuid4(), people.payers[i], people.payees[i], now))
    conn = await asyncpg.connect(db_url)
    try:
        await conn.copy_records_to_table(
            "orders",
            records=[
                (oid, payer, payee, PRICE, "EUR", "pending", t, t) for oid, payer, payee, t in rows
            ],
            columns=[
                "id",
                "payer_id",
                "payee_id",
                "amount",
                "currency",
                "status",
                "created_at",
                "updated_at",
            ],
        )
    finally:
        await conn.close()
    return [row[0] for row in rows]


async def credit_payers(base: str, people: People) -> None:
    headers = {"Authorization": f"Bearer {people.admin}"}
    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        for payer in people.payers:
            response = await client.post(
                "/v1/admin/credits",
                json={"user_id": str(payer), "amount": CREDIT, "currency": "EUR"},
                headers={**headers, "Idempotency-Key": f"seed-{payer}"},
            )
            if response.status_code != 201:
                raise RuntimeError(f"credit answered {response.status_code}: {response.text}")


async def check_books(db_url: str) -> tuple[int, int, int]:
    """(paid orders, sum of wallets, sum of credits)."""
    conn = await asyncpg.connect(db_url)
    try:
        paid = await conn.fetchval("SELECT count(*) FROM orders WHERE status = 'paid'")
        held = await conn.fetchval("SELECT sum(balance) FROM accounts WHERE kind = 'wallet'")
        credited = await conn.fetchval("SELECT sum(amount) FROM transfers WHERE kind = 'credit'")
        return int(paid), int(held), int(credited)
    finally:
        await conn.close()


def spread(values: Sequence[float]) -> str:
    if not values:
        return "no samples"
    ordered = sorted(values)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return f"p50={statistics.median(ordered):.1f}ms p99={p99:.1f}ms"


async def contended(base: str, db_url: str, people: People, opts: Options) -> None:
    """Rounds of ``racers`` concurrent pays on one fresh order each."""
    winners: list[float] = []
    losers: list[float] = []
    rounds_ms: list[float] = []
    bad = 0
    limits = httpx.Limits(max_connections=opts.racers)
    async with httpx.AsyncClient(base_url=base, timeout=30, limits=limits) as client:
        for r in range(opts.rounds):
            payer = people.payers[r % len(people.payers)]
            (order_id,) = await seed_orders_for(db_url, people, payer)
            auth = {"Authorization": f"Bearer {people.tokens[payer]}"}

            async def pay(
                i: int, order: uuid.UUID = order_id, auth: dict[str, str] = auth
            ) -> tuple[int, float]:
                started = time.perf_counter()
                response = await client.post(
                    f"/v1/orders/{order}/pay",
                    headers={**auth, "Idempotency-Key": f"race-{order}-{i}"},
                )
                return response.status_code, (time.perf_counter() - started) * 1000

            started = time.perf_counter()
            results = await asyncio.gather(*(pay(i) for i in range(opts.racers)))
            rounds_ms.append((time.perf_counter() - started) * 1000)
            ok = [ms for status, ms in results if status == 200]
            winners += ok
            losers += [ms for status, ms in results if status == 409]
            bad += sum(1 for status, _ in results if status not in (200, 409))
            if len(ok) != 1:
                bad += 1
    print(
        f"contended pay ({opts.rounds} rounds x {opts.racers} concurrent calls on one order):\n"
        f"  the one that pays: {spread(winners)}\n"
        f"  the 409s:          {spread(losers)}\n"
        f"  a whole round:     {spread(rounds_ms)}\n"
        f"  rounds without exactly one 200, or other statuses: {bad}"
    )


async def seed_orders_for(db_url: str, people: People, payer: uuid.UUID) -> list[uuid.UUID]:
    index = people.payers.index(payer)
    single = People(people.admin, [payer], [people.payees[index]], people.tokens)
    return await seed_orders(db_url, single, 1)


def run(opts: Options) -> int:
    if shutil.which("wrk") is None:
        print("wrk is not installed: apt-get install -y wrk", file=sys.stderr)
        return 2
    db_url = with_database(opts.admin_url, BENCH_DB)
    workdir = Path(tempfile.mkdtemp(prefix="ledgerline-bench-pay-"))
    secret = secrets.token_urlsafe(48)
    env = service_env(db_url, secret, workdir / "data")
    env["LEDGERLINE_REDIS_URL"] = opts.redis_url
    issuer = JWTIssuer(secret, 3600, SystemClock())
    lua = workdir / "pay.lua"
    lua.write_text(PAY_LUA)
    jobs = workdir / "jobs.txt"
    print(machine_line())
    create_database(opts.admin_url, BENCH_DB)
    try:
        subprocess.run(
            [str(VENV_BIN / "ledgerline"), "migrate"],
            env=env,
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        people = asyncio.run(seed_people(db_url, opts, issuer))
        orders = asyncio.run(seed_orders(db_url, people, opts.orders))
        payer_of = {}
        for n, order in enumerate(orders):
            payer_of[order] = people.payers[n % len(people.payers)]
        jobs.write_text("".join(f"{o} {people.tokens[payer_of[o]]}\n" for o in orders))
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        cmd = [
            str(VENV_BIN / "ledgerline"),
            "serve",
            "--workers",
            str(opts.workers),
            "--port",
            str(port),
        ]
        with open(os.devnull, "wb") as sink, running(cmd, env, sink, f"{base}/healthz"):
            asyncio.run(credit_payers(base, people))
            print(
                f"seeded: {opts.payers} payers credited, {opts.orders} pending orders; "
                f"wrk -t{opts.threads} -c{opts.connections} -d{opts.duration}s; "
                f"workers={opts.workers}; locks: Redis {opts.redis_url}",
                flush=True,
            )
            result: WrkResult = run_wrk(
                "POST /v1/orders/{id}/pay",
                f"{base}/v1/orders/x/pay",
                threads=opts.threads,
                connections=opts.connections,
                duration=opts.duration,
                script=lua,
                script_args=[str(opts.threads), str(jobs)],
            )
            paid_answers = result.statuses.get(200, 0)
            paid, held, credited = asyncio.run(check_books(db_url))
            rate = paid_answers / opts.duration
            print(
                f"  paid orders/s: {rate:.1f}  (wrk: {result.rps:.1f} req/s, "
                f"p50={result.p50_ms:.1f}ms p99={result.p99_ms:.1f}ms, "
                f"statuses {result.statuses}, socket errors {result.socket_errors})"
            )
            print(
                f"  database: {paid} orders paid (200 answers: {paid_answers}); "
                f"wallets hold {held}, credits {credited}"
            )
            # Requests still in flight when wrk stops are paid but not counted.
            in_flight = paid - paid_answers
            ok = 0 <= in_flight <= opts.connections and held == credited and result.errors == 0
            verdict = "PASS" if rate >= TARGET_PAID_PER_SECOND else "FAIL"
            print(
                f"  target >= {TARGET_PAID_PER_SECOND} paid orders/s: {verdict}; books "
                f"{'balance' if ok else 'DO NOT BALANCE'} ({in_flight} paid after wrk stopped)"
            )
            asyncio.run(contended(base, db_url, people, opts))
        return 0 if ok else 1
    finally:
        drop_database(opts.admin_url, BENCH_DB)
        shutil.rmtree(workdir, ignore_errors=True)


def parse_args(argv: Sequence[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(description="Ledgerline payments benchmark (wrk).")
    parser.add_argument("--admin-url", default=os.environ.get("BENCH_ADMIN_URL", DEFAULT_ADMIN_URL))
    parser.add_argument(
        "--redis-url", default=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
    )
    parser.add_argument("--duration", type=int, default=15)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--payers", type=int, default=500)
    parser.add_argument("--orders", type=int, default=40_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=100, help="contended-pay rounds")
    parser.add_argument("--racers", type=int, default=20, help="concurrent calls per round")
    args = parser.parse_args(argv)
    return Options(**vars(args))


def main(argv: Sequence[str] | None = None) -> int:
    return run(parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
