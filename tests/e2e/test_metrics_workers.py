"""`ledgerline serve --workers 2`: /metrics counts every request exactly
once, whichever process answers the scrape, and still does after a serving
process is killed and replaced. Which process answered a connection is read
from the operating system (the process holding its other end), not from
anything the service says."""

from __future__ import annotations

import http.client
import json
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import httpx
import psutil
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.conftest import JWT_SECRET, Service

pytestmark = pytest.mark.e2e
StartService = Callable[..., Service]

REQUESTS_PER_CONNECTION = 5
MIN_REQUESTS = 40
MAX_CONNECTIONS = 200  # to find both processes answering; far more than it takes
POOL_MAX_SIZE = 4
ME = {"name": "ledgerline_http_requests_total", "method": "GET", "route": "/v1/users/me"}


def test_counts_add_up_over_the_processes_and_outlive_a_killed_one(
    start_service: StartService, database_url: str
) -> None:
    service = start_service(
        "--workers",
        "2",
        LEDGERLINE_DATABASE_URL=database_url,
        LEDGERLINE_JWT_SECRET=JWT_SECRET,
        LEDGERLINE_DB_POOL_MAX_SIZE=str(POOL_MAX_SIZE),
    )
    _wait_listening(service, 2)
    auth = _login(service)
    workers = _workers(service)
    assert len(workers) == 2

    answered = _get_me_until_both_answer(service, workers, auth)
    sent = sum(answered.values())
    assert set(answered) == set(workers), answered
    _scrape_until_both_answer(service, workers, expect=sent)

    # A serving process dies without a word; its replacement takes over.
    killed = workers[0]
    psutil.Process(killed).kill()
    psutil.Process(killed).wait(10)
    _wait_listening(service, 3)
    workers = _workers(service)
    assert killed not in workers
    assert len(workers) == 2
    _wait_for(lambda: _pool_max(service) == 2 * POOL_MAX_SIZE, service)
    scrapes = _scrape_until_both_answer(service, workers, expect=sent)
    # The live gauges of the dead process are gone: no double count.
    for text in scrapes:
        assert _sample(text, "ledgerline_db_pool_max_size", pool="queries") == 2 * POOL_MAX_SIZE
        assert 2 <= _sample(text, "ledgerline_db_pool_size", pool="queries") <= 2 * POOL_MAX_SIZE

    more = _get_me_until_both_answer(service, workers, auth)
    _scrape_until_both_answer(service, workers, expect=sent + sum(more.values()))

    directory = _metrics_directory(service)
    assert directory.is_dir()
    assert service.terminate() == 0
    assert not directory.exists(), "the per-run metrics directory outlived the service"


def _get_me_until_both_answer(service: Service, workers: list[int], auth: str) -> Counter[int]:
    """GET /v1/users/me, a few times per new connection, until both
    processes have answered some and at least MIN_REQUESTS were sent: how
    many each process answered."""
    answered: Counter[int] = Counter()
    for _ in range(MAX_CONNECTIONS):
        if len(answered) == len(workers) and sum(answered.values()) >= MIN_REQUESTS:
            return answered
        connection = http.client.HTTPConnection("127.0.0.1", service.port, timeout=10)
        try:
            connection.connect()
            pid = _server_of(connection, workers)
            for _ in range(REQUESTS_PER_CONNECTION):
                connection.request("GET", "/v1/users/me", headers={"Authorization": auth})
                response = connection.getresponse()
                response.read()
                assert response.status == 200
                answered[pid] += 1
        finally:
            connection.close()
    raise AssertionError(f"one process answered every connection: {answered}")


def _scrape_until_both_answer(service: Service, workers: list[int], *, expect: float) -> list[str]:
    """Scrapes /metrics, each on a new connection, until both processes
    have answered at least two; every one must count ``expect`` requests."""
    scrapes: Counter[int] = Counter()
    texts: list[str] = []
    for _ in range(MAX_CONNECTIONS):
        if len(scrapes) == len(workers) and min(scrapes.values()) >= 2:
            return texts
        connection = http.client.HTTPConnection("127.0.0.1", service.port, timeout=10)
        try:
            connection.connect()
            pid = _server_of(connection, workers)
            connection.request("GET", "/metrics")
            response = connection.getresponse()
            text = response.read().decode()
        finally:
            connection.close()
        assert response.status == 200
        assert _sample(text, **ME) == expect, f"process {pid} reported another count"
        scrapes[pid] += 1
        texts.append(text)
    raise AssertionError(f"one process answered every scrape: {scrapes}")


def _server_of(connection: http.client.HTTPConnection, workers: list[int]) -> int:
    """The serving process holding the other end of ``connection``."""
    assert connection.sock is not None
    port = connection.sock.getsockname()[1]
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:  # accepted by then, but maybe not yet seen
        for pid in workers:
            for conn in psutil.Process(pid).net_connections(kind="tcp"):
                if conn.raddr and conn.raddr.port == port:
                    return pid
        time.sleep(0.01)
    raise AssertionError(f"no serving process holds the connection from port {port}")


def _workers(service: Service) -> list[int]:
    """The supervisor's serving processes (not its resource tracker)."""
    return [
        child.pid
        for child in psutil.Process(service.proc.pid).children()
        if "spawn_main" in " ".join(child.cmdline())
    ]


def _login(service: Service) -> str:
    body = {"email": "metrics@example.com", "password": "password123", "name": "M"}
    with httpx.Client(base_url=service.base_url, timeout=10) as client:
        assert client.post("/v1/users", json=body).status_code == 201
        login = client.post("/v1/auth/token", json={k: body[k] for k in ("email", "password")})
    assert login.status_code == 200
    return f"Bearer {login.json()['access_token']}"


def _wait_listening(service: Service, listeners: int) -> None:
    """Until ``listeners`` serving processes (replacements included) have
    said that they listen."""
    _wait_for(
        lambda: service.log.read_text().count('"http server listening"') >= listeners, service
    )


def _wait_for(condition: Callable[[], bool], service: Service, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert service.proc.poll() is None, service.log.read_text()[-3000:]
        assert time.monotonic() < deadline, service.log.read_text()[-3000:]
        time.sleep(0.1)


def _pool_max(service: Service) -> float:
    text = httpx.get(f"{service.base_url}/metrics", timeout=10).text
    return _sample(text, "ledgerline_db_pool_max_size", pool="queries")


def _metrics_directory(service: Service) -> Path:
    for line in service.log.read_text().splitlines():
        if '"serving processes share their metrics"' in line:
            return Path(json.loads(line)["directory"])
    raise AssertionError("the supervisor did not say where the metrics are")


def _sample(text: str, name: str, **labels: str) -> float:
    """The sum of the samples named ``name`` carrying ``labels``."""
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and labels.items() <= sample.labels.items()
    )


@pytest.mark.parametrize("workers", ["1", "2"], ids=["one-process", "two-workers"])
def test_an_inherited_multiprocess_directory_is_never_used_as_is(
    start_service: StartService, database_url: str, tmp_path: Path, workers: str
) -> None:
    """One process keeps its metrics in memory (no files); N processes make
    their per-run directory inside the one given, and remove it at exit.
    Either way the pool gauges are there, summed over the processes."""
    inherited = tmp_path / "operator-metrics"
    inherited.mkdir()
    service = start_service(
        "--workers",
        workers,
        LEDGERLINE_DATABASE_URL=database_url,
        LEDGERLINE_JWT_SECRET=JWT_SECRET,
        LEDGERLINE_DB_POOL_MAX_SIZE=str(POOL_MAX_SIZE),
        PROMETHEUS_MULTIPROC_DIR=str(inherited),
    )
    _wait_listening(service, int(workers))
    with httpx.Client(base_url=service.base_url, timeout=10) as client:
        for _ in range(3):
            assert client.get("/v1/users/me").status_code == 401
        text = client.get("/metrics").text
    assert _sample(text, **ME, status="401") == 3
    pool_max = _sample(text, "ledgerline_db_pool_max_size", pool="queries")
    assert pool_max == int(workers) * POOL_MAX_SIZE
    if workers == "1":
        assert list(inherited.iterdir()) == []
    else:
        assert _metrics_directory(service).parent == inherited
    assert service.terminate() == 0
    assert list(inherited.iterdir()) == []
