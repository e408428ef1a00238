"""`GetMe` over gRPC: `ledgerline serve --workers 2` beside a bare grpc.aio +
asyncpg server (bench/grpc_baseline.py, 2 processes) running the same
single-row query, both up at once, measured in interleaved pairs (ABBA)
by the same closed-loop Python load (bench/grpc_load.py). Also the REST
figure for the same operation (`GET /v1/users/me`, wrk) on the same
service in the same run.

    .venv/bin/python -m bench.grpc_getme [--pairs 3] [--duration 10]

Target: the service at least 0.8x the bare server (median of the pairs).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc

from bench.run import (
    DEFAULT_ADMIN_URL,
    ROOT,
    VENV_BIN,
    create_database,
    drop_database,
    free_port,
    http_json,
    machine_line,
    run_wrk,
    running,
    service_env,
    with_database,
)
from ledgerline.v1 import users_pb2, users_pb2_grpc

BENCH_DB = "ledgerline_bench_grpc"
TARGET_RATIO = 0.8
PASSWORD = "bench-password-1"


def load(target: str, token: str, duration: float) -> dict[str, Any]:
    """One closed-loop run in a process of its own."""
    cmd = [sys.executable, "-m", "bench.grpc_load", "--target", target, "--token", token]
    cmd += ["--duration", str(duration)]
    done = subprocess.run(
        cmd, cwd=ROOT, capture_output=True, text=True, timeout=duration + 60, check=True
    )
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    result["rate"] = result["calls"] / result["seconds"]
    return result


async def _answers(target: str, token: str) -> bool:
    async with grpc.aio.insecure_channel(target) as channel:
        stub = users_pb2_grpc.UserServiceStub(channel)
        try:
            await stub.GetMe(
                users_pb2.GetMeRequest(),
                metadata=(("authorization", f"Bearer {token}"),),
                timeout=2,
            )
        except grpc.aio.AioRpcError:
            return False
        return True


@contextmanager
def baseline(port: int, env: dict[str, str]) -> Iterator[str]:
    target = f"127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "bench.grpc_baseline", "--port", str(port), "--workers", "2"]
    with running(cmd, env, subprocess.DEVNULL, lambda: asyncio.run(_answers(target, ""))):
        yield target


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--admin-url", default=os.environ.get("BENCH_ADMIN_URL", DEFAULT_ADMIN_URL))
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=3.0)
    opts = parser.parse_args()
    db_url = with_database(opts.admin_url, BENCH_DB)
    workdir = Path(tempfile.mkdtemp(prefix="ledgerline-bench-grpc-"))
    env = service_env(db_url, secrets.token_urlsafe(48), workdir / "data")
    http_port = free_port()
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
        base = f"http://127.0.0.1:{http_port}"
        cmd = [str(VENV_BIN / "ledgerline"), "serve", "--workers", "2", "--port", str(http_port)]
        with running(cmd, env, subprocess.DEVNULL, f"{base}/healthz"):
            status, user = http_json(
                "POST",
                f"{base}/v1/users",
                {"email": "grpc-bench@example.com", "password": PASSWORD, "name": "Bench"},
            )
            assert status == 201, user
            status, login = http_json(
                "POST",
                f"{base}/v1/auth/token",
                {"email": "grpc-bench@example.com", "password": PASSWORD},
            )
            assert status == 200, login
            token = login["access_token"]
            service = f"127.0.0.1:{env['LEDGERLINE_GRPC_PORT']}"
            bare_env = {**env, "BENCH_DATABASE_URL": db_url, "BENCH_USER_ID": user["id"]}
            with baseline(free_port(), bare_env) as bare:
                return _measure(opts, service, bare, token, base)
    finally:
        drop_database(opts.admin_url, BENCH_DB)


def _measure(opts: argparse.Namespace, service: str, bare: str, token: str, base: str) -> int:
    print(f"load: {opts.pairs} pairs of {opts.duration:g} s runs, 4 channels x 16 callers")
    load(service, token, opts.warmup)
    load(bare, token, opts.warmup)
    ratios = []
    for i in range(opts.pairs):
        order = [("service", service), ("bare", bare)]
        if i % 2:
            order.reverse()
        got = {}
        for name, target in order:
            got[name] = result = load(target, token, opts.duration)
            print(
                f"  GetMe {name:8s} {result['rate']:8.1f} calls/s  p50={result['p50_ms']}ms "
                f"p99={result['p99_ms']}ms  errors={result['errors']} {result['error_codes']}"
            )
        ratios.append(got["service"]["rate"] / got["bare"]["rate"])
    rest = run_wrk(
        "GET /v1/users/me service",
        f"{base}/v1/users/me",
        threads=2,
        connections=64,
        duration=int(opts.duration),
        headers=[f"Authorization: Bearer {token}"],
    )
    median = statistics.median(ratios)
    verdict = "PASS" if median >= TARGET_RATIO else "FAIL"
    print("summary")
    print(
        "  GetMe over gRPC, service/bare: "
        + ", ".join(f"{r:.1%}" for r in ratios)
        + f"; median {median:.1%} (target >= {TARGET_RATIO:.0%}: {verdict})"
    )
    print(
        f"  GET /v1/users/me over REST, same service: {rest.rps:.1f} req/s "
        f"p50={rest.p50_ms}ms p99={rest.p99_ms}ms non-2xx={rest.non_2xx}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
