"""`ledgerline serve` as an operator runs it: graceful shutdown under load,
the embedded default, configuration errors, and the admin CLI."""

from __future__ import annotations

import asyncio
import signal
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from tests.e2e.conftest import JWT_SECRET, LEDGERLINE, Service, clean_env, free_port

pytestmark = pytest.mark.e2e
StartService = Callable[..., Service]
IN_FLIGHT = 40


@pytest.mark.parametrize("workers", ["1", "2"], ids=["one-process", "two-workers"])
async def test_sigterm_loses_no_in_flight_request(
    start_service: StartService, database_url: str, workers: str
) -> None:
    # Costly hashes keep all 40 registrations in flight when SIGTERM lands.
    service = start_service(
        "--workers",
        workers,
        LEDGERLINE_DATABASE_URL=database_url,
        LEDGERLINE_JWT_SECRET=JWT_SECRET,
        LEDGERLINE_ARGON2_TIME_COST="3",
        LEDGERLINE_ARGON2_MEMORY_KIB=str(64 * 1024),
        # On a loaded machine 40 such hashes on two threads can outlast the
        # default 10 s deadline; this test is about the shutdown, not that.
        LEDGERLINE_REQUEST_TIMEOUT_SECONDS="60",
    )
    limits = httpx.Limits(max_connections=IN_FLIGHT)
    async with httpx.AsyncClient(base_url=service.base_url, limits=limits, timeout=60) as client:

        async def register(i: int) -> httpx.Response:
            body = {"email": f"inflight{i}@example.com", "password": "password123", "name": "N"}
            return await client.post("/v1/users", json=body)

        requests = [asyncio.create_task(register(i)) for i in range(IN_FLIGHT)]
        await asyncio.sleep(0.5)
        assert not all(r.done() for r in requests), "requests finished before the signal"
        service.proc.send_signal(signal.SIGTERM)
        responses = await asyncio.gather(*requests)
    assert [r.status_code for r in responses] == [201] * IN_FLIGHT
    assert await asyncio.to_thread(service.proc.wait, 60) == 0
    with pytest.raises(httpx.ConnectError):
        await asyncio.to_thread(httpx.get, f"{service.base_url}/healthz", timeout=1)


async def test_embedded_postgres_by_default(start_service: StartService, tmp_path: Path) -> None:
    service = start_service()  # no LEDGERLINE_DATABASE_URL, no JWT secret
    async with httpx.AsyncClient(base_url=service.base_url) as client:
        health = await client.get("/healthz")
        ready = await client.get("/readyz")
        created = await client.post(
            "/v1/users", json={"email": "e@example.com", "password": "password123", "name": "E"}
        )
    assert (health.status_code, health.json()) == (200, {"status": "ok"})
    assert ready.status_code == 200
    assert created.status_code == 201
    assert (tmp_path / "data" / "jwt_secret").stat().st_mode & 0o077 == 0
    assert "LEDGERLINE_JWT_SECRET is not set" in service.log.read_text()
    assert await asyncio.to_thread(service.terminate) == 0
    assert _postmasters(tmp_path) == [], "the embedded PostgreSQL outlived the service"


@pytest.fixture
def no_stray_postmaster(tmp_path: Path) -> Iterator[None]:
    """Whatever a failing test leaves running under its data directory goes."""
    yield
    for process in _postmasters(tmp_path):
        process.kill()


def _postmasters(tmp_path: Path) -> list[psutil.Process]:
    pgdata = str(tmp_path / "data" / "postgres")
    return [
        p for p in psutil.process_iter(["name", "cmdline"]) if pgdata in (p.info["cmdline"] or [])
    ]


@pytest.mark.usefixtures("no_stray_postmaster")
async def test_after_a_killed_service_the_next_one_still_stops_the_embedded_server(
    start_service: StartService, tmp_path: Path
) -> None:
    killed = start_service()
    killed.proc.kill()  # SIGKILL: no clean-up runs; the server keeps running
    killed.proc.wait()
    assert _postmasters(tmp_path), "expected the server to outlive a killed service"

    service = start_service()
    assert await asyncio.to_thread(service.terminate) == 0
    assert _postmasters(tmp_path) == [], "the embedded PostgreSQL outlived the service"


@pytest.mark.usefixtures("no_stray_postmaster")
async def test_a_stale_postmaster_pid_naming_another_process_does_not_stop_a_start(
    start_service: StartService, tmp_path: Path
) -> None:
    """After a crash and a restart, the pid in postmaster.pid may belong to
    any process: here, this test's own."""
    crashed = start_service()
    crashed.proc.kill()
    crashed.proc.wait()
    for process in _postmasters(tmp_path):
        process.kill()
    psutil.wait_procs(_postmasters(tmp_path), timeout=10)
    pidfile = tmp_path / "data" / "postgres" / "postmaster.pid"
    lines = pidfile.read_text().splitlines()
    pidfile.write_text("\n".join([str(psutil.Process().pid), *lines[1:]]) + "\n")

    service = start_service()
    async with httpx.AsyncClient(base_url=service.base_url) as client:
        assert (await client.get("/readyz")).status_code == 200
    assert await asyncio.to_thread(service.terminate) == 0
    assert _postmasters(tmp_path) == []


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        pytest.param("LEDGERLINE_HTTP_PORT", "not-a-port", id="port-not-a-number"),
        pytest.param("LEDGERLINE_HTTP_PORT", "70000", id="port-out-of-range"),
        pytest.param("LEDGERLINE_JWT_SECRET", "short", id="weak-secret"),
        pytest.param("LEDGERLINE_DATABASE_URL", "mysql://db/x", id="not-postgres"),
        pytest.param("LEDGERLINE_LOG_FORMAT", "xml", id="unknown-log-format"),
    ],
)
def test_bad_configuration_stops_at_start(variable: str, value: str) -> None:
    result = subprocess.run(
        [LEDGERLINE, "serve"],
        env=clean_env(**{variable: value}),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert variable in lines[0]


def test_serve_on_a_configured_database_without_a_jwt_secret_refuses_to_start(
    tmp_path: Path,
) -> None:
    """Pods sharing a database must share the secret: one each would sign
    tokens that the other pods refuse."""
    result = subprocess.run(
        [LEDGERLINE, "serve"],
        env=clean_env(
            # Never reached: the refusal comes before any connection.
            LEDGERLINE_DATABASE_URL="postgresql://postgres@127.0.0.1:1/nowhere",
            LEDGERLINE_HTTP_PORT=str(free_port()),
            LEDGERLINE_DATA_DIR=str(tmp_path / "data"),
        ),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "configuration error: LEDGERLINE_JWT_SECRET: must be set when LEDGERLINE_DATABASE_URL "
        "is (every process serving that database must sign tokens with the same secret)"
    ]
    assert not (tmp_path / "data").exists()


def test_a_database_that_does_not_answer_stops_the_start_with_one_line(tmp_path: Path) -> None:
    result = subprocess.run(
        [LEDGERLINE, "serve"],
        env=clean_env(
            LEDGERLINE_DATABASE_URL="postgresql://postgres@127.0.0.1:1/nowhere",
            LEDGERLINE_JWT_SECRET=JWT_SECRET,
            LEDGERLINE_HTTP_PORT=str(free_port()),
            LEDGERLINE_DATA_DIR=str(tmp_path),
        ),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "could not start: a dependency does not answer" in result.stderr


async def test_create_admin_then_admin_lookup(
    start_service: StartService, database_url: str
) -> None:
    env = clean_env(LEDGERLINE_DATABASE_URL=database_url, LEDGERLINE_JWT_SECRET=JWT_SECRET)
    command = [LEDGERLINE, "users", "create-admin", "--email", "root@example.com"]
    made = await asyncio.to_thread(
        subprocess.run,
        [*command, "--name", "Root", "--password-stdin"],
        input="admin-password\n",
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert made.returncode == 0, made.stderr
    assert "created admin root@example.com" in made.stdout
    service = start_service(LEDGERLINE_DATABASE_URL=database_url, LEDGERLINE_JWT_SECRET=JWT_SECRET)
    async with httpx.AsyncClient(base_url=service.base_url) as client:
        user = await client.post(
            "/v1/users", json={"email": "u@example.com", "password": "password123", "name": "U"}
        )
        login = await client.post(
            "/v1/auth/token", json={"email": "root@example.com", "password": "admin-password"}
        )
        token = login.json()["access_token"]
        found = await client.get(
            "/v1/users",
            params={"email": "U@example.com"},
            headers={"Authorization": f"Bearer {token}"},
        )
    assert found.status_code == 200
    assert found.json()["id"] == user.json()["id"]
