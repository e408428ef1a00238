"""What tracing costs: `GET /v1/users/me` with tracing disabled, with
tracing on at 10% sampling (exporting over OTLP/HTTP to a sink in this
process), from the code as it was before tracing existed (a git ref, run
from a temporary worktree), and from the bare FastAPI + asyncpg baseline,
all in the same run, with wrk.

    .venv/bin/python -m bench.tracing                # from the repository root
    .venv/bin/python -m bench.tracing --pairs 6 --untraced-ref eca9989

The four servers run side by side on one fresh database (`ledgerline serve
--workers N` three times, the baseline with N workers); wrk alternates
between them, ``--pairs`` times, in ABBA order after a warm-up of each, so
that a shared machine whose speed drifts weighs on all alike. Each round
gives one ratio per comparison; the verdicts are the medians:

- disabled / untraced code: within 3 % (>= 0.97);
- disabled / baseline: at least 1.0 (with the metrics of --workers N on);
- sampled 10 % / disabled: within 15 % (>= 0.85).

Beside each run's req/s it reads the CPU time (user + system) that the
server's processes and PostgreSQL's took, per request: where the time of a
request goes (the baseline's pool resets each connection on release, which
PostgreSQL pays for), and a second view of the same comparison. The summary
gives, per round, the baseline's CPU per request over each server's (>= 1.0:
no more CPU than the baseline). It is printed beside the throughput
verdicts, not instead of them, and it drifts with the host too: a process
that is woken for fewer requests at a time spends more CPU on each.

Everything is on loopback, bounded in time, and stopped in `finally`.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import psutil

from bench.run import (
    BENCH_DB,
    DEFAULT_ADMIN_URL,
    ROOT,
    USER_FIELDS,
    Options,
    WrkResult,
    create_database,
    drop_database,
    free_port,
    http_json,
    machine_line,
    measure_get,
    running,
    service_env,
    warm_up,
    with_database,
)
from ledgerline.platform.database import migrate

# The last commit before the service had any tracing code.
DEFAULT_UNTRACED_REF = "eca9989"
TARGETS = {
    ("disabled", "untraced"): 0.97,
    ("disabled", "baseline"): 1.0,
    ("sampled", "disabled"): 0.85,
}


class OTLPSink:
    """Takes OTLP/HTTP exports and throws them away (as a collector on
    another machine would take them off this one), counting the bytes."""

    def __init__(self) -> None:
        self.received = 0
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                sink.received += len(self.rfile.read(int(self.headers["Content-Length"])))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                return None

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@dataclass
class Target:
    name: str
    base: str
    headers: list[str]
    pid: int


@dataclass
class CPUCost:
    """CPU microseconds per answered request, over one wrk run."""

    server_us: float
    postgres_us: float

    @property
    def total_us(self) -> float:
        return self.server_us + self.postgres_us


def _cpu_seconds(processes: Sequence[psutil.Process]) -> dict[int, float]:
    seconds: dict[int, float] = {}
    for process in processes:
        try:
            times = process.cpu_times()
        except psutil.Error:  # ended meanwhile: its time is lost to both snapshots
            continue
        seconds[process.pid] = times.user + times.system
    return seconds


def _server_tree(pid: int) -> list[psutil.Process]:
    root = psutil.Process(pid)
    return [root, *root.children(recursive=True)]


def _postgres() -> list[psutil.Process]:
    return [p for p in psutil.process_iter(["name"]) if p.info["name"] == "postgres"]


def _spent(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU seconds between two snapshots; a process born in between counts
    from zero."""
    return sum(t - before.get(pid, 0.0) for pid, t in after.items())


def measure_with_cpu(opts: Options, target: Target) -> tuple[WrkResult, CPUCost]:
    server_before = _cpu_seconds(_server_tree(target.pid))
    postgres_before = _cpu_seconds(_postgres())
    result = measure_get(opts, f"GET /v1/users/me {target.name}", target.base, target.headers)
    server = _spent(server_before, _cpu_seconds(_server_tree(target.pid)))
    postgres = _spent(postgres_before, _cpu_seconds(_postgres()))
    requests = max(result.requests, 1)
    cost = CPUCost(server * 1e6 / requests, postgres * 1e6 / requests)
    print(
        f"    CPU per request: server {cost.server_us:.0f} us, "
        f"PostgreSQL {cost.postgres_us:.0f} us",
        flush=True,
    )
    return result, cost


@contextmanager
def untraced_checkout(ref: str) -> Iterator[Path]:
    """The service's source at ``ref``, in a temporary git worktree."""
    path = Path(tempfile.mkdtemp(prefix="ledgerline-untraced-"))
    subprocess.run(
        ["git", "worktree", "add", "--detach", str(path), ref],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    try:
        yield path
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(path)], cwd=ROOT, check=False)
        shutil.rmtree(path, ignore_errors=True)


def _login(base: str, email: str, password: str) -> tuple[str, str]:
    account = {"email": email, "password": password, "name": "Bench Tracing"}
    status, body = http_json("POST", f"{base}/v1/users", account)
    if status not in (201, 409):
        raise RuntimeError(f"register answered {status}: {body}")
    status, body = http_json(
        "POST", f"{base}/v1/auth/token", {"email": email, "password": password}
    )
    if status != 200:
        raise RuntimeError(f"login answered {status}: {body}")
    token: str = body["access_token"]
    status, me = http_json("GET", f"{base}/v1/users/me", token=token)
    if status != 200:
        raise RuntimeError(f"GET /v1/users/me answered {status}: {me}")
    return token, str(me["id"])


def service_variants(
    otlp_endpoint: str, untraced_src: Path
) -> dict[str, tuple[list[str], dict[str, str]]]:
    """The services compared: the command that runs ``ledgerline`` (to which
    ``serve ...`` is added), and what each adds to the environment."""
    ledgerline = [sys.executable, "-m", "ledgerline"]
    return {
        "disabled": (ledgerline, {"OTEL_SDK_DISABLED": "true"}),
        "sampled": (
            ledgerline,
            {
                "OTEL_TRACES_EXPORTER": "otlp",
                "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
                "OTEL_EXPORTER_OTLP_ENDPOINT": otlp_endpoint,
                "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
                "OTEL_TRACES_SAMPLER_ARG": "0.1",
            },
        ),
        "untraced": (ledgerline, {"PYTHONPATH": str(untraced_src)}),
    }


def server_command(
    name: str,
    variants: dict[str, tuple[list[str], dict[str, str]]],
    env: dict[str, str],
    workers: int,
    port: int,
    baseline_for: tuple[str, str] = ("", ""),
) -> tuple[list[str], dict[str, str]]:
    """The command and environment of one compared server on ``port``: a
    ``ledgerline serve`` variant (with a gRPC port of its own), or the
    ``baseline``, which serves the user ``baseline_for`` names (database
    URL, user id)."""
    serve = ["--workers", str(workers), "--port", str(port)]
    if name == "baseline":
        db_url, user_id = baseline_for
        baseline_env = {**env, "BENCH_DATABASE_URL": db_url, "BENCH_USER_ID": user_id}
        return [sys.executable, "-m", "bench.baseline_app", *serve], baseline_env
    command, extra = variants[name]
    return [*command, "serve", *serve], {**env, **extra, "LEDGERLINE_GRPC_PORT": str(free_port())}


def bench_environment(admin_url: str, workdir: Path) -> tuple[str, dict[str, str]]:
    """The bench database's URL, and the services' environment: a fresh JWT
    secret, a data directory under ``workdir``, and none of this shell's
    ``OTEL_*`` variables (each variant sets its own)."""
    db_url = with_database(admin_url, BENCH_DB)
    env = service_env(db_url, secrets.token_urlsafe(48), workdir / "data")
    return db_url, {k: v for k, v in env.items() if not k.startswith("OTEL_")}


def run(opts: Options, untraced_ref: str) -> int:
    if shutil.which("wrk") is None:
        print("wrk is not installed: apt-get install -y wrk", file=sys.stderr)
        return 2
    workdir = Path(tempfile.mkdtemp(prefix="ledgerline-bench-tracing-"))
    db_url, env = bench_environment(opts.admin_url, workdir)
    sink = OTLPSink()
    print(machine_line(f"untraced-ref={untraced_ref}"))
    print(
        f"wrk: -t{opts.threads} -c{opts.connections} -d{opts.duration}s "
        f"(warm-up {opts.warmup}s); workers={opts.workers}; pairs={opts.pairs}",
        flush=True,
    )
    results: dict[str, list[WrkResult]] = {}
    costs: dict[str, list[CPUCost]] = {}
    try:
        create_database(opts.admin_url)
        migrate(db_url)
        with ExitStack() as stack:
            old = stack.enter_context(untraced_checkout(untraced_ref))
            variants = service_variants(sink.endpoint, old / "src")
            targets: list[Target] = []
            email, password = "bench-tracing@example.com", "correct horse battery staple"
            user_id = ""
            for name in variants:
                port = free_port()
                base = f"http://127.0.0.1:{port}"
                cmd, variant_env = server_command(name, variants, env, opts.workers, port)
                proc = stack.enter_context(
                    running(cmd, variant_env, subprocess.DEVNULL, f"{base}/healthz")
                )
                token, user_id = _login(base, email, password)
                headers = [f"Authorization: Bearer {token}"]
                targets.append(Target(name, base, headers, proc.pid))
            port = free_port()
            base = f"http://127.0.0.1:{port}"
            cmd, baseline_env = server_command(
                "baseline", variants, env, opts.workers, port, (db_url, user_id)
            )
            proc = stack.enter_context(
                running(
                    cmd,
                    baseline_env,
                    subprocess.DEVNULL,
                    f"{base}/v1/users/me",
                )
            )
            status, body = http_json("GET", f"{base}/v1/users/me")
            if status != 200 or set(body) != USER_FIELDS:
                raise RuntimeError(f"baseline answered {status}: {body}")
            targets.append(Target("baseline", base, [], proc.pid))

            for target in targets:
                warm_up(opts, target.name, target.base, target.headers)
            for pair in range(opts.pairs):
                for target in targets if pair % 2 == 0 else targets[::-1]:
                    result, cost = measure_with_cpu(opts, target)
                    results.setdefault(target.name, []).append(result)
                    costs.setdefault(target.name, []).append(cost)
    finally:
        sink.close()
        drop_database(opts.admin_url)
        shutil.rmtree(workdir, ignore_errors=True)
    return summarize(results, costs, sink.received)


def summarize(
    results: dict[str, list[WrkResult]], costs: dict[str, list[CPUCost]], exported: int
) -> int:
    print()
    print("summary (each ratio from runs of the same round, back to back; verdict: median)")
    failed = any(r.errors for runs in results.values() for r in runs)
    for name, runs in results.items():
        print(
            f"  {name:<9} medians of {len(runs)} runs: "
            f"{statistics.median(r.rps for r in runs):.0f} req/s, "
            f"p50={statistics.median(r.p50_ms for r in runs):.2f}ms, "
            f"p99={statistics.median(r.p99_ms for r in runs):.2f}ms"
        )
    for (a, b), target in TARGETS.items():
        ratios = [x.rps / y.rps for x, y in zip(results[a], results[b], strict=True)]
        median = statistics.median(ratios)
        verdict = "PASS" if median >= target else "FAIL"
        pairs = ", ".join(f"{q:.3f}" for q in ratios)
        print(f"  {a}/{b}: {pairs}; median {median:.3f} (target >= {target}: {verdict})")
    print("CPU per request (median of the runs; server's processes + PostgreSQL's)")
    for name, spent in costs.items():
        print(
            f"  {name:<9} server {statistics.median(c.server_us for c in spent):.0f} us"
            f" + PostgreSQL {statistics.median(c.postgres_us for c in spent):.0f} us"
            f" = {statistics.median(c.total_us for c in spent):.0f} us"
        )
    for name in costs:
        if name == "baseline":
            continue
        ratios = [
            b.total_us / x.total_us for x, b in zip(costs[name], costs["baseline"], strict=True)
        ]
        server = [
            b.server_us / x.server_us for x, b in zip(costs[name], costs["baseline"], strict=True)
        ]
        print(
            f"  baseline/{name} CPU per request: "
            + ", ".join(f"{q:.3f}" for q in ratios)
            + f"; median {statistics.median(ratios):.3f}"
            + f" (server's processes alone: median {statistics.median(server):.3f})"
        )
    print(f"  OTLP bytes exported by the sampled service: {exported}")
    if exported == 0:
        print("  the sampled service exported nothing: its tracing was not on")
        failed = True
    if failed:
        print("  some requests failed (non-2xx or socket errors): see the lines above")
    return 1 if failed else 0


def parse_args(argv: Sequence[str] | None = None) -> tuple[Options, str]:
    parser = argparse.ArgumentParser(description="What tracing costs (wrk).")
    parser.add_argument("--admin-url", default=os.environ.get("BENCH_ADMIN_URL", DEFAULT_ADMIN_URL))
    parser.add_argument("--duration", type=int, default=10, help="seconds per run")
    parser.add_argument("--warmup", type=int, default=3, help="seconds of warm-up per server")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--pairs", type=int, default=4, help="rounds over the four servers")
    parser.add_argument(
        "--untraced-ref",
        default=DEFAULT_UNTRACED_REF,
        help="git ref of the code before tracing (default: %(default)s)",
    )
    args = parser.parse_args(argv)
    options = Options(
        admin_url=args.admin_url,
        duration=args.duration,
        warmup=args.warmup,
        threads=args.threads,
        connections=args.connections,
        post_duration=0,
        post_connections=0,
        service_logs=["devnull"],
        workers=args.workers,
        rounds=1,
        pairs=args.pairs,
        go=False,
    )
    return options, args.untraced_ref


def main(argv: Sequence[str] | None = None) -> int:
    return run(*parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
