"""Real `ledgerline` processes, talked to over real sockets."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

LEDGERLINE = str(Path(sys.executable).with_name("ledgerline"))
JWT_SECRET = "e2e-secret-that-is-long-enough-for-hs256-0123456789"


_handed_out: set[int] = set()


def free_port() -> int:
    """A port free now, and never one this test process handed out before
    (the kernel may offer a just-closed port again at once: two calls in a
    row could otherwise name the same port for HTTP and gRPC)."""
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port not in _handed_out:
            _handed_out.add(port)
            return port


def free_ports(count: int) -> list[int]:
    return [free_port() for _ in range(count)]


def clean_env(**values: str) -> dict[str, str]:
    """The test's environment without any LEDGERLINE_* or OTEL_* the developer set,
    and a gRPC port of its own unless one is given."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LEDGERLINE_", "OTEL_"))}
    env.update(
        {"LEDGERLINE_LOG_FORMAT": "json", "LEDGERLINE_GRPC_PORT": str(free_port()), **values}
    )
    return env


def wait_healthz(
    proc: subprocess.Popen[bytes], base_url: str, log: Path, timeout: float = 60
) -> None:
    """Until ``base_url``/healthz answers 200; fails, with the process's
    log, if the process exits first or the time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"the process exited early:\n{log.read_text()}")
        try:
            if httpx.get(f"{base_url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"the process did not become healthy:\n{log.read_text()}")


class Service:
    def __init__(self, proc: subprocess.Popen[bytes], port: int, log: Path, grpc_port: int) -> None:
        self.proc = proc
        self.port = port
        self.log = log
        self.base_url = f"http://127.0.0.1:{port}"
        self.grpc_target = f"127.0.0.1:{grpc_port}"

    def wait_healthy(self, timeout: float = 60) -> None:
        wait_healthz(self.proc, self.base_url, self.log, timeout)

    def terminate(self, timeout: float = 60) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)


@pytest.fixture
def start_service(tmp_path: Path) -> Iterator[object]:
    started: list[Service] = []

    def start(*args: str, healthy: bool = True, **env: str) -> Service:
        """``healthy=False``: return as soon as the process runs."""
        port, grpc_port = free_ports(2)
        log = tmp_path / f"serve-{port}.log"
        environment = clean_env(
            LEDGERLINE_HTTP_PORT=str(port),
            LEDGERLINE_GRPC_PORT=str(grpc_port),
            LEDGERLINE_DATA_DIR=str(tmp_path / "data"),
            **env,
        )
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [LEDGERLINE, "serve", *args], env=environment, stdout=out, stderr=out
            )
        service = Service(proc, port, log, int(environment["LEDGERLINE_GRPC_PORT"]))
        started.append(service)
        if healthy:
            service.wait_healthy()
        return service

    yield start
    for service in started:
        if service.proc.poll() is None:
            service.proc.kill()
            service.proc.wait()


class Worker:
    """A `ledgerline worker` process and its health port."""

    def __init__(self, proc: subprocess.Popen[bytes], port: int, log: Path) -> None:
        self.proc = proc
        self.port = port
        self.log = log
        self.base_url = f"http://127.0.0.1:{port}"

    def wait_listening(self, timeout: float = 60) -> None:
        wait_healthz(self.proc, self.base_url, self.log, timeout)

    def readiness(self) -> httpx.Response:
        return httpx.get(f"{self.base_url}/readyz", timeout=5)

    def metric(self, name: str, **labels: str) -> float:
        text = httpx.get(f"{self.base_url}/metrics", timeout=5).text
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and all(
                    sample.labels.get(k) == v for k, v in labels.items()
                ):
                    return float(sample.value)
        return 0.0

    def terminate(self, timeout: float = 60) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(10)


@pytest.fixture
def start_worker(tmp_path: Path) -> Iterator[object]:
    started: list[Worker] = []

    def start(**env: str) -> Worker:
        port = free_port()
        log = tmp_path / f"worker-{port}.log"
        environment = clean_env(
            LEDGERLINE_WORKER_PORT=str(port),
            LEDGERLINE_DATA_DIR=str(tmp_path / "data"),
            LEDGERLINE_JWT_SECRET=JWT_SECRET,
            **env,
        )
        with log.open("wb") as out:
            proc = subprocess.Popen([LEDGERLINE, "worker"], env=environment, stdout=out, stderr=out)
        worker = Worker(proc, port, log)
        started.append(worker)
        worker.wait_listening()
        return worker

    yield start
    for worker in started:
        if worker.proc.poll() is None:
            worker.proc.kill()
            worker.proc.wait()
