"""Runs N copies of a worker process that share a listening socket, like a
pre-fork server: SIGTERM/SIGINT are passed on to every worker, a worker that
dies unexpectedly is replaced, and the supervisor exits 0 when every worker
shut down cleanly. Workers that keep dying (a database that is down, a bad
setting) are not restarted for ever: past a budget the supervisor stops and
exits 1. A worker whose supervisor is gone stops too."""

from __future__ import annotations

import collections
import ctypes
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from multiprocessing import resource_tracker
from multiprocessing.process import BaseProcess
from types import FrameType
from typing import Any

from ledgerline.platform.logging import get_logger

# Deaths within this window beyond which workers are not restarted again.
RESTART_WINDOW_SECONDS = 60.0
SHUTDOWN_MARGIN_SECONDS = 15.0  # a worker's own clean-up after its requests
_PR_SET_PDEATHSIG = 1
_STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT}


class Supervisor:
    def __init__(
        self,
        target: Callable[..., None],
        args: tuple[Any, ...],
        workers: int,
        shutdown_timeout: float,
    ) -> None:
        """``shutdown_timeout``: how long a worker may take, from SIGTERM, to
        finish its requests (drain included); its clean-up gets a margin."""
        self._target = target
        self._args = args
        self._count = workers
        self._timeout = shutdown_timeout
        self._ctx = multiprocessing.get_context("spawn")
        self._procs: list[BaseProcess] = []
        self._stopping = threading.Event()
        self._deaths: collections.deque[float] = collections.deque()
        self._max_deaths = 3 * workers
        self._log = get_logger("ledgerline.supervisor")

    def run(self) -> int:
        previous = {
            sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT)
        }
        try:
            for _ in range(self._count):
                self._procs.append(self._spawn())
            gave_up = False
            while not self._stopping.wait(0.5):
                if not self._replace_dead():
                    gave_up = True
                    break
            code = self._stop_all()
            return 1 if gave_up else code
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _spawn(self) -> BaseProcess:
        proc = self._ctx.Process(target=self._target, args=self._args, daemon=False)
        # The child inherits this thread's signal mask: born with SIGTERM and
        # SIGINT held, it cannot be killed by a stop that lands while it is
        # still importing, before ``hold_stop_signals`` runs. Here, a signal
        # held meanwhile is handled when the mask is restored.
        # Start the resource tracker first: the first start launches it, and
        # unblocks these two signals in this thread when it has.
        resource_tracker.ensure_running()
        held = signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
        try:
            proc.start()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, held)
        self._log.info("worker started", pid=proc.pid)
        return proc

    def _replace_dead(self) -> bool:
        """Replaces dead workers; False when too many died too recently."""
        for i, proc in enumerate(self._procs):
            if proc.is_alive() or self._stopping.is_set():
                continue
            now = time.monotonic()
            self._deaths.append(now)
            while self._deaths and self._deaths[0] < now - RESTART_WINDOW_SECONDS:
                self._deaths.popleft()
            if len(self._deaths) > self._max_deaths:
                self._log.error(
                    "workers keep dying; giving up",
                    deaths=len(self._deaths),
                    window_seconds=RESTART_WINDOW_SECONDS,
                    exitcode=proc.exitcode,
                )
                return False
            self._log.error("worker died; starting another", pid=proc.pid, exitcode=proc.exitcode)
            self._procs[i] = self._spawn()
        return True

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        self._stopping.set()

    def _stop_all(self) -> int:
        self._log.info("stopping workers", workers=len(self._procs))
        for proc in self._procs:
            if proc.is_alive() and proc.pid is not None:
                proc.terminate()  # SIGTERM: the worker's graceful shutdown
        # One deadline for all: they stop in parallel.
        deadline = time.monotonic() + self._timeout + SHUTDOWN_MARGIN_SECONDS
        failed = 0
        for proc in self._procs:
            proc.join(max(0.0, deadline - time.monotonic()))
            if proc.is_alive():
                self._log.error("worker missed the shutdown deadline; killing it", pid=proc.pid)
                proc.kill()
                proc.join()
            if proc.exitcode == -signal.SIGTERM:
                # Killed by the SIGTERM itself: it had no handler yet, so it
                # had not begun to serve (the handlers come first). Nothing lost.
                self._log.info("worker stopped before it served", pid=proc.pid)
            elif proc.exitcode != 0:
                self._log.error("worker did not stop cleanly", pid=proc.pid, exitcode=proc.exitcode)
                failed += 1
        return 0 if failed == 0 else 1


def hold_stop_signals() -> None:
    """In a worker, before anything else (a worker spawned by ``Supervisor`` is
    born with them held already): SIGTERM/SIGINT wait (pending) until
    the worker's own handlers are installed (``release_stop_signals``), so a
    stop that arrives during start-up is a graceful one. And the worker gets
    SIGTERM when its supervisor dies, so it never serves unsupervised."""
    signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
    parent = multiprocessing.parent_process()
    if sys.platform == "linux":
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if parent is not None and os.getppid() != parent.pid:
        os.kill(os.getpid(), signal.SIGTERM)  # orphaned already: stop once started


def release_stop_signals() -> None:
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)
