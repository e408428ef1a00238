"""Worker targets for the supervisor's tests. Spawned workers import the
module of their target afresh: this one imports next to nothing, so that
they start in milliseconds rather than seconds."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path


def worker_without_handlers(code_on_term: int | None, ready: Path) -> None:
    """A worker that never gets to install its handlers (still importing)."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM, signal.SIGINT})
    if code_on_term is not None:
        signal.signal(signal.SIGTERM, lambda *_: os._exit(code_on_term))
    (ready / str(os.getpid())).touch()
    time.sleep(60)


def sibling_of_a_failing_worker(tmp: Path, failure: int) -> None:
    """The first worker to start serves (sleeps); every later one fails with
    ``failure``, leaving a mark per death."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM, signal.SIGINT})
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    try:
        (tmp / "healthy").touch(exist_ok=False)
    except FileExistsError:
        (tmp / f"death-{os.getpid()}").touch()
        os._exit(failure)
    time.sleep(120)


def always_failing_worker(failure: int) -> None:
    os._exit(failure)


def reports_its_environment(tmp: Path, name: str) -> None:
    """Writes what it finds in ``name`` to ``env-<pid>``; the first worker
    then dies, the others serve (sleep) until SIGTERM."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM, signal.SIGINT})
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    (tmp / f"env-{os.getpid()}").write_text(os.environ.get(name, "<unset>"))
    try:
        (tmp / "died").touch(exist_ok=False)
    except FileExistsError:
        time.sleep(120)
    os._exit(1)
