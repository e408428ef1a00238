"""Runs N copies of a worker process that share a listening socket, like a
pre-fork server: SIGTERM/SIGINT are passed on to every worker, a worker that
dies unexpectedly is replaced, and the supervisor exits 0 when every worker
shut down cleanly."""

from __future__ import annotations

import multiprocessing
import signal
import threading
from collections.abc import Callable
from multiprocessing.process import BaseProcess
from types import FrameType
from typing import Any

from ledgerline.platform.logging import get_logger


class Supervisor:
    def __init__(
        self,
        target: Callable[..., None],
        args: tuple[Any, ...],
        workers: int,
        shutdown_timeout: float,
    ) -> None:
        self._target = target
        self._args = args
        self._count = workers
        self._timeout = shutdown_timeout
        self._ctx = multiprocessing.get_context("spawn")
        self._procs: list[BaseProcess] = []
        self._stopping = threading.Event()
        self._log = get_logger("ledgerline.supervisor")

    def run(self) -> int:
        previous = {
            sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT)
        }
        try:
            for _ in range(self._count):
                self._procs.append(self._spawn())
            while not self._stopping.wait(0.5):
                self._replace_dead()
            return self._stop_all()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _spawn(self) -> BaseProcess:
        proc = self._ctx.Process(target=self._target, args=self._args, daemon=False)
        proc.start()
        self._log.info("worker started", pid=proc.pid)
        return proc

    def _replace_dead(self) -> None:
        for i, proc in enumerate(self._procs):
            if not proc.is_alive() and not self._stopping.is_set():
                self._log.error(
                    "worker died; starting another", pid=proc.pid, exitcode=proc.exitcode
                )
                self._procs[i] = self._spawn()

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        self._stopping.set()

    def _stop_all(self) -> int:
        self._log.info("stopping workers", workers=len(self._procs))
        for proc in self._procs:
            if proc.is_alive() and proc.pid is not None:
                proc.terminate()  # SIGTERM: the worker's graceful shutdown
        failed = 0
        for proc in self._procs:
            proc.join(self._timeout + 10)
            if proc.is_alive():
                self._log.error("worker missed the shutdown deadline; killing it", pid=proc.pid)
                proc.kill()
                proc.join()
            if proc.exitcode != 0:
                failed += 1
        return 0 if failed == 0 else 1
