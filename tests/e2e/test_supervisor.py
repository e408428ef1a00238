"""`ledgerline serve --workers N` when things go wrong around the workers:
they keep failing, their supervisor dies, or their drain is long."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import httpx
import psutil
import pytest

from ledgerline.platform.supervisor import EXIT_CONFIG, EXIT_UNAVAILABLE, Supervisor
from tests.conftest import require_redis, with_database
from tests.e2e.conftest import JWT_SECRET, LEDGERLINE, Service, clean_env, free_port
from tests.e2e.supervisor_targets import (
    always_failing_worker,
    reports_its_environment,
    sibling_of_a_failing_worker,
    worker_without_handlers,
)
from tests.own_postgres import OwnPostgres

pytestmark = pytest.mark.e2e
StartService = Callable[..., Service]


@pytest.mark.parametrize(
    "refused", ["database", "redis"], ids=["no-such-database", "redis-password-refused"]
)
def test_a_configuration_a_dependency_refuses_ends_the_supervisor(
    tmp_path: Path, pg_server_url: str, redis_url: str | None, refused: str
) -> None:
    """No worker can ever serve (the database does not exist, Redis refuses
    the password): the supervisor gives up and exits 1 instead of restarting
    workers for ever."""
    database = "ledgerline_no_such_database" if refused == "database" else "postgres"
    extra = {}
    if refused == "redis":
        parts = urlsplit(require_redis(redis_url))
        extra["LEDGERLINE_REDIS_URL"] = urlunsplit(
            parts._replace(netloc=f"nobody:wrong@{parts.hostname}:{parts.port}")
        )
    env = clean_env(
        LEDGERLINE_HTTP_PORT=str(free_port()),
        LEDGERLINE_DATA_DIR=str(tmp_path / "data"),
        LEDGERLINE_DATABASE_URL=with_database(pg_server_url, database),
        LEDGERLINE_JWT_SECRET=JWT_SECRET,
        **extra,
    )
    done = subprocess.run(
        [LEDGERLINE, "serve", "--workers", "2"], env=env, capture_output=True, timeout=120
    )
    output = (done.stderr + done.stdout).decode()
    assert done.returncode == 1, output[-2000:]
    assert "a dependency refused the configuration" in output
    assert "no worker can serve; giving up" in output


def test_a_database_that_does_not_answer_is_waited_for(tmp_path: Path) -> None:
    """Nothing listens at the database's address: that may be an outage, so
    the supervisor keeps trying, backing off, and still stops cleanly."""
    env = clean_env(
        LEDGERLINE_HTTP_PORT=str(free_port()),
        LEDGERLINE_DATA_DIR=str(tmp_path / "data"),
        LEDGERLINE_DATABASE_URL="postgresql://postgres@127.0.0.1:1/nowhere",
        LEDGERLINE_JWT_SECRET=JWT_SECRET,
    )
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [LEDGERLINE, "serve", "--workers", "2"], env=env, stdout=out, stderr=out
        )
    try:
        deadline = time.monotonic() + 60
        while log.read_text().count("a dependency did not answer") < 4:
            assert proc.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0, log.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "giving up" not in log.read_text()


@pytest.mark.parametrize("workers", ["1", "2"], ids=["one-process", "two-workers"])
async def test_a_stop_while_the_database_does_not_answer_ends_the_start_up(
    start_service: StartService, own_postgres: OwnPostgres, workers: str
) -> None:
    """A frozen database: connecting would wait out asyncpg's minute-long
    connect timeout. SIGTERM ends the start-up at once, cleanly."""
    database_url = await asyncio.to_thread(own_postgres.create_database)
    await asyncio.to_thread(own_postgres.freeze)
    service = start_service(
        "--workers",
        workers,
        healthy=False,
        LEDGERLINE_DATABASE_URL=database_url,
        LEDGERLINE_JWT_SECRET=JWT_SECRET,
    )
    # Imported, and waiting on the database: as many connections to it as
    # serving processes (however long the imports take on a busy machine).
    port = urlsplit(database_url).port
    deadline = time.monotonic() + 60
    while _connections_to(service.proc.pid, port) < int(workers):
        assert service.proc.poll() is None, service.log.read_text()[-3000:]
        assert time.monotonic() < deadline, service.log.read_text()[-3000:]
        await asyncio.sleep(0.1)
    await asyncio.sleep(0.5)  # and past the first moment of the connect
    started = time.monotonic()
    service.proc.send_signal(signal.SIGTERM)
    status = await asyncio.to_thread(service.proc.wait, 60)
    assert status == 0, service.log.read_text()[-3000:]
    assert time.monotonic() - started < 10
    assert "stopped before starting" in service.log.read_text()


def _connections_to(pid: int, port: int | None) -> int:
    """Processes of ``pid``'s tree with a TCP connection to ``port``."""
    try:
        root = psutil.Process(pid)
        tree = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0
    connected = 0
    for process in tree:
        try:
            sockets = process.net_connections(kind="tcp")
        except psutil.Error:
            continue
        connected += any(c.raddr and c.raddr.port == port for c in sockets)
    return connected


async def _all_listening(service: Service, workers: int) -> None:
    """Waits until `workers` workers have logged that they listen: the
    service answers as soon as the first one does. A replacement may first
    wait out its back-off (at most 30 s)."""
    deadline = time.monotonic() + 90
    while service.log.read_text().count('"http server listening"') < workers:
        assert service.proc.poll() is None, service.log.read_text()[-3000:]
        assert time.monotonic() < deadline, service.log.read_text()[-3000:]
        await asyncio.sleep(0.1)


def _workers(supervisor_pid: int) -> list[psutil.Process]:
    """The supervisor's worker processes (not its resource tracker)."""
    return [
        child
        for child in psutil.Process(supervisor_pid).children()
        if "spawn_main" in " ".join(child.cmdline())
    ]


async def test_a_database_outage_and_a_dead_worker_heal_without_a_restart(
    start_service: StartService, own_postgres: OwnPostgres
) -> None:
    """PostgreSQL stops and a worker is killed meanwhile: its replacements
    cannot start, the other worker keeps answering (503), and when
    PostgreSQL is back the service is whole again by itself: the survivor
    still serves and a replacement listens beside it."""
    database_url = await asyncio.to_thread(own_postgres.create_database)
    service = start_service(
        "--workers", "2", LEDGERLINE_DATABASE_URL=database_url, LEDGERLINE_JWT_SECRET=JWT_SECRET
    )
    async with httpx.AsyncClient(base_url=service.base_url, timeout=10) as client:
        assert (await client.get("/readyz")).status_code == 200
        await _all_listening(service, 2)
        killed, survivor = _workers(service.proc.pid)
        await asyncio.to_thread(own_postgres.stop)
        killed.kill()
        await asyncio.sleep(8)  # replacements fail, back off and fail again
        assert service.proc.poll() is None, service.log.read_text()[-3000:]
        assert survivor.is_running(), service.log.read_text()[-3000:]
        down = await client.get("/readyz")
        assert down.status_code == 503
        assert down.json()["checks"]["database"] == "unavailable"
        await asyncio.to_thread(own_postgres.start)
        await _all_listening(service, 3)  # the two first, then a replacement
        assert (await client.get("/readyz")).status_code == 200
        assert survivor.is_running(), "the healthy worker was stopped"
        assert survivor in _workers(service.proc.pid)
        assert len(_workers(service.proc.pid)) == 2
    assert service.terminate() == 0
    assert "giving up" not in service.log.read_text()


async def test_workers_stop_when_their_supervisor_is_killed(
    start_service: StartService, database_url: str
) -> None:
    service = start_service(
        "--workers", "2", LEDGERLINE_DATABASE_URL=database_url, LEDGERLINE_JWT_SECRET=JWT_SECRET
    )
    workers = psutil.Process(service.proc.pid).children()
    assert len(workers) >= 2
    service.proc.kill()  # SIGKILL: the supervisor cannot pass anything on
    service.proc.wait()
    _, alive = await asyncio.to_thread(psutil.wait_procs, workers, 30)
    for stray in alive:
        stray.kill()
    assert alive == [], "workers outlived their supervisor"


async def test_a_drain_longer_than_the_old_budget_still_ends_cleanly(
    start_service: StartService, database_url: str
) -> None:
    service = start_service(
        "--workers",
        "2",
        LEDGERLINE_DATABASE_URL=database_url,
        LEDGERLINE_JWT_SECRET=JWT_SECRET,
        LEDGERLINE_SHUTDOWN_DRAIN_SECONDS="11",
        LEDGERLINE_SHUTDOWN_TIMEOUT_SECONDS="1",
    )
    service.proc.send_signal(signal.SIGTERM)
    status = await asyncio.to_thread(service.proc.wait, 90)
    log = service.log.read_text()
    assert status == 0, log[-4000:]
    assert "killing it" not in log


async def test_a_stop_while_workers_are_still_starting_is_a_clean_one(
    start_service: StartService, database_url: str
) -> None:
    """SIGTERM as soon as the workers exist, while they are still importing:
    each one starts, then stops gracefully; none dies of the signal."""
    service = start_service(
        "--workers",
        "2",
        healthy=False,
        LEDGERLINE_DATABASE_URL=database_url,
        LEDGERLINE_JWT_SECRET=JWT_SECRET,
    )
    deadline = time.monotonic() + 60
    while service.log.read_text().count('"worker started"') < 2:
        assert service.proc.poll() is None, service.log.read_text()
        assert time.monotonic() < deadline, service.log.read_text()
        await asyncio.sleep(0.005)
    service.proc.send_signal(signal.SIGTERM)
    status = await asyncio.to_thread(service.proc.wait, 90)
    text = service.log.read_text()
    assert status == 0, text[-4000:]
    assert "worker died" not in text
    # Both were born with the stop held, so both started and then stopped
    # gracefully: served and stopped, or stopped while reaching the database.
    graceful = text.count('"event": "stopped"') + text.count('"event": "stopped before starting"')
    assert graceful == 2, text[-4000:]


def _stop_when_ready(ready: Path, workers: int) -> None:
    deadline = time.monotonic() + 60
    while len(list(ready.iterdir())) < workers and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(os.getpid(), signal.SIGTERM)  # the supervisor's handler is run()'s


@pytest.mark.parametrize(
    ("code_on_term", "expected"),
    [
        pytest.param(None, 0, id="killed-by-the-stop-before-serving-is-clean"),
        pytest.param(0, 0, id="exit-0-is-clean"),
        pytest.param(3, 1, id="exit-3-is-a-failure"),
    ],
)
def test_how_the_supervisor_reads_its_workers_ends(
    code_on_term: int | None, expected: int, tmp_path: Path
) -> None:
    supervisor = Supervisor(worker_without_handlers, (code_on_term, tmp_path), 2, 5.0)
    stopper = threading.Thread(target=_stop_when_ready, args=(tmp_path, 2))
    stopper.start()
    try:
        assert supervisor.run() == expected
    finally:
        stopper.join()


def _stop_after_deaths(supervisor: Supervisor, tmp: Path, deaths: int) -> None:
    deadline = time.monotonic() + 60
    while len(list(tmp.glob("death-*"))) < deaths and time.monotonic() < deadline:
        time.sleep(0.05)
    supervisor.stop()


@pytest.mark.parametrize(
    "failure",
    [
        pytest.param(EXIT_UNAVAILABLE, id="dependency-unavailable"),
        pytest.param(EXIT_CONFIG, id="configuration-refused"),
        pytest.param(1, id="crash"),
    ],
)
def test_a_healthy_worker_outlives_its_failing_sibling(failure: int, tmp_path: Path) -> None:
    """Far more deaths than the crash budget (3 per worker): the supervisor
    backs off and retries, and never stops the worker that serves."""
    supervisor = Supervisor(
        sibling_of_a_failing_worker, (tmp_path, failure), 2, 5.0, backoff_max=0.2
    )
    stopper = threading.Thread(target=_stop_after_deaths, args=(supervisor, tmp_path, 8))
    stopper.start()
    try:
        assert supervisor.run() == 0  # the healthy one stopped cleanly at the end
    finally:
        stopper.join()
    assert len(list(tmp_path.glob("death-*"))) >= 8


@pytest.mark.parametrize(
    ("failure", "gives_up"),
    [
        pytest.param(EXIT_CONFIG, True, id="configuration-refused-gives-up"),
        pytest.param(1, True, id="crash-loop-gives-up"),
        pytest.param(EXIT_UNAVAILABLE, False, id="outage-waits"),
    ],
)
def test_when_no_worker_can_serve(failure: int, gives_up: bool) -> None:
    supervisor = Supervisor(always_failing_worker, (failure,), 2, 5.0, backoff_max=0.2)
    timer = threading.Timer(15, supervisor.stop)
    timer.start()
    started = time.monotonic()
    try:
        code = supervisor.run()
    finally:
        timer.cancel()
    if gives_up:
        assert code == 1
        assert time.monotonic() - started < 15, "gave up only when stopped"
    else:
        assert code == 0  # still trying when stopped; nothing failed to stop
        assert time.monotonic() - started >= 15


def test_workers_get_the_environment_given_and_each_end_is_reported(tmp_path: Path) -> None:
    """What the serving processes' shared metrics rely on: the variable is
    in a worker's environment from its start (not in the supervisor's), and
    a worker that ends is reported before its replacement starts."""
    name = "LEDGERLINE_TEST_SUPERVISOR_VARIABLE"
    ended: list[tuple[int, list[str]]] = []

    def on_exit(pid: int) -> None:
        ended.append((pid, sorted(p.name for p in tmp_path.glob("env-*"))))

    supervisor = Supervisor(
        reports_its_environment,
        (tmp_path, name),
        1,
        5.0,
        backoff_max=0.2,
        environment={name: "given"},
        on_exit=on_exit,
    )
    assert _run_until_replaced(supervisor, tmp_path) == 0
    assert name not in os.environ
    reports = sorted(tmp_path.glob("env-*"), key=lambda p: p.stat().st_mtime_ns)
    assert [p.read_text() for p in reports] == ["given", "given"]
    first, second = (int(p.name.removeprefix("env-")) for p in reports)
    assert ended == [(first, [f"env-{first}"]), (second, sorted([f"env-{first}", f"env-{second}"]))]


def _run_until_replaced(supervisor: Supervisor, tmp: Path) -> int:
    """Runs ``supervisor`` (one worker, ``reports_its_environment``) until
    its first worker died and a second one started, then stops it."""
    stopper = threading.Thread(target=_stop_when_started, args=(supervisor, tmp, 2))
    stopper.start()
    try:
        return supervisor.run()
    finally:
        stopper.join()


def _stop_when_started(supervisor: Supervisor, tmp: Path, workers: int) -> None:
    deadline = time.monotonic() + 60
    while len(list(tmp.glob("env-*"))) < workers and time.monotonic() < deadline:
        time.sleep(0.05)
    supervisor.stop()


def test_a_failing_end_report_is_logged_and_supervision_goes_on(tmp_path: Path) -> None:
    """``on_exit`` raising (a damaged metrics file, say) takes neither the
    supervisor nor its workers down: the worker is still replaced, and the
    stop is still a clean one."""
    reported: list[int] = []

    def on_exit(pid: int) -> None:
        reported.append(pid)
        raise OSError("the end of a worker could not be recorded")

    supervisor = Supervisor(
        reports_its_environment,
        (tmp_path, "LEDGERLINE_TEST_SUPERVISOR_VARIABLE"),
        1,
        5.0,
        backoff_max=0.2,
        on_exit=on_exit,
    )
    assert _run_until_replaced(supervisor, tmp_path) == 0
    assert len(list(tmp_path.glob("env-*"))) == 2  # the first ended, a second replaced it
    assert len(reported) == 2
