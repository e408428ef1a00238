"""Relay benchmark: how fast `ledgerline worker` empties an outbox backlog
into NATS JetStream, against the bare stack: nats-py publishing the same
messages (same size, same Nats-Msg-Id header, acked one by one, as many at
once as the relay publishes) into a stream of the same kind, in the same run.

    .venv/bin/python -m bench.relay                      # from the repository root
    .venv/bin/python -m bench.relay --events 200000 --per-aggregate 2

Set-up: a fresh database `ledgerline_bench_relay` on the machine's
PostgreSQL, migrated; --events pending events written straight into the
outbox (--per-aggregate events each for events / per-aggregate users,
interleaved as a busy service records them). Then the bare publisher and the
worker each fill a stream of their own on the machine's NATS
(`nats://127.0.0.1:4222`, or --nats-url); the worker's time runs from its
start until no event is left unpublished. Both streams and the database are
dropped in finally blocks. The figures: events per second of each, and the
worker's as a share of the bare publisher's.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

import asyncpg
import nats
from nats.js.api import StreamConfig

from bench.run import (
    DEFAULT_ADMIN_URL,
    VENV_BIN,
    drop_database,
    free_port,
    machine_line,
    migrated_database,
)

BENCH_DB = "ledgerline_bench_relay"
ROOT = Path(__file__).resolve().parent.parent
LEDGERLINE = str(VENV_BIN / "ledgerline")


async def _fill_outbox(db_url: str, events: int, per_aggregate: int) -> None:
    """The backlog: ``events`` pending events of users, ``per_aggregate`` each."""
    conn = await asyncpg.connect(db_url)
    try:
        aggregates = events // per_aggregate
        await conn.execute(
            """
            WITH aggregates AS (SELECT gen_random_uuid() AS id FROM generate_series(1, $1)),
            numbered AS (
                INSERT INTO outbox_versions (aggregate_type, aggregate_id, version)
                SELECT 'user', id, $2 FROM aggregates RETURNING aggregate_id
            )
            INSERT INTO outbox
                (id, type, subject, aggregate_type, aggregate_id, version, payload, occurred_at)
            SELECT gen_random_uuid(), 'user.registered', 'users/' || a.aggregate_id, 'user',
                   a.aggregate_id, v,
                   jsonb_build_object('user_id', a.aggregate_id, 'email',
                       'user-' || left(a.aggregate_id::text, 8) || '@example.com',
                       'name', 'Bench User', 'is_admin', false),
                   now()
            FROM numbered a, generate_series(1, $2) v
            ORDER BY v, a.aggregate_id
            """,
            aggregates,
            per_aggregate,
        )
        await conn.execute("ANALYZE outbox")
    finally:
        await conn.close()


def _sample_message(aggregate: uuid.UUID, version: int) -> bytes:
    """A document the size and shape of what the relay sends."""
    return json.dumps(
        {
            "specversion": "1.0",
            "id": str(uuid.uuid4()),
            "source": "/ledgerline",
            "type": "user.registered",
            "subject": f"users/{aggregate}",
            "time": "2026-12-02T14:16:51.148159Z",
            "datacontenttype": "application/json",
            "aggregatetype": "user",
            "aggregateid": str(aggregate),
            "aggregateversion": version,
            "data": {
                "user_id": str(aggregate),
                "email": f"user-{str(aggregate)[:8]}@example.com",
                "name": "Bench User",
                "is_admin": False,
            },
        }
    ).encode()


async def _bare(nats_url: str, stream: str, prefix: str, events: int, concurrency: int) -> float:
    """Seconds for nats-py to publish ``events`` messages, ``concurrency``
    at a time, each acked before the publisher sends its next."""
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        await js.add_stream(
            StreamConfig(name=stream, subjects=[f"{prefix}.>"], duplicate_window=600)
        )
        per_task = events // concurrency
        aggregate = uuid.uuid4()
        payload = _sample_message(aggregate, 1)

        async def publisher() -> None:
            for _ in range(per_task):
                await js.publish(
                    f"{prefix}.user.registered",
                    payload,
                    headers={"Nats-Msg-Id": str(uuid.uuid4())},
                )

        started = time.perf_counter()
        await asyncio.gather(*(publisher() for _ in range(concurrency)))
        took = time.perf_counter() - started
        await js.delete_stream(stream)
        return took / (per_task * concurrency) * events
    finally:
        await nc.close()


async def _left(db_url: str) -> int:
    conn = await asyncpg.connect(db_url)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM outbox WHERE state <> 'published'"))
    finally:
        await conn.close()


async def _drop_stream(nats_url: str, stream: str) -> None:
    nc = await nats.connect(nats_url)
    try:
        await nc.jetstream().delete_stream(stream)
    except nats.js.errors.NotFoundError:
        pass
    finally:
        await nc.close()


def _worker(
    db_url: str, nats_url: str, stream: str, prefix: str, opts: argparse.Namespace
) -> float:
    """Seconds from the worker's start until the outbox has nothing left."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEDGERLINE_")}
    env.update(
        LEDGERLINE_DATABASE_URL=db_url,
        LEDGERLINE_JWT_SECRET="bench-secret-that-is-long-enough-0123456789",
        LEDGERLINE_EVENT_BUS_URL=nats_url,
        LEDGERLINE_EVENT_STREAM=stream,
        LEDGERLINE_EVENT_SUBJECT_PREFIX=prefix,
        LEDGERLINE_WORKER_PORT=str(free_port()),
        LEDGERLINE_RELAY_BATCH_SIZE=str(opts.batch),
        LEDGERLINE_RELAY_CONCURRENCY=str(opts.concurrency),
        LEDGERLINE_LOG_LEVEL="WARNING",
    )
    with tempfile.TemporaryDirectory() as tmp:
        env["LEDGERLINE_DATA_DIR"] = tmp
        started = time.perf_counter()
        proc = subprocess.Popen(
            [LEDGERLINE, "worker"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL
        )
        try:
            while asyncio.run(_left(db_url)):
                if proc.poll() is not None:
                    raise RuntimeError("the worker exited")
                time.sleep(0.2)
            return time.perf_counter() - started
        finally:
            proc.terminate()
            proc.wait(60)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--admin-url", default=os.environ.get("BENCH_ADMIN_URL", DEFAULT_ADMIN_URL))
    parser.add_argument(
        "--nats-url", default=os.environ.get("BENCH_NATS_URL", "nats://127.0.0.1:4222")
    )
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--per-aggregate", type=int, default=2)
    parser.add_argument("--batch", type=int, default=100, help="LEDGERLINE_RELAY_BATCH_SIZE")
    parser.add_argument("--concurrency", type=int, default=32, help="LEDGERLINE_RELAY_CONCURRENCY")
    opts = parser.parse_args(argv)
    tag = uuid.uuid4().hex[:8]
    worker_stream, bare_stream = f"BENCH_RELAY_{tag}", f"BENCH_BARE_{tag}"
    try:
        db_url = migrated_database(opts.admin_url, BENCH_DB)
        print(machine_line())
        asyncio.run(_fill_outbox(db_url, opts.events, opts.per_aggregate))
        print(f"outbox: {opts.events} pending events, {opts.per_aggregate} per aggregate")
        bare = asyncio.run(
            _bare(opts.nats_url, bare_stream, f"benchbare{tag}", opts.events, opts.concurrency)
        )
        print(
            f"  bare nats-py, {opts.concurrency} publishers: {opts.events / bare:,.0f} events/s "
            f"({bare:.1f} s)"
        )
        relay = _worker(db_url, opts.nats_url, worker_stream, f"benchrelay{tag}", opts)
        print(
            f"  ledgerline worker: {opts.events / relay:,.0f} events/s ({relay:.1f} s, "
            "from its start until the outbox was empty)"
        )
        print(f"  worker / bare: {bare / relay:.2f}")
    finally:
        asyncio.run(_drop_stream(opts.nats_url, worker_stream))
        asyncio.run(_drop_stream(opts.nats_url, bare_stream))
        drop_database(opts.admin_url, BENCH_DB)
    return 0


if __name__ == "__main__":
    sys.exit(main())
