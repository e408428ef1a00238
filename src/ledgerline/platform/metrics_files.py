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

import os
import shutil
import tempfile
from collections.abc import Mapping, MutableMapping
from pathlib import Path
from types import TracebackType

MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"
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
    live process may report (the ``live*`` gauges)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @classmethod
    def create(cls, parent: str | None = None) -> MetricsDirectory:
        """A new, empty, private directory in ``parent`` (default: the
        system's temporary directory, ``TMPDIR``). Never an existing one:
        files left by another run would be counted as this run's."""
        if parent is not None:
            Path(parent).mkdir(parents=True, exist_ok=True)
        return cls(Path(tempfile.mkdtemp(prefix="ledgerline-metrics-", dir=parent)))

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

    def __enter__(self) -> MetricsDirectory:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.remove()
