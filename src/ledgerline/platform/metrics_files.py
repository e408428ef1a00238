"""The per-run directory where the serving processes of ``serve --workers N``
write their metrics, and the variable that tells prometheus_client to use it.

prometheus_client decides once, when it is first imported, whether a
process keeps its values in memory or writes them to files in
``PROMETHEUS_MULTIPROC_DIR``. So the variable is the supervisor's to set, in
its children's environment before they start; an inherited one is taken out
of the environment before anything imports the library (``take_inherited``),
so that a single process keeps its values in memory, and the worker's gauges
that read at scrape time keep working.

This module does not import prometheus_client at load time, for that reason."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Mapping, MutableMapping
from pathlib import Path
from types import TracebackType

MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"
_LEGACY_MULTIPROCESS_ENV = "prometheus_multiproc_dir"  # still read by prometheus_client


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
        # Here, not at the top: see the module docstring.
        from prometheus_client.multiprocess import mark_process_dead

        mark_process_dead(pid, str(self.path))  # type: ignore[no-untyped-call] # not annotated

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
