"""`ledgerline serve` speaks gRPC beside REST in every process: the same
users over both, one shutdown for both, and a gRPC port that is refused,
not shared, when something already holds it."""

from __future__ import annotations

import asyncio
import signal
import subprocess
from collections.abc import Callable

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from ledgerline.v1 import users_pb2, users_pb2_grpc
from tests.e2e.conftest import JWT_SECRET, LEDGERLINE, Service, clean_env, free_port

pytestmark = pytest.mark.e2e
StartService = Callable[..., Service]
PASSWORD = "correct horse battery"


async def _health(channel: grpc.aio.Channel) -> int:
    stub = health_pb2_grpc.HealthStub(channel)
    request = health_pb2.HealthCheckRequest(service="")
    reply = await stub.Check(request, timeout=5)  # type: ignore[attr-defined]
    status: int = reply.status
    return status


@pytest.mark.parametrize("workers", ["1", "2"], ids=["one-process", "two-workers"])
async def test_a_user_made_over_rest_logs_in_over_grpc(
    start_service: StartService, database_url: str, workers: str
) -> None:
    service = start_service(
        "--workers", workers, LEDGERLINE_DATABASE_URL=database_url, LEDGERLINE_JWT_SECRET=JWT_SECRET
    )
    async with httpx.AsyncClient(base_url=service.base_url, timeout=10) as client:
        made = await client.post(
            "/v1/users", json={"email": "both@example.com", "password": PASSWORD, "name": "Both"}
        )
        assert made.status_code == 201, made.text
    async with grpc.aio.insecure_channel(service.grpc_target) as channel:
        assert await _health(channel) == health_pb2.HealthCheckResponse.SERVING
        users = users_pb2_grpc.UserServiceStub(channel)
        for _ in range(4):  # with two workers, calls may land on either
            login = await users.Login(
                users_pb2.LoginRequest(email="both@example.com", password=PASSWORD), timeout=10
            )
            me = await users.GetMe(
                users_pb2.GetMeRequest(),
                metadata=(("authorization", f"Bearer {login.access_token}"),),
                timeout=10,
            )
            assert me.user.id == made.json()["id"]
    assert service.terminate() == 0


async def test_a_second_serve_on_the_same_grpc_port_is_refused(
    start_service: StartService, database_url: str
) -> None:
    first = start_service(LEDGERLINE_DATABASE_URL=database_url, LEDGERLINE_JWT_SECRET=JWT_SECRET)
    grpc_port = first.grpc_target.rsplit(":", 1)[1]
    second = await asyncio.to_thread(
        subprocess.run,
        [LEDGERLINE, "serve"],
        env=clean_env(
            LEDGERLINE_HTTP_PORT=str(free_port()),
            LEDGERLINE_GRPC_PORT=grpc_port,
            LEDGERLINE_DATABASE_URL=database_url,
            LEDGERLINE_JWT_SECRET=JWT_SECRET,
        ),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert second.returncode != 0
    assert f"the gRPC port 127.0.0.1:{grpc_port} is in use" in second.stderr
    assert "Traceback" not in second.stderr
    assert first.proc.poll() is None  # the first one goes on serving
    assert first.terminate() == 0


async def test_sigterm_turns_health_at_once_and_finishes_calls_on_both_transports(
    start_service: StartService, database_url: str
) -> None:
    """Registrations (Argon2: slow) in flight over REST and gRPC when SIGTERM
    lands: every one completes, health is NOT_SERVING meanwhile, exit 0."""
    service = start_service(
        "--workers",
        "2",
        LEDGERLINE_DATABASE_URL=database_url,
        LEDGERLINE_JWT_SECRET=JWT_SECRET,
        LEDGERLINE_SHUTDOWN_DRAIN_SECONDS="1",
    )
    async with (
        httpx.AsyncClient(base_url=service.base_url, timeout=30) as client,
        grpc.aio.insecure_channel(service.grpc_target) as channel,
    ):
        assert await _health(channel) == health_pb2.HealthCheckResponse.SERVING
        users = users_pb2_grpc.UserServiceStub(channel)
        over_rest = [
            client.post(
                "/v1/users",
                json={"email": f"rest{i}@example.com", "password": PASSWORD, "name": "R"},
            )
            for i in range(6)
        ]
        over_grpc = [
            users.Register(
                users_pb2.RegisterRequest(
                    email=f"grpc{i}@example.com", password=PASSWORD, name="G"
                ),
                timeout=30,
            )
            for i in range(6)
        ]
        calls = asyncio.gather(*over_rest, *over_grpc, return_exceptions=True)
        await asyncio.sleep(0.2)
        service.proc.send_signal(signal.SIGTERM)
        await asyncio.sleep(0.3)
        assert await _health(channel) == health_pb2.HealthCheckResponse.NOT_SERVING
        answers = await calls
    for answer in answers[:6]:
        assert isinstance(answer, httpx.Response), answer
        assert answer.status_code == 201, answer.text
    for answer in answers[6:]:
        assert isinstance(answer, users_pb2.RegisterResponse), answer
    status = await asyncio.to_thread(service.proc.wait, 60)
    assert status == 0, service.log.read_text()[-3000:]
