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

import psutil
import pytest

from ledgerline.platform.supervisor import Supervisor
from tests.e2e.conftest import JWT_SECRET, LEDGERLINE, Service, clean_env, free_port

pytestmark = pytest.mark.e2e
StartService = Callable[..., Service]


def test_workers_that_keep_failing_to_start_end_the_supervisor(tmp_path: Path) -> None:
    """A database that does not answer: the supervisor gives up and exits 1
    instead of restarting workers for ever behind an open port."""
    env = clean_env(
        LEDGERLINE_HTTP_PORT=str(free_port()),
        LEDGERLINE_DATA_DIR=str(tmp_path / "data"),
        LEDGERLINE_DATABASE_URL="postgresql://postgres@127.0.0.1:1/nowhere",
        LEDGERLINE_JWT_SECRET=JWT_SECRET,
    )
    started = time.monotonic()
    done = subprocess.run(
        [LEDGERLINE, "serve", "--workers", "2"], env=env, capture_output=True, timeout=180
    )
    assert done.returncode == 1, done.stderr.decode()[-2000:]
    assert b"workers keep dying; giving up" in done.stderr + done.stdout
    assert time.monotonic() - started < 180


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
    # Both were born with the stop held, so both started and then stopped.
    assert text.count('"event": "stopped"') == 2, text[-4000:]


def _worker_without_handlers(code_on_term: int | None, ready: Path) -> None:
    """A worker that never gets to install its handlers (still importing)."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM, signal.SIGINT})
    if code_on_term is not None:
        signal.signal(signal.SIGTERM, lambda *_: os._exit(code_on_term))
    (ready / str(os.getpid())).touch()
    time.sleep(60)


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
    supervisor = Supervisor(_worker_without_handlers, (code_on_term, tmp_path), 2, 5.0)
    stopper = threading.Thread(target=_stop_when_ready, args=(tmp_path, 2))
    stopper.start()
    try:
        assert supervisor.run() == expected
    finally:
        stopper.join()
