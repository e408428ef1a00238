"""The per-run directory where the serving processes of ``serve --workers N``
write their metrics, and the variable that tells prometheus_client to use it.

prometheus_client decides once, when it is first imported, whether a
process keeps its values in memory or writes them to files in
``PROMETHEUS_MULTIPROC_DIR``. So the variable is the supervisor's to set, in
its children's environment before they start. An inherited one is set aside
by the command's entry point before anything imports the library
(``set_aside_inherited``), so that a single process keeps its values in
memory and the worker's gauges that read at scrape time keep working;
``serve --workers N`` makes its per-run directory inside it.

This module does not import prometheus_client at load time, for that reason."""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import tempfile
import time
from collections.abc import Mapping, MutableMapping
from pathlib import Path
from types import TracebackType

MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"
_PREFIX = "ledgerline-metrics-"
# A directory with no holder is left alone this long after its last change:
# one another supervisor has just made is not locked yet.
STALE_AFTER_SECONDS = 60.0
_LEGACY_MULTIPROCESS_ENV = "prometheus_multiproc_dir"  # still read by prometheus_client


# The directory an inherited variable named, set aside at the command's start.
_inherited: str | None = None


def set_aside_inherited() -> None:
    """Takes the variables out of this process's environment (see
    ``take_inherited``) and keeps what they named for ``inherited``."""
    global _inherited
    _inherited = take_inherited(os.environ)


def inherited() -> str | None:
    return _inherited


def take_inherited(environ: MutableMapping[str, str]) -> str | None:
    """Removes the variables that would put prometheus_client in multiprocess
    mode; returns the directory they named (the upper-case one first), if any."""
    legacy = environ.pop(_LEGACY_MULTIPROCESS_ENV, None)
    current = environ.pop(MULTIPROCESS_ENV, None)
    return current or legacy or None


class MetricsDirectory:
    """A fresh directory, made by the supervisor before it starts any serving
    process and removed when it is done. A process's files stay after it
    ends, so its counters still count; ``process_ended`` drops what only a
    live process may report (the ``live*`` gauges).

    The supervisor holds a lock on its directory while it runs, so that one
    killed before it could remove it (SIGKILL, the OOM killer) does not
    leave it behind for good: the next run in the same place removes every
    such directory nobody holds. (Its serving processes, which get SIGTERM
    when it dies, may still be draining into it then: they write through
    their memory maps, and a run that is over loses nothing it reports.)"""

    def __init__(self, path: Path, lock: int | None = None) -> None:
        self.path = path
        self._lock = lock
        self.removed_stale: list[Path] = []

    @classmethod
    def create(
        cls, parent: str | None = None, stale_after: float = STALE_AFTER_SECONDS
    ) -> MetricsDirectory:
        """A new, empty, private directory in ``parent`` (default: the
        system's temporary directory, ``TMPDIR``), locked. Never an existing
        one: files left by another run would be counted as this run's.
        Directories of earlier runs that no live process holds, untouched
        for ``stale_after`` seconds, are removed (``removed_stale``)."""
        if parent is not None:
            Path(parent).mkdir(parents=True, exist_ok=True)
        path = Path(tempfile.mkdtemp(prefix=_PREFIX, dir=parent))
        lock = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        directory = cls(path, lock)
        directory.removed_stale = _remove_unheld(path.parent, path, stale_after)
        return directory

    @property
    def environment(self) -> Mapping[str, str]:
        """What a serving process needs in its environment when it starts."""
        return {MULTIPROCESS_ENV: str(self.path)}

    def process_ended(self, pid: int) -> None:
        """The live gauges of process ``pid`` go; the rest of its files stay,
        unless all they hold is zeros (a process that never served: while
        the database is down one is started every 30 s, and every scrape
        reads every file)."""
        # Here, not at the top: see the module docstring.
        from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

        mark_process_dead(pid, str(self.path))  # type: ignore[no-untyped-call] # not annotated
        files = [str(path) for path in self.path.glob(f"*_{pid}.db")]
        merged = MultiProcessCollector.merge(files, accumulate=False)  # type: ignore[no-untyped-call]
        if all(sample.value == 0 for metric in merged for sample in metric.samples):
            for name in files:
                os.remove(name)

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None

    def __enter__(self) -> MetricsDirectory:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.remove()


def _remove_unheld(parent: Path, own: Path, stale_after: float) -> list[Path]:
    """Removes the metrics directories in ``parent`` (but ``own``) that no
    process holds a lock on and that have not changed for ``stale_after``
    seconds; returns them. One it may not open (another user's) is left."""
    removed = []
    for path in parent.glob(f"{_PREFIX}*"):
        if path == own or not path.is_dir() or path.is_symlink():
            continue
        try:
            lock = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        except OSError:
            continue
        try:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                continue  # held: a run in progress
            with contextlib.suppress(OSError):
                if time.time() - os.fstat(lock).st_mtime >= stale_after:
                    shutil.rmtree(path)
                    removed.append(path)
        finally:
            os.close(lock)
    return removed
