"""`ledgerline serve --workers N` when things go wrong around the workers:
they keep failing, their supervisor dies, or their drain is long."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest

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
    assert await asyncio.to_thread(service.proc.wait, 90) == 0
    assert "killing it" not in service.log.read_text()
