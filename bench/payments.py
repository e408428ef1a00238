"""Payments benchmark: paid orders per second against PostgreSQL's own
pgbench on the same machine in the same run, the lock's cost, and the
latency of a single pay, uncontended and contended.

    .venv/bin/python -m bench.payments                 # from the repository root
    .venv/bin/python -m bench.payments --duration 15 --connections 64

Set-up, all on loopback and bounded in time: a fresh database
`ledgerline_bench_payments` on the machine's PostgreSQL, migrated; an admin,
payers and payees inserted directly; every payer credited through the API
(POST /v1/admin/credits, so the ledger is real); pending orders inserted
directly, a slice of its own for each measurement. Then, in this order:

1. pgbench TPC-B (`pgbench -i -s 10` in `ledgerline_bench_tpcb`, then
   `-c 16 -j 2 -T <duration>`), the database's reference figure;
2. for each lock variant (--variants: Redis, PostgreSQL advisory locks, and
   no lock at all, which only bench/unlocked_serve.py offers),
   `ledgerline serve --workers 2` under wrk paying distinct orders (each
   request its own order and its own Idempotency-Key) for --duration
   seconds; the Redis run also measures --single sequential pays (the
   latency of one uncontended pay) and --rounds rounds of --racers
   concurrent pays on one order (the contended pay);
3. pgbench running the service's own pay SQL (the read before the lock and
   the settle_order() call, 16 clients), where the schema has it;
4. pgbench TPC-B again.

Every ratio is to the mean of the two TPC-B runs. The books are checked
against the database at the end: paid orders == 200 answers (give or take
the requests in flight when wrk stopped), wallets == credits.
--ledgerline runs another build of the service (its own migrations), e.g.
an earlier commit's, for a before/after comparison in one sitting.
Everything started is stopped, and the databases dropped, in finally
blocks.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
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
from urllib.parse import urlsplit

import asyncpg
import httpx
import psutil

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
from ledgerline.domain.events import OrderPaid
from ledgerline.domain.money import Money
from ledgerline.domain.order import Order, OrderStatus
from ledgerline.domain.user import Principal
from ledgerline.platform.clock import SystemClock
from ledgerline.platform.tokens import JWTIssuer

BENCH_DB = "ledgerline_bench_payments"
TARGET_RATIO = 0.4  # paid orders/s against pgbench TPC-B
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
    single: int
    variants: list[str]
    ledgerline: str


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


# --------------------------------------------------------------- pgbench


TPCB_DB = "ledgerline_bench_tpcb"
TPCB_SCALE = 10
PGBENCH_CLIENTS = 16
OWN_PAYERS = 500
OWN_ORDERS_PER_CLIENT = 20_000

# The service's own pay, as pgbench runs it: the read before the lock and
# the settlement, one round trip each, on orders of their own (order n is
# paid by client n mod 16, each client going through its orders in turn, so
# that no two clients pay from one wallet at once).
OWN_PAY_SQL = """\
\\set i :i + 1
\\set n :client_id + {clients} * :i
SELECT id, payer_id, payee_id, amount, currency, description, status, created_at,
       updated_at, paid_at,
       idempotency_stored(md5('pgb-payer-' || (:n % {payers}))::uuid, 'pgb-' || :n, now())::text
  FROM orders WHERE id = md5('pgb-order-' || :n)::uuid;
SELECT outcome FROM settle_order(
  md5('pgb-order-' || :n)::uuid, 'pending',
  md5('pgb-payer-' || (:n % {payers}))::uuid, md5('pgb-payee-' || (:n % {payers}))::uuid,
  {price}, 'EUR', 'paid', now(), now(),
  gen_random_uuid(), 'payment',
  md5('pgb-payer-' || (:n % {payers}))::uuid, md5('pgb-payee-' || (:n % {payers}))::uuid,
  now(), gen_random_uuid(), gen_random_uuid(),
  md5('pgb-payer-' || (:n % {payers}))::uuid, 'pgb-' || :n, '{fingerprint}', 'order.pay',
  '{snapshot}'::jsonb, now(), now() + interval '24 hours',
  gen_random_uuid(), 'order.paid', 'orders/' || md5('pgb-order-' || :n)::uuid, 'order',
  md5('pgb-order-' || :n)::uuid, '{payload}'::jsonb, now(), '0');
"""

OWN_SEED = [
    """INSERT INTO users (id, email, email_key, name, password_hash, is_admin, created_at,
                          updated_at)
       SELECT md5('pgb-' || side || '-' || g)::uuid, 'pgb-' || side || g || '@bench.example',
              'pgb-' || side || g || '@bench.example', 'Bench', '{password_hash}', false,
              now(), now()
         FROM generate_series(0, {payers} - 1) g, (VALUES ('payer'), ('payee')) AS s(side)""",
    """SELECT ledger_transfer(gen_random_uuid(), 'credit', NULL, NULL,
                              md5('pgb-payer-' || g)::uuid, 'EUR', {credit}, now(),
                              gen_random_uuid(), gen_random_uuid())
         FROM generate_series(0, {payers} - 1) g""",
    """INSERT INTO orders (id, payer_id, payee_id, amount, currency, status, created_at,
                           updated_at)
       SELECT md5('pgb-order-' || n)::uuid, md5('pgb-payer-' || (n % {payers}))::uuid,
              md5('pgb-payee-' || (n % {payers}))::uuid, {price}, 'EUR', 'pending', now(), now()
         FROM generate_series(0, {orders} - 1) n""",
]


def _pg_args(url: str) -> tuple[list[str], dict[str, str]]:
    """pgbench's connection options for ``url``, and its environment."""
    parts = urlsplit(url)
    args = ["-h", parts.hostname or "127.0.0.1", "-p", str(parts.port or 5432)]
    args += ["-U", parts.username or "postgres", parts.path.lstrip("/")]
    env = dict(os.environ)
    if parts.password:
        env["PGPASSWORD"] = parts.password
    return args, env


def pgbench(url: str, *options: str, duration: int) -> float:
    """Transactions per second (without the connections' set-up)."""
    where, env = _pg_args(url)
    cmd = ["pgbench", "-n", "-c", str(PGBENCH_CLIENTS), "-j", "2", "-T", str(duration)]
    proc = subprocess.run(
        [*cmd, *options, *where],
        capture_output=True,
        text=True,
        env=env,
        timeout=duration + 120,
        check=False,
    )
    tps = re.search(r"tps = ([\d.]+) \(without initial connection time\)", proc.stdout)
    if proc.returncode != 0 or tps is None:
        raise RuntimeError(f"pgbench failed ({proc.returncode}): {proc.stderr}\n{proc.stdout}")
    return float(tps.group(1))


def prepare_tpcb(admin_url: str) -> str:
    create_database(admin_url, TPCB_DB)
    url = with_database(admin_url, TPCB_DB)
    where, env = _pg_args(url)
    subprocess.run(
        ["pgbench", "-i", "-q", "-s", str(TPCB_SCALE), *where],
        env=env,
        check=True,
        capture_output=True,
        timeout=600,
    )
    return url


async def has_settle_order(db_url: str) -> bool:
    conn = await asyncpg.connect(db_url)
    try:
        return bool(await conn.fetchval("SELECT to_regproc('settle_order') IS NOT NULL"))
    finally:
        await conn.close()


async def seed_own_sql(db_url: str) -> int:
    """The own-SQL run's payers, payees and orders; how many orders."""
    orders = PGBENCH_CLIENTS * OWN_ORDERS_PER_CLIENT
    values = {
        "payers": OWN_PAYERS,
        "credit": CREDIT,
        "price": PRICE,
        "orders": orders,
        "password_hash": FAKE_HASH,
    }
    conn = await asyncpg.connect(db_url)
    try:
        for statement in OWN_SEED:
            await conn.execute(statement.format(**values))
        await conn.execute("VACUUM ANALYZE")
    finally:
        await conn.close()
    return orders


def own_pay_script(path: Path) -> None:
    """The script, its JSON the size of what the service stores."""
    now = datetime.now(UTC)
    order = Order(
        uuid.uuid4(),
        uuid.uuid4(),
        uuid.uuid4(),
        Money(PRICE, "EUR"),
        None,
        OrderStatus.PAID,
        now,
        now,
        now,
    )
    payload = OrderPaid.of(order, uuid.uuid4()).data()
    path.write_text(
        OWN_PAY_SQL.format(
            clients=PGBENCH_CLIENTS,
            payers=OWN_PAYERS,
            price=PRICE,
            fingerprint="sha256:" + "0" * 64,
            snapshot=json.dumps(order.snapshot()),
            payload=json.dumps(payload),
        )
    )


async def own_paid(db_url: str) -> int:
    conn = await asyncpg.connect(db_url)
    try:
        return int(
            await conn.fetchval(
                "SELECT count(*) FROM idempotency_keys WHERE key LIKE 'pgb-%'",
            )
        )
    finally:
        await conn.close()


# ---------------------------------------------------------------- service


VARIANTS = ("redis", "advisory", "none")


@dataclass
class Variant:
    name: str
    paid_per_second: float = 0.0
    result: WrkResult | None = None
    cpu_ms: tuple[float, float] = (0.0, 0.0)  # per paid order: service, PostgreSQL


def serve_command(opts: Options, variant: str, port: int) -> list[str]:
    args = ["serve", "--workers", str(opts.workers), "--port", str(port)]
    if variant == "none":
        return [sys.executable, "-m", "bench.unlocked_serve", *args[1:]]
    return [opts.ledgerline, *args]


def variant_env(env: dict[str, str], opts: Options, variant: str) -> dict[str, str]:
    env = dict(env)
    if variant == "advisory":
        env.pop("LEDGERLINE_REDIS_URL", None)
    else:
        env["LEDGERLINE_REDIS_URL"] = opts.redis_url
    return env


async def single_pays(base: str, people: People, orders: list[uuid.UUID]) -> list[float]:
    """One pay at a time, each on its own order: milliseconds each."""
    payer_of = dict(zip(orders, people.payers, strict=False))
    times: list[float] = []
    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        for order in orders:
            payer = payer_of[order]
            started = time.perf_counter()
            response = await client.post(
                f"/v1/orders/{order}/pay",
                headers={
                    "Authorization": f"Bearer {people.tokens[payer]}",
                    "Idempotency-Key": f"single-{order}",
                },
            )
            times.append((time.perf_counter() - started) * 1000)
            if response.status_code != 200:
                raise RuntimeError(f"single pay answered {response.status_code}: {response.text}")
    return times


def cpu_seconds(service: psutil.Process) -> tuple[float, float]:
    """CPU seconds used so far by the service's processes and by every
    PostgreSQL process on the machine."""

    def used(proc: psutil.Process) -> float:
        try:
            times = proc.cpu_times()
        except psutil.Error:
            return 0.0
        return float(times.user + times.system)

    tree = [service, *service.children(recursive=True)]
    postgres = [p for p in psutil.process_iter(["name"]) if p.info["name"] == "postgres"]
    return sum(used(p) for p in tree), sum(used(p) for p in postgres)


def pay_under_wrk(
    opts: Options, base: str, lua: Path, jobs: Path, variant: Variant, service: psutil.Process
) -> None:
    cpu_before = cpu_seconds(service)
    result = run_wrk(
        "POST /v1/orders/{id}/pay",
        f"{base}/v1/orders/x/pay",
        threads=opts.threads,
        connections=opts.connections,
        duration=opts.duration,
        script=lua,
        script_args=[str(opts.threads), str(jobs)],
    )
    cpu_after = cpu_seconds(service)
    variant.result = result
    variant.paid_per_second = result.statuses.get(200, 0) / opts.duration
    paid = max(1, result.statuses.get(200, 0))
    service_ms = (cpu_after[0] - cpu_before[0]) * 1000 / paid
    postgres_ms = (cpu_after[1] - cpu_before[1]) * 1000 / paid
    variant.cpu_ms = (service_ms, postgres_ms)
    print(
        f"  [{variant.name}] paid orders/s: {variant.paid_per_second:.1f}  "
        f"(wrk {result.rps:.1f} req/s, p50={result.p50_ms:.1f}ms p99={result.p99_ms:.1f}ms, "
        f"statuses {result.statuses}, socket errors {result.socket_errors}); CPU per paid "
        f"order: service {service_ms:.2f} ms, PostgreSQL {postgres_ms:.2f} ms",
        flush=True,
    )


def run(opts: Options) -> int:
    for tool in ("wrk", "pgbench"):
        if shutil.which(tool) is None:
            print(f"{tool} is not installed: apt-get install -y {tool}", file=sys.stderr)
            return 2
    db_url = with_database(opts.admin_url, BENCH_DB)
    workdir = Path(tempfile.mkdtemp(prefix="ledgerline-bench-pay-"))
    secret = secrets.token_urlsafe(48)
    env = service_env(db_url, secret, workdir / "data")
    issuer = JWTIssuer(secret, 3600, SystemClock())
    lua = workdir / "pay.lua"
    lua.write_text(PAY_LUA)
    print(machine_line())
    create_database(opts.admin_url, BENCH_DB)
    try:
        subprocess.run(
            [opts.ledgerline, "migrate"],
            env=env,
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        return measure(opts, db_url, env, issuer, lua, workdir)
    finally:
        drop_database(opts.admin_url, BENCH_DB)
        drop_database(opts.admin_url, TPCB_DB)
        shutil.rmtree(workdir, ignore_errors=True)


def measure(
    opts: Options, db_url: str, env: dict[str, str], issuer: JWTIssuer, lua: Path, workdir: Path
) -> int:
    variants = [Variant(name) for name in opts.variants]
    people = asyncio.run(seed_people(db_url, opts, issuer))
    # A slice of orders for each variant's wrk run, then the single pays.
    slices = [asyncio.run(seed_orders(db_url, people, opts.orders)) for _ in variants]
    singles = asyncio.run(seed_orders(db_url, people, opts.single))
    own = asyncio.run(has_settle_order(db_url))
    own_orders = asyncio.run(seed_own_sql(db_url)) if own else 0
    own_script = workdir / "own_pay.sql"
    own_pay_script(own_script)
    tpcb_url = prepare_tpcb(opts.admin_url)
    print(
        f"seeded: {opts.payers} payers, {opts.orders} pending orders per variant; "
        f"wrk -t{opts.threads} -c{opts.connections} -d{opts.duration}s; "
        f"serve --workers {opts.workers}; pgbench -c {PGBENCH_CLIENTS} -j 2 "
        f"-T {opts.duration} (TPC-B scale {TPCB_SCALE}; own SQL on {own_orders} orders)",
        flush=True,
    )
    tpcb = [pgbench(tpcb_url, duration=opts.duration)]
    print(f"  pgbench TPC-B: {tpcb[0]:.1f} tps", flush=True)
    credited = False
    for variant, orders in zip(variants, slices, strict=True):
        jobs = workdir / f"jobs-{variant.name}.txt"
        payer_of = {o: people.payers[n % len(people.payers)] for n, o in enumerate(orders)}
        jobs.write_text("".join(f"{o} {people.tokens[payer_of[o]]}\n" for o in orders))
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        cmd = serve_command(opts, variant.name, port)
        service_env_ = variant_env(env, opts, variant.name)
        with (
            open(os.devnull, "wb") as sink,
            running(cmd, service_env_, sink, f"{base}/healthz") as proc,
        ):
            if not credited:
                asyncio.run(credit_payers(base, people))
                credited = True
            pay_under_wrk(opts, base, lua, jobs, variant, psutil.Process(proc.pid))
            if variant.name == "redis":
                times = asyncio.run(single_pays(base, people, singles))
                print(f"  [redis] one pay at a time ({len(times)} pays): {spread(times)}")
                asyncio.run(contended(base, db_url, people, opts))
    own_tps = 0.0
    if own:
        # Prepared statements, as the service's driver uses them.
        where = ["-M", "prepared", "-D", "i=0", "-f", str(own_script)]
        own_tps = pgbench(db_url, *where, duration=opts.duration)
        paid = asyncio.run(own_paid(db_url))
        print(f"  pgbench of the service's own pay SQL: {own_tps:.1f} tps ({paid} orders paid)")
    else:
        print("  pgbench of the service's own pay SQL: skipped (no settle_order() here)")
    tpcb.append(pgbench(tpcb_url, duration=opts.duration))
    print(f"  pgbench TPC-B again: {tpcb[1]:.1f} tps", flush=True)
    return report(opts, db_url, people, variants, statistics.mean(tpcb), own_tps)


def report(
    opts: Options,
    db_url: str,
    people: People,
    variants: list[Variant],
    tpcb: float,
    own_tps: float,
) -> int:
    paid, held, credited = asyncio.run(check_books(db_url))
    answered = sum(v.result.statuses.get(200, 0) for v in variants if v.result is not None)
    answered += opts.single + opts.rounds  # the single pays, one winner a round
    answered += asyncio.run(own_paid(db_url))
    in_flight = paid - answered
    errors = sum(v.result.errors for v in variants if v.result is not None)
    ok = 0 <= in_flight <= opts.connections * len(variants) and held == credited and errors == 0
    print(f"summary (ratios to the mean of the two TPC-B runs, {tpcb:.1f} tps):")
    by_name = {v.name: v for v in variants}
    for v in variants:
        line = f"  {v.name:>8}: {v.paid_per_second:7.1f} paid/s = {v.paid_per_second / tpcb:.3f}x"
        if v.name != "redis" and "redis" in by_name and by_name["redis"].paid_per_second:
            line += f"  ({v.paid_per_second / by_name['redis'].paid_per_second:.2f}x Redis)"
        if own_tps:
            line += f"  ({v.paid_per_second / own_tps:.2f}x own SQL)"
        print(line)
    if own_tps:
        print(f"  own pay SQL under pgbench: {own_tps:.1f} tps = {own_tps / tpcb:.3f}x TPC-B")
    redis_rate = by_name["redis"].paid_per_second if "redis" in by_name else 0.0
    verdict = "PASS" if redis_rate >= TARGET_RATIO * tpcb else "FAIL"
    print(f"  target Redis >= {TARGET_RATIO}x TPC-B: {verdict}")
    print(
        f"  books: {paid} orders paid, {answered} paid answers; wallets hold {held}, credits "
        f"{credited}: {'balance' if ok else 'DO NOT BALANCE'} ({in_flight} paid in flight)"
    )
    return 0 if ok else 1


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
    parser.add_argument("--orders", type=int, default=40_000, help="per lock variant")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--single", type=int, default=300, help="sequential uncontended pays")
    parser.add_argument(
        "--variants",
        type=lambda text: [v for v in text.split(",") if v],
        default=list(VARIANTS),
        help="lock variants, comma-separated: redis, advisory, none",
    )
    parser.add_argument(
        "--ledgerline",
        default=str(VENV_BIN / "ledgerline"),
        help="the service's command (another build's, to compare)",
    )
    parser.add_argument("--rounds", type=int, default=100, help="contended-pay rounds")
    parser.add_argument("--racers", type=int, default=20, help="concurrent calls per round")
    args = parser.parse_args(argv)
    return Options(**vars(args))


def main(argv: Sequence[str] | None = None) -> int:
    return run(parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
