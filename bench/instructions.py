"""What tracing costs `GET /v1/users/me`, counted in instructions rather
than seconds: each server of bench.tracing (tracing disabled, tracing at
10 % sampling, the code before tracing, the bare FastAPI + asyncpg
baseline) runs under valgrind's callgrind, and the instructions its
processes execute while they answer a fixed number of requests are
counted. On a shared host whose speed drifts, wrk's req/s of the same
server range widely within one run; instruction counts repeat (two runs of
the same server agree within about 1 %).

    .venv/bin/python -m bench.instructions            # about 10 minutes
    .venv/bin/python -m bench.instructions --variants disabled,untraced
    .venv/bin/python -m bench.instructions --variants disabled,off,on,sampled

The counts are split between the processes' main threads (the event loops
that answer) and their other threads (the span exporter's batches).

Needs valgrind (Debian's `valgrind`: callgrind and callgrind_control).
Each server runs `--workers 2` (the baseline too) under callgrind with
``--trace-children=yes``, instrumentation off until the warm-up is over.
The count is of user-space instructions in the server's processes only:
not the kernel's work for its sockets, and not PostgreSQL's (the
baseline's pool resets each connection on release, which PostgreSQL pays
for; bench.tracing's CPU figures show it). So it is no stand-in for
throughput; it shows, without noise, what each server's own code costs.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path

import httpx

from bench.run import (
    DEFAULT_ADMIN_URL,
    create_database,
    drop_database,
    free_port,
    machine_line,
    running,
)
from bench.tracing import (
    DEFAULT_UNTRACED_REF,
    OTLPSink,
    _login,
    bench_environment,
    server_command,
    service_variants,
    untraced_checkout,
)
from ledgerline.platform.database import migrate

VARIANTS = ("disabled", "untraced", "baseline", "sampled", "off", "on")
DEFAULT_VARIANTS = VARIANTS[:4]
# The sampled service with every trace dropped or every trace kept: what an
# unsampled and a sampled request cost apart (10 % sampling is their mix).
SAMPLERS = {"off": "always_off", "on": "always_on"}
START_SECONDS = 600  # a server's start under valgrind


async def _get_me(base: str, headers: dict[str, str], requests: int, connections: int) -> None:
    limits = httpx.Limits(max_connections=connections)
    async with httpx.AsyncClient(
        base_url=base, headers=headers, timeout=120, limits=limits
    ) as client:

        async def one_connection(count: int) -> None:
            for _ in range(count):
                answer = await client.get("/v1/users/me")
                if answer.status_code != 200:
                    raise RuntimeError(f"GET /v1/users/me answered {answer.status_code}")

        await asyncio.gather(*(one_connection(requests // connections) for _ in range(connections)))


def _collected(files: Sequence[Path]) -> tuple[int, int]:
    """The instructions of callgrind's first dump of each process: in its
    main threads (the event loops), and in its other threads (the span
    exporter's, the default executor's)."""
    main = others = 0
    for path in files:
        for line in path.read_text().splitlines():
            if line.startswith(("summary:", "totals:")):
                if path.name.endswith("-01"):
                    main += int(line.split()[1])
                else:
                    others += int(line.split()[1])
                break
    return main, others


def count(
    name: str,
    cmd: list[str],
    env: dict[str, str],
    base: str,
    headers: dict[str, str],
    opts: argparse.Namespace,
    out: Path,
) -> float:
    """Instructions per request of one server, under callgrind."""
    callgrind = [
        "valgrind",
        "--tool=callgrind",
        "--trace-children=yes",
        "--instr-atstart=no",
        "--separate-threads=yes",
        f"--callgrind-out-file={out}/{name}.%p",
    ]

    def answering() -> bool:
        try:
            return httpx.get(f"{base}/v1/users/me", headers=headers, timeout=10).status_code == 200
        except httpx.HTTPError:
            return False

    with (
        (out / f"{name}.log").open("wb") as log,
        running([*callgrind, *cmd], env, log, answering, START_SECONDS),
    ):
        asyncio.run(_get_me(base, headers, opts.warmup, opts.connections))
        # callgrind_control reaches every process running under callgrind:
        # this bench runs one server at a time.
        subprocess.run(["callgrind_control", "--instr=on"], check=True, capture_output=True)
        started = time.monotonic()
        asyncio.run(_get_me(base, headers, opts.requests, opts.connections))
        took = time.monotonic() - started
        subprocess.run(["callgrind_control", "--dump"], check=True, capture_output=True)
        subprocess.run(["callgrind_control", "--instr=off"], check=True, capture_output=True)
    main, others = _collected(sorted(out.glob(f"{name}.*.1-*")))
    per_request: float = (main + others) / opts.requests
    print(
        f"  {name:<9} {per_request:>12,.0f} instructions per request "
        f"(main threads {main / opts.requests:,.0f}, others {others / opts.requests:,.0f}; "
        f"{main + others:,} over {opts.requests}; "
        f"{opts.requests / took:.0f} req/s under callgrind)",
        flush=True,
    )
    return per_request


def run(opts: argparse.Namespace) -> int:
    for tool in ("valgrind", "callgrind_control"):
        if shutil.which(tool) is None:
            print(f"{tool} is not installed: apt-get install -y valgrind", file=sys.stderr)
            return 2
    names = [n for n in opts.variants.split(",") if n]
    unknown = set(names) - set(VARIANTS)
    if unknown:
        print(f"unknown variants {sorted(unknown)}; known: {', '.join(VARIANTS)}", file=sys.stderr)
        return 2
    workdir = Path(tempfile.mkdtemp(prefix="ledgerline-bench-instructions-"))
    db_url, env = bench_environment(opts.admin_url, workdir)
    sink = OTLPSink()
    print(machine_line(f"untraced-ref={opts.untraced_ref}"))
    print(
        f"callgrind: {opts.requests} requests counted after {opts.warmup} of warm-up, "
        f"{opts.connections} connections; workers={opts.workers}",
        flush=True,
    )
    counts: dict[str, float] = {}
    try:
        create_database(opts.admin_url)
        migrate(db_url)
        with ExitStack() as stack:
            old = stack.enter_context(untraced_checkout(opts.untraced_ref))
            variants = service_variants(sink.endpoint, old / "src")
            command, sampled = variants["sampled"]
            for variant, sampler in SAMPLERS.items():
                variants[variant] = (command, {**sampled, "OTEL_TRACES_SAMPLER": sampler})
            # The user and its token, from the service run once without callgrind.
            port = free_port()
            base = f"http://127.0.0.1:{port}"
            first, first_env = server_command("disabled", variants, env, 1, port)
            with running(first, first_env, subprocess.DEVNULL, f"{base}/healthz"):
                token, user_id = _login(
                    base, "bench-instructions@example.com", "correct horse battery staple"
                )
            for name in names:
                port = free_port()
                base = f"http://127.0.0.1:{port}"
                cmd, server_env = server_command(
                    name, variants, env, opts.workers, port, (db_url, user_id)
                )
                headers = {} if name == "baseline" else {"Authorization": f"Bearer {token}"}
                counts[name] = count(name, cmd, server_env, base, headers, opts, workdir)
    finally:
        sink.close()
        drop_database(opts.admin_url)
        shutil.rmtree(workdir, ignore_errors=True)
    print()
    print("summary (instructions per request, ratios of the counts)")
    pairs = (
        ("disabled", "untraced"),
        ("disabled", "baseline"),
        ("sampled", "disabled"),
        ("off", "disabled"),
        ("on", "disabled"),
    )
    for a, b in pairs:
        if a in counts and b in counts:
            print(f"  {a}/{b}: {counts[a] / counts[b]:.3f}")
    return 0


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="What tracing costs (callgrind).")
    parser.add_argument("--admin-url", default=os.environ.get("BENCH_ADMIN_URL", DEFAULT_ADMIN_URL))
    parser.add_argument("--requests", type=int, default=2000, help="requests counted")
    parser.add_argument("--warmup", type=int, default=400, help="requests before counting")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--variants",
        default=",".join(DEFAULT_VARIANTS),
        help=f"of {', '.join(VARIANTS)} (off, on: the sampled service at always_off, always_on)",
    )
    parser.add_argument("--untraced-ref", default=DEFAULT_UNTRACED_REF)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    return run(parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
