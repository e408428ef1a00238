"""Load benchmark: `GET /v1/users/me` against a bare FastAPI + asyncpg
baseline and a Go net/http + pgx reference, and `POST /v1/users`
throughput, with wrk, on this machine.

    .venv/bin/python -m bench.run            # from the repository root
    .venv/bin/python bench/run.py --duration 15 --connections 64

Steps: create a fresh database `ledgerline_bench` on the machine's PostgreSQL,
`ledgerline migrate` it, start `ledgerline serve --workers 2` (default INFO
access log on; its stderr goes to /dev/null and/or a file, see
--service-log), register a user, log in, and start bench/baseline_app.py (2
workers) beside it on the same database for the same user, and with it
bench/go_getme (built at run time into a temporary directory, when `go` and
Debian's pgx v4 sources are here; `--no-go` skips it). wrk then alternates
between them on GET /v1/users/me (`--pairs` pairs of `--duration` s runs, in
ABBA order, after a warm-up of each: Go, service, baseline, then baseline,
service, Go), so that a shared machine whose speed drifts weighs on all
alike; each pair gives one service/baseline ratio, and the verdict is their
median (the service/Go ratios are printed beside it, with no target). Then
wrk runs POST /v1/users with unique emails, the service stops (SIGTERM),
and the database is dropped. Everything is on loopback, bounded in time,
and stopped in `finally` blocks.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import asyncpg

from ledgerline.platform.database import migrate

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
DEFAULT_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
BENCH_DB = "ledgerline_bench"
TARGET_RATIO = 1.0

# The Go reference: built offline in GOPATH mode against the sources Debian's
# golang-*-dev packages install (a module build would want every module
# pgx's go.mod names, its tests' included, and nothing may be downloaded).
GO_SOURCE = ROOT / "bench" / "go_getme"
GO_PATH = Path("/usr/share/gocode")
PGX_PACKAGE = "github.com/jackc/pgx/v4/pgxpool"
PGX_DEB = "golang-github-jackc-pgx-v4-dev"
# bench/baseline_app.py's asyncpg pool, per worker process; the Go server is
# one process with the pool of all of them.
POOL_MIN_PER_WORKER = 2
POOL_MAX_PER_WORKER = 10

POST_LUA = r"""
-- Unique email per request: thread id + a random prefix + a counter.
local threads = {}
local counter = 0
statuses = {}

function setup(thread)
  table.insert(threads, thread)
  thread:set("tid", #threads)
end

function init(args)
  math.randomseed(os.time() + tid * 7919)
  prefix = string.format("%d-%d", tid, math.random(1, 1000000000))
end

function request()
  counter = counter + 1
  local body = string.format(
    '{"email":"bench-%s-%d@example.com","password":"correct horse battery","name":"Bench User"}',
    prefix, counter)
  return wrk.format("POST", "/v1/users", {["Content-Type"] = "application/json"}, body)
end

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
  local total = {}
  for _, thread in ipairs(threads) do
    local s = thread:get("statuses")
    for code, n in pairs(s) do
      total[code] = (total[code] or 0) + n
    end
  end
  for code, n in pairs(total) do
    io.write(string.format("STATUS %d %d\n", code, n))
  end
end
"""


# --------------------------------------------------------------------- wrk


@dataclass
class WrkResult:
    label: str
    rps: float
    requests: int
    p50_ms: float
    p99_ms: float
    non_2xx: int = 0
    socket_errors: dict[str, int] = field(default_factory=dict)
    statuses: dict[int, int] = field(default_factory=dict)
    raw: str = ""

    @property
    def errors(self) -> int:
        return self.non_2xx + sum(self.socket_errors.values())


_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


def _to_ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text.strip())
    if match is None:
        raise ValueError(f"unexpected wrk latency {text!r}")
    return float(match.group(1)) * _UNITS_MS[match.group(2)]


def parse_wrk(label: str, out: str) -> WrkResult:
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    total = re.search(r"(\d+) requests in", out)
    p50 = re.search(r"^\s+50%\s+(\S+)", out, re.MULTILINE)
    p99 = re.search(r"^\s+99%\s+(\S+)", out, re.MULTILINE)
    if rps is None or total is None or p50 is None or p99 is None:
        raise RuntimeError(f"could not parse wrk output:\n{out}")
    result = WrkResult(
        label=label,
        rps=float(rps.group(1)),
        requests=int(total.group(1)),
        p50_ms=_to_ms(p50.group(1)),
        p99_ms=_to_ms(p99.group(1)),
        raw=out,
    )
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    if non_2xx is not None:
        result.non_2xx = int(non_2xx.group(1))
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if sock is not None:
        names = ("connect", "read", "write", "timeout")
        result.socket_errors = {n: int(v) for n, v in zip(names, sock.groups(), strict=True)}
    for code, count in re.findall(r"^STATUS (\d+) (\d+)$", out, re.MULTILINE):
        result.statuses[int(code)] = int(count)
    return result


def run_wrk(
    label: str,
    url: str,
    *,
    threads: int,
    connections: int,
    duration: int,
    headers: Sequence[str] = (),
    script: Path | None = None,
    script_args: Sequence[str] = (),
    timeout: str = "5s",
) -> WrkResult:
    cmd = [
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{duration}s",
        f"--timeout={timeout}",
        "--latency",
    ]
    for header in headers:
        cmd += ["-H", header]
    if script is not None:
        cmd += ["-s", str(script)]
    cmd.append(url)
    if script_args:
        cmd += ["--", *script_args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {proc.stderr}\n{proc.stdout}")
    return parse_wrk(label, proc.stdout)


# ---------------------------------------------------------------- processes


_handed_out: set[int] = set()


def free_port() -> int:
    """A free port, never one handed out before in this run (the kernel may
    offer a just-closed port again: HTTP and gRPC must not share one)."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port not in _handed_out:
            _handed_out.add(port)
            return port


def http_json(
    method: str, url: str, body: dict[str, Any] | None = None, token: str | None = None
) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)  # noqa: S310 - loopback
    if data is not None:
        request.add_header("Content-Type", "application/json")
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - loopback
            return int(response.status), _json_or_text(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, _json_or_text(exc.read())


def _json_or_text(raw: bytes) -> Any:
    try:
        return json.loads(raw or b"null")
    except ValueError:
        return raw.decode(errors="replace")


def wait_until_up(
    proc: subprocess.Popen[bytes], probe: str | Callable[[], bool], deadline_s: float = 60.0
) -> None:
    """``probe``: a URL (any HTTP answer, even 401/404, means the server is
    listening), or a function that says whether the server answers."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before serving {probe}")
        if _answers(probe):
            return
        time.sleep(0.2)
    raise RuntimeError(f"{probe} did not come up within {deadline_s}s")


def _answers(probe: str | Callable[[], bool]) -> bool:
    if callable(probe):
        return probe()
    try:
        http_json("GET", probe)
    except (urllib.error.URLError, ConnectionError, OSError):
        return False
    return True


@contextmanager
def running(
    cmd: Sequence[str],
    env: dict[str, str],
    stderr: IO[bytes] | int,
    probe_url: str | Callable[[], bool],
    start_seconds: float = 60.0,
) -> Iterator[subprocess.Popen[bytes]]:
    """Starts a server in its own process group, waits up to
    ``start_seconds`` for ``probe_url`` to answer, and always stops it:
    SIGTERM to the process, then SIGKILL to its group if it has not exited
    in 30s."""
    proc = subprocess.Popen(
        list(cmd),
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=stderr,
        start_new_session=True,
    )
    try:
        wait_until_up(proc, probe_url, start_seconds)
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        # Reap any worker left behind in our own process group.
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)


# ----------------------------------------------------------------- database


def with_database(url: str, name: str) -> str:
    base, _, _ = url.rpartition("/")
    return f"{base}/{name}"


async def _admin(url: str, *statements: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


def create_database(admin_url: str, name: str = BENCH_DB) -> None:
    asyncio.run(
        _admin(
            admin_url,
            f"DROP DATABASE IF EXISTS {name} WITH (FORCE)",
            f"CREATE DATABASE {name}",
        )
    )


def migrated_database(admin_url: str, name: str) -> str:
    """A fresh database ``name``, migrated in this process; its URL."""
    create_database(admin_url, name)
    url = with_database(admin_url, name)
    migrate(url)
    return url


def drop_database(admin_url: str, name: str = BENCH_DB) -> None:
    asyncio.run(_admin(admin_url, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))


async def _server_version(url: str) -> str:
    conn = await asyncpg.connect(url)
    try:
        version: str = await conn.fetchval("SHOW server_version")
        return version
    finally:
        await conn.close()


# -------------------------------------------------------------------- bench


@dataclass
class Options:
    admin_url: str
    duration: int
    warmup: int
    threads: int
    connections: int
    post_duration: int
    post_connections: int
    service_logs: list[str]
    workers: int
    rounds: int
    pairs: int
    go: bool


def service_env(db_url: str, jwt_secret: str, data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEDGERLINE_")}
    env.update(
        LEDGERLINE_DATABASE_URL=db_url,
        LEDGERLINE_JWT_SECRET=jwt_secret,
        LEDGERLINE_DATA_DIR=str(data_dir),
        # Default INFO: one access-log line per request, as in production.
        LEDGERLINE_LOG_LEVEL="INFO",
        LEDGERLINE_GRPC_PORT=str(free_port()),
        # One client address registers thousands of users a second here: the
        # rate limits would answer nearly all of them 429.
        LEDGERLINE_RATE_LIMITS_ENABLED="false",
    )
    return env


def warm_up(opts: Options, label: str, base: str, headers: Sequence[str]) -> None:
    if opts.warmup:
        run_wrk(
            f"{label} warm-up",
            f"{base}/v1/users/me",
            threads=opts.threads,
            connections=opts.connections,
            duration=opts.warmup,
            headers=headers,
        )


def measure_get(opts: Options, label: str, base: str, headers: Sequence[str]) -> WrkResult:
    result = run_wrk(
        label,
        f"{base}/v1/users/me",
        threads=opts.threads,
        connections=opts.connections,
        duration=opts.duration,
        headers=headers,
    )
    report(result)
    return result


def report(result: WrkResult) -> None:
    status = "" if not result.statuses else f"  statuses={dict(sorted(result.statuses.items()))}"
    print(
        f"  {result.label:<34} {result.rps:>9.1f} req/s  p50={result.p50_ms:.2f}ms  "
        f"p99={result.p99_ms:.2f}ms  requests={result.requests}  non-2xx={result.non_2xx}  "
        f"socket-errors={result.socket_errors or 0}{status}",
        flush=True,
    )


@dataclass
class Bench:
    opts: Options
    env: dict[str, str]
    db_url: str
    lua: Path
    log_path: Path
    email: str = field(default_factory=lambda: f"bench-me-{secrets.token_hex(4)}@example.com")
    password: str = "correct horse battery staple"
    user_id: str = ""
    go_binary: Path | None = None
    get: dict[str, list[WrkResult]] = field(default_factory=dict)
    post: dict[str, WrkResult] = field(default_factory=dict)

    def paired_round(self, sink: str, *, with_post: bool) -> None:
        """The service, the baseline and the Go reference (when built) run
        side by side (the idle ones cost nothing); wrk alternates between
        them, ``pairs`` times, in ABBA order with the service in the middle,
        so that a machine whose speed drifts (a shared host) weighs on all
        alike. Each pair gives one ratio to the baseline and one to Go."""
        opts = self.opts
        ledgerline = str(VENV_BIN / "ledgerline")
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        cmd = [ledgerline, "serve", "--workers", str(opts.workers), "--port", str(port)]
        with (
            open(os.devnull, "wb") if sink == "devnull" else self.log_path.open("wb") as stderr,
            running(cmd, self.env, stderr, f"{base}/healthz"),
        ):
            token = self._login(base)
            service_headers = [f"Authorization: Bearer {token}"]
            with self._baseline() as baseline, self._go_reference() as go:
                others = "baseline" if go is None else "baseline and Go reference"
                print(
                    f"service (stderr -> {sink}) and {others} side by side "
                    f"(loadavg before: {_loadavg()}):",
                    flush=True,
                )
                warm_up(opts, "service", base, service_headers)
                warm_up(opts, "baseline", baseline, [])
                runs = [
                    (f"service/{sink}", f"GET /v1/users/me service [{sink}]", base),
                    (f"baseline/{sink}", "GET /v1/users/me baseline", baseline),
                ]
                if go is not None:
                    warm_up(opts, "go", go, [])
                    runs.insert(0, (f"go/{sink}", "GET /v1/users/me go", go))
                for pair in range(opts.pairs):
                    for key, label, url in runs if pair % 2 == 0 else runs[::-1]:
                        headers = service_headers if key.startswith("service") else []
                        result = measure_get(opts, label, url, headers)
                        self.get.setdefault(key, []).append(result)
            if with_post and opts.post_duration:
                post = run_wrk(
                    f"POST /v1/users service [{sink}]",
                    f"{base}/v1/users",
                    threads=opts.threads,
                    connections=opts.post_connections,
                    duration=opts.post_duration,
                    script=self.lua,
                    timeout="10s",
                )
                report(post)
                self.post[f"service/{sink}"] = post
        if sink == "file":
            with self.log_path.open("rb") as handle:
                lines = sum(1 for _ in handle)
            print(f"  service log file: {lines} lines, {self.log_path.stat().st_size} bytes")

    def _login(self, base: str) -> str:
        if not self.user_id:
            status, body = http_json(
                "POST",
                f"{base}/v1/users",
                {"email": self.email, "password": self.password, "name": "Bench Me"},
            )
            if status != 201:
                raise RuntimeError(f"register answered {status}: {body}")
            self.user_id = body["id"]
        status, body = http_json(
            "POST", f"{base}/v1/auth/token", {"email": self.email, "password": self.password}
        )
        if status != 200:
            raise RuntimeError(f"login answered {status}: {body}")
        token: str = body["access_token"]
        status, body = http_json("GET", f"{base}/v1/users/me", token=token)
        if status != 200 or body["id"] != self.user_id:
            raise RuntimeError(f"GET /v1/users/me answered {status}: {body}")
        return token

    def _baseline(self) -> AbstractContextManager[str]:
        cmd = [sys.executable, "-m", "bench.baseline_app", "--workers", str(self.opts.workers)]
        return self._reference("baseline", cmd)

    def _go_reference(self) -> AbstractContextManager[str | None]:
        if self.go_binary is None:
            return nullcontext()
        workers = self.opts.workers
        cmd = [str(self.go_binary), "--max-conns", str(workers * POOL_MAX_PER_WORKER)]
        cmd += ["--min-conns", str(workers * POOL_MIN_PER_WORKER)]
        return self._reference("go", cmd)

    @contextmanager
    def _reference(self, name: str, cmd: Sequence[str]) -> Iterator[str]:
        """A bare server, ``cmd --port N``, on the same database for the same
        user and without authentication; its base URL once it answers with
        that user. GOMAXPROCS is left to its default (every core)."""
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        env = {k: v for k, v in self.env.items() if k != "GOMAXPROCS"}
        env.update(BENCH_DATABASE_URL=self.db_url, BENCH_USER_ID=self.user_id)
        with running([*cmd, "--port", str(port)], env, subprocess.DEVNULL, f"{base}/v1/users/me"):
            status, body = http_json("GET", f"{base}/v1/users/me")
            if status != 200 or body["id"] != self.user_id or set(body) != USER_FIELDS:
                raise RuntimeError(f"{name} GET /v1/users/me answered {status}: {body}")
            yield base


USER_FIELDS = {"id", "email", "name", "created_at", "updated_at"}


def go_unavailable() -> str | None:
    """Why the Go reference cannot be built on this machine, or None."""
    if shutil.which("go") is None:
        return "go is not on PATH (apt-get install -y golang-go)"
    if not (GO_PATH / "src" / PGX_PACKAGE).is_dir():
        return f"no pgx v4 sources under {GO_PATH / 'src'} (apt-get install -y {PGX_DEB})"
    return None


def go_versions() -> list[str]:
    """The machine line's Go and pgx versions (pgx as Debian packages it)."""
    go = _output(["go", "env", "GOVERSION"]).removeprefix("go")
    pgx = _output(["dpkg-query", "-W", "-f=${Version}", PGX_DEB])
    return [f"go={go or '?'}", f"pgx={pgx or '?'}"]


def _output(cmd: Sequence[str]) -> str:
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
    except OSError:
        return ""
    return proc.stdout.strip() if proc.returncode == 0 else ""


def build_go_reference(workdir: Path) -> Path:
    """bench/go_getme built into ``workdir`` (its build cache too), offline."""
    binary = workdir / "go_getme"
    env = dict(os.environ)
    env.update(
        GO111MODULE="off",
        GOPATH=str(GO_PATH),
        GOFLAGS="",
        GOPROXY="off",
        GOCACHE=str(workdir / "go-cache"),
    )
    proc = subprocess.run(
        ["go", "build", "-o", str(binary), "."],
        cwd=GO_SOURCE,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"go build exited with {proc.returncode}: {proc.stderr.strip()}")
    return binary


def prepare_go_reference(opts: Options, workdir: Path) -> Path | None:
    """The Go reference's binary; None, with one line saying why, when it is
    skipped."""
    reason = "--no-go" if not opts.go else go_unavailable()
    if reason is None:
        started = time.monotonic()
        try:
            binary = build_go_reference(workdir)
        except (RuntimeError, subprocess.TimeoutExpired) as exc:
            reason = f"the build failed: {exc}"
        else:
            elapsed = time.monotonic() - started
            print(f"go reference: built in {elapsed:.1f}s (GOPATH={GO_PATH})", flush=True)
            return binary
    print(f"go reference skipped: {reason}", flush=True)
    return None


def _loadavg() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def machine_line(*extra: str) -> str:
    """The line each bench prints first: cores, Python, ``extra``, load."""
    parts = [f"nproc={os.cpu_count()}", f"python={sys.version.split()[0]}", *extra]
    return f"machine: {'  '.join(parts)}  loadavg={_loadavg()}"


def run(opts: Options) -> int:
    if shutil.which("wrk") is None:
        print("wrk is not installed: apt-get install -y wrk", file=sys.stderr)
        return 2
    db_url = with_database(opts.admin_url, BENCH_DB)
    workdir = Path(tempfile.mkdtemp(prefix="ledgerline-bench-"))
    env = service_env(db_url, secrets.token_urlsafe(48), workdir / "data")
    lua = workdir / "post_users.lua"
    lua.write_text(POST_LUA)
    bench = Bench(opts, env, db_url, lua, workdir / "service.log")

    versions = [f"postgresql={asyncio.run(_server_version(opts.admin_url))}"]
    if opts.go and go_unavailable() is None:
        versions += go_versions()
    print(machine_line(*versions))
    print(
        f"wrk: -t{opts.threads} -c{opts.connections} -d{opts.duration}s (warm-up {opts.warmup}s)"
        f"; POST -c{opts.post_connections} -d{opts.post_duration}s; workers={opts.workers}"
        f"; rounds={opts.rounds}",
        flush=True,
    )
    try:
        bench.go_binary = prepare_go_reference(opts, workdir)
        create_database(opts.admin_url)
        subprocess.run(
            [str(VENV_BIN / "ledgerline"), "migrate"],
            env=env,
            cwd=ROOT,
            check=True,
            timeout=120,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for round_no in range(1, opts.rounds + 1):
            print(f"round {round_no}/{opts.rounds}", flush=True)
            for sink in opts.service_logs:
                bench.paired_round(sink, with_post=round_no == 1)
    finally:
        drop_database(opts.admin_url)
        shutil.rmtree(workdir, ignore_errors=True)
    return summarize(bench)


def _pairs(key: str, results: list[WrkResult], others: list[WrkResult], other: str) -> str:
    """Each pair's req/s and ratio, service/``other``, and the median ratio."""
    ratios = [r.rps / o.rps for r, o in zip(results, others, strict=True)]
    return (
        f"  {key:<16} GET /v1/users/me: "
        + ", ".join(
            f"{r.rps:.0f}/{o.rps:.0f} ({q:.1%})"
            for r, o, q in zip(results, others, ratios, strict=True)
        )
        + f" req/s service/{other}; median ratio {statistics.median(ratios):.1%}"
    )


def summarize(bench: Bench) -> int:
    print()
    print("summary (ratio = service / baseline or Go of the same pair of back-to-back runs)")
    failed = False
    for key, results in bench.get.items():
        if not key.startswith("service/"):
            continue
        sink = key.removeprefix("service/")
        baselines = bench.get["baseline/" + sink]
        median = statistics.median(r.rps / b.rps for r, b in zip(results, baselines, strict=True))
        verdict = "PASS" if median >= TARGET_RATIO else "FAIL"
        line = _pairs(key, results, baselines, "baseline")
        print(f"{line} (target >= {TARGET_RATIO:.0%}: {verdict})")
        failed = failed or any(r.errors for r in results) or any(b.errors for b in baselines)
        go = bench.get.get("go/" + sink, [])
        if go:
            print(_pairs(key, results, go, "Go") + " (a reference, no target)")
            failed = failed or any(g.errors for g in go)
    servers = ("service", "baseline", "go")
    for key, results in sorted(
        bench.get.items(), key=lambda kv: servers.index(kv[0][: kv[0].index("/")])
    ):
        print(
            f"  {key:<16} GET /v1/users/me, medians of {len(results)} runs: "
            f"{statistics.median(r.rps for r in results):.0f} req/s, "
            f"p50={statistics.median(r.p50_ms for r in results):.2f}ms, "
            f"p99={statistics.median(r.p99_ms for r in results):.2f}ms"
        )
    for key, result in bench.post.items():
        non_201 = sum(n for code, n in result.statuses.items() if code != 201)
        print(
            f"  {key:<16} POST /v1/users: {result.rps:.1f} req/s, p50={result.p50_ms:.0f}ms "
            f"p99={result.p99_ms:.0f}ms, statuses={dict(sorted(result.statuses.items()))}, "
            f"socket errors={sum(result.socket_errors.values())}"
        )
        failed = failed or result.errors > 0 or non_201 > 0
    if failed:
        print("  some requests failed (non-2xx or socket errors): see the lines above")
    return 1 if failed else 0


def parse_args(argv: Sequence[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(description="Ledgerline load benchmark (wrk).")
    parser.add_argument("--admin-url", default=os.environ.get("BENCH_ADMIN_URL", DEFAULT_ADMIN_URL))
    parser.add_argument("--duration", type=int, default=10, help="seconds per GET run")
    parser.add_argument("--warmup", type=int, default=3, help="seconds of warm-up per GET run")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--post-duration", type=int, default=15, help="0 skips the POST run")
    parser.add_argument("--post-connections", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--rounds", type=int, default=1, help="rounds of paired runs (POST runs in round 1)"
    )
    parser.add_argument(
        "--pairs", type=int, default=4, help="service/baseline GET pairs per round and log sink"
    )
    parser.add_argument(
        "--service-log",
        default="devnull,file",
        help="where the service's stderr (INFO access log) goes: devnull, file, or both",
    )
    parser.add_argument(
        "--no-go",
        dest="go",
        action="store_false",
        help="skip the Go net/http + pgx reference (bench/go_getme)",
    )
    args = parser.parse_args(argv)
    sinks = [s.strip() for s in args.service_log.split(",") if s.strip()]
    if not sinks or any(s not in ("devnull", "file") for s in sinks):
        parser.error("--service-log takes devnull, file or devnull,file")
    return Options(
        admin_url=args.admin_url,
        duration=args.duration,
        warmup=args.warmup,
        threads=args.threads,
        connections=args.connections,
        post_duration=args.post_duration,
        post_connections=args.post_connections,
        service_logs=sinks,
        workers=args.workers,
        rounds=args.rounds,
        pairs=args.pairs,
        go=args.go,
    )


def main(argv: Sequence[str] | None = None) -> int:
    return run(parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
