"""How far a bulk import has got, shown as its batches commit: a progress
bar on a terminal (rows, rows per second and the time left, estimated from
the bytes of the file behind the committed batches), else a log line every
few seconds."""

from __future__ import annotations

import sys
import time
from typing import Protocol

from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskID,
    TaskProgressColumn,
    TextColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from ledgerline.platform.logging import get_logger
from ledgerline.usecase.user_import import ImportTally

LOG_INTERVAL_SECONDS = 5.0


class ImportProgress(Protocol):
    def update(self, tally: ImportTally) -> None: ...

    def stop(self, tally: ImportTally) -> None:
        """The run has ended: say what it did, and how fast."""


def import_progress(file_name: str, file_size: int) -> ImportProgress:
    """A bar when standard error is a terminal, else log lines."""
    if sys.stderr.isatty():
        return BarProgress(file_name, file_size)
    return LogProgress(file_name, file_size)


class _RowsPerSecond(ProgressColumn):
    def render(self, task: Task) -> Text:
        elapsed = task.elapsed or 0.0
        rows: int = task.fields.get("rows", 0)
        rate = rows / elapsed if elapsed > 0 else 0.0
        return Text(f"{rows:,} rows  {rate:,.0f} rows/s", style="progress.data.speed")


class BarProgress:
    def __init__(self, file_name: str, file_size: int) -> None:
        self._progress = Progress(
            TextColumn("importing {task.description}"),
            BarColumn(),
            TaskProgressColumn(),
            _RowsPerSecond(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=Console(stderr=True),
            transient=False,
        )
        self._task: TaskID = self._progress.add_task(file_name, total=file_size or 1, rows=0)
        self._progress.start()

    def update(self, tally: ImportTally) -> None:
        self._progress.update(self._task, completed=tally.end, rows=tally.rows)

    def stop(self, tally: ImportTally) -> None:
        self.update(tally)
        self._progress.stop()


class LogProgress:
    def __init__(self, file_name: str, file_size: int) -> None:
        self._log = get_logger("ledgerline.import").bind(file=file_name)
        self._size = file_size
        self._started = self._last = time.monotonic()

    def update(self, tally: ImportTally) -> None:
        now = time.monotonic()
        if now - self._last < LOG_INTERVAL_SECONDS:
            return
        self._last = now
        elapsed = now - self._started
        done = tally.end / self._size if self._size else 1.0
        self._log.info(
            "import progress",
            **_counts(tally, elapsed),
            percent=round(100 * done, 1),
            eta_seconds=round(elapsed * (1 - done) / done) if done > 0 else None,
        )

    def stop(self, tally: ImportTally) -> None:
        elapsed = time.monotonic() - self._started
        self._log.info("import ended", **_counts(tally, elapsed), seconds=round(elapsed, 3))


def _counts(tally: ImportTally, elapsed: float) -> dict[str, int]:
    """What every log line of a run says: how far it got, and how fast."""
    return {
        "rows": tally.rows,
        "imported": tally.imported,
        "skipped": tally.skipped,
        "rejected": tally.rejected,
        "line": tally.last_line,
        "rows_per_second": round(tally.rows / elapsed) if elapsed > 0 else 0,
    }
