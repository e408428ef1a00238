"""Runs N copies of a worker process that share a listening socket, like a
pre-fork server: SIGTERM/SIGINT are passed on to every worker, and the
supervisor exits 0 when every worker shut down cleanly. A worker that dies
is replaced after a back-off that doubles with each death in its slot (up to
a cap), so a dependency that is down is retried until it returns, while the
workers still alive go on serving. A healthy worker is never stopped for a
sibling's failure. The supervisor gives up (stops and exits 1) only when no
worker is alive and none can ever serve: a worker said so (a configuration
the dependencies refuse), or workers keep crashing for other reasons. A
worker whose supervisor is gone stops too. The caller may give the workers
variables of their own environment, and hear of every worker that ends."""

from __future__ import annotations

import collections
import contextlib
import ctypes
import multiprocessing
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from multiprocessing import resource_tracker
from multiprocessing.process import BaseProcess
from types import FrameType
from typing import Any

from ledgerline.platform.logging import get_logger

# Exit codes of a worker that tell the supervisor why it ended (sysexits.h).
EXIT_UNAVAILABLE = 75  # EX_TEMPFAIL: a dependency did not answer; retry later
EXIT_CONFIG = 78  # EX_CONFIG: a dependency refused this configuration; never serves

# Crashes (other exits) within this window beyond which, with no worker
# alive, the supervisor stops trying.
RESTART_WINDOW_SECONDS = 60.0
BACKOFF_INITIAL_SECONDS = 0.5
BACKOFF_MAX_SECONDS = 30.0
# A worker alive this long has recovered: its slot's back-off starts over.
BACKOFF_RESET_SECONDS = 30.0
SHUTDOWN_MARGIN_SECONDS = 15.0  # a worker's own clean-up after its requests
_PR_SET_PDEATHSIG = 1
_STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT}


@dataclass
class _Slot:
    proc: BaseProcess | None = None
    started_at: float = 0.0
    backoff: float = 0.0  # 0: the next death restarts after the initial back-off
    restart_at: float = 0.0  # while proc is None


class Supervisor:
    def __init__(
        self,
        target: Callable[..., None],
        args: tuple[Any, ...],
        workers: int,
        shutdown_timeout: float,
        *,
        backoff_max: float = BACKOFF_MAX_SECONDS,
        environment: Mapping[str, str] | None = None,
        on_exit: Callable[[int], None] | None = None,
    ) -> None:
        """``shutdown_timeout``: how long a worker may take, from SIGTERM, to
        finish its requests (drain included); its clean-up gets a margin.
        ``environment``: variables set in each worker's environment from its
        first instruction (this process's own is left as it was).
        ``on_exit``: called with the pid of each worker that ended, once it
        has, before any replacement starts."""
        self._target = target
        self._args = args
        self._timeout = shutdown_timeout
        self._backoff_max = backoff_max
        self._environment = dict(environment or {})
        self._on_exit = on_exit
        self._ctx = multiprocessing.get_context("spawn")
        self._slots = [_Slot() for _ in range(workers)]
        # A plain flag, set from a signal handler: an Event's lock could be
        # held by the very wait the handler interrupts.
        self._stopping = False
        self._crashes: collections.deque[float] = collections.deque()
        self._max_crashes = 3 * workers
        self._log = get_logger("ledgerline.supervisor")

    def run(self) -> int:
        previous = {
            sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT)
        }
        try:
            for slot in self._slots:
                self._start(slot)
            gave_up = False
            while not self._stopping:
                time.sleep(0.2)
                if not self._stopping and not self._tend():
                    gave_up = True
                    break
            code = self._stop_all()
            return 1 if gave_up else code
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _start(self, slot: _Slot) -> None:
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
            with _environment(self._environment):
                proc.start()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, held)
        slot.proc, slot.started_at = proc, time.monotonic()
        self._log.info("worker started", pid=proc.pid)

    def _tend(self) -> bool:
        """Notes deaths and restarts workers whose back-off is over. False
        when it is time to give up."""
        now = time.monotonic()
        for slot in self._slots:
            if self._stopping:
                break
            proc = slot.proc
            if proc is not None and not proc.is_alive() and not self._note_death(slot, proc, now):
                return False
            if slot.proc is None and now >= slot.restart_at:
                self._start(slot)
        return True

    def _note_death(self, slot: _Slot, proc: BaseProcess, now: float) -> bool:
        code = proc.exitcode
        slot.proc = None
        self._ended(proc)
        if now - slot.started_at >= BACKOFF_RESET_SECONDS:
            slot.backoff = 0.0  # it had recovered: this is a new failure
        slot.backoff = min(self._backoff_max, slot.backoff * 2 or BACKOFF_INITIAL_SECONDS)
        slot.restart_at = now + slot.backoff
        if code != EXIT_UNAVAILABLE:
            self._crashes.append(now)
        while self._crashes and self._crashes[0] < now - RESTART_WINDOW_SECONDS:
            self._crashes.popleft()
        alive = sum(1 for s in self._slots if s.proc is not None and s.proc.is_alive())
        hopeless = code == EXIT_CONFIG or len(self._crashes) > self._max_crashes
        if hopeless and alive == 0:
            self._log.error(
                "no worker can serve; giving up",
                exitcode=code,
                crashes=len(self._crashes),
                window_seconds=RESTART_WINDOW_SECONDS,
            )
            return False
        self._log.error(
            "worker died; starting another after a back-off",
            pid=proc.pid,
            exitcode=code,
            reason=_reason(code),
            backoff_seconds=slot.backoff,
            workers_alive=alive,
        )
        return True

    def _ended(self, proc: BaseProcess) -> None:
        """Tells ``on_exit``; what it raises is logged, never let through:
        the workers still alive must be supervised, and stopped, as ever."""
        if self._on_exit is not None and proc.pid is not None:
            try:
                self._on_exit(proc.pid)
            except Exception as exc:  # noqa: BLE001 - see the docstring
                self._log.error(
                    "a worker's end could not be recorded", pid=proc.pid, error=repr(exc)
                )

    def stop(self) -> None:
        """What SIGTERM does, for a caller in another thread."""
        self._stopping = True

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        self._stopping = True

    def _stop_all(self) -> int:
        # Judged: the workers alive when the stop came. One that died just
        # before is a death like any other, not a failure to stop.
        procs = [s.proc for s in self._slots if s.proc is not None and s.proc.is_alive()]
        self._log.info("stopping workers", workers=len(procs))
        for proc in procs:
            proc.terminate()  # SIGTERM: the worker's graceful shutdown
        # One deadline for all: they stop in parallel.
        deadline = time.monotonic() + self._timeout + SHUTDOWN_MARGIN_SECONDS
        failed = 0
        for proc in procs:
            proc.join(max(0.0, deadline - time.monotonic()))
            if proc.is_alive():
                self._log.error("worker missed the shutdown deadline; killing it", pid=proc.pid)
                proc.kill()
                proc.join()
            self._ended(proc)
            if proc.exitcode == -signal.SIGTERM:
                # Killed by the SIGTERM itself: it had no handler yet, so it
                # had not begun to serve (the handlers come first). Nothing lost.
                self._log.info("worker stopped before it served", pid=proc.pid)
            elif proc.exitcode == EXIT_UNAVAILABLE:
                # Stopped while it waited for a dependency: it never served.
                self._log.info("worker stopped before it could serve", pid=proc.pid)
            elif proc.exitcode != 0:
                self._log.error("worker did not stop cleanly", pid=proc.pid, exitcode=proc.exitcode)
                failed += 1
        return 0 if failed == 0 else 1


@contextlib.contextmanager
def _environment(variables: Mapping[str, str]) -> Iterator[None]:
    """``variables`` in this process's environment meanwhile: a spawned
    worker inherits the environment as it is when it starts."""
    saved = {name: os.environ.get(name) for name in variables}
    os.environ.update(variables)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _reason(code: int | None) -> str:
    if code == EXIT_UNAVAILABLE:
        return "a dependency did not answer"
    if code == EXIT_CONFIG:
        return "a dependency refused the configuration"
    return "crashed"


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
