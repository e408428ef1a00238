"""``ledgerline import users FILE``: the pipeline that bulk-loads users.

    file blocks ─▶ check (worker processes) ─▶ hash passwords (threads)
                ─▶ batch ─▶ load (one transaction per batch)

Stages are joined by bounded queues (platform/pipeline.py), so memory does
not grow with the file: a few blocks of about LINES_PER_BLOCK lines are in
hand at a time. Blocks are checked in a pool of worker processes, one per
core (the rules, email syntax above all, are the CPU-heavy part), and their
results handed on in the file's order: of two rows with one email, the
first is imported and the second skipped, in a batch or across batches.
Plain passwords are hashed with the service's Argon2id parameters on a
thread per core (argon2-cffi releases the GIL). Each batch is loaded and
committed alone.

SIGINT or SIGTERM stops the run: no more is read, checked or hashed, the
batches being loaded (if any) are committed, and the run reports how far it
got; a second signal gives those up too (they roll back). Either way every
committed batch stays, and a later run skips what is there."""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import signal
import threading
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from ledgerline.config import Settings
from ledgerline.delivery.cli.import_files import (
    BlockJob,
    RejectsFile,
    check_block,
    rejects_path,
)
from ledgerline.delivery.cli.import_files import ImportFile as ImportFile
from ledgerline.delivery.cli.import_files import InputError as InputError
from ledgerline.delivery.cli.import_progress import import_progress
from ledgerline.main.runtime import prepare_runtime
from ledgerline.platform.clock import SystemClock
from ledgerline.platform.database import create_pool
from ledgerline.platform.passwords import Argon2Hasher, Argon2Params
from ledgerline.platform.pipeline import Pipeline
from ledgerline.repository.postgres.user_import import PostgresUserImportSink
from ledgerline.usecase.user_import import CheckedBlock, ImportTally, LoadedBatch, UserImport

LINES_PER_BLOCK = 2_000
DEFAULT_BATCH_ROWS = 10_000
# Batches loaded at once, each on a connection (and a server process) of its
# own: a batch's statement is the run's largest single cost, and with two
# the database works on two cores. They still commit in the file's order.
LOADERS = 2
# A batch is one statement of a few seconds at most; a database that takes
# far longer is stuck, and the run stops with an error rather than hang.
STATEMENT_TIMEOUT_SECONDS = 300.0


def cores() -> int:
    return len(os.sched_getaffinity(0))


@dataclass(frozen=True, slots=True)
class ImportResult:
    tally: ImportTally
    rejects: Path
    # The signal that stopped the run; None when it read the whole file.
    interrupted_by: signal.Signals | None


class ImportFailedError(Exception):
    """The run stopped on an error; ``tally`` tells what it had committed."""

    def __init__(self, tally: ImportTally, cause: BaseException) -> None:
        super().__init__(str(cause) or type(cause).__name__)
        self.tally = tally


def import_users(
    settings: Settings, path: Path, *, batch_rows: int = DEFAULT_BATCH_ROWS
) -> ImportResult:
    """Imports the users in ``path`` into the configured database (the
    embedded one when none is). Raises InputError, before anything is
    imported, for a file that cannot be (a bad header)."""
    file = ImportFile(path)
    with worker_processes(cores()) as processes:
        runtime = prepare_runtime(settings, run_migrations=False, signs_tokens=False)
        try:
            return asyncio.run(
                run_import(settings, runtime.database_url, file, processes, batch_rows=batch_rows)
            )
        finally:
            runtime.close()


@contextlib.contextmanager
def worker_processes(count: int) -> Iterator[ProcessPoolExecutor]:
    """Processes that check blocks, started at once. Forked while this
    process runs one thread (before the database, the event loop or any
    pool), they start in no time with the modules already loaded; when
    threads run already (a test), they are spawned instead. They ignore
    SIGINT and SIGTERM: the terminal's Ctrl-C reaches the whole process
    group, and the import stops them itself."""
    method = "fork" if threading.active_count() == 1 else "spawn"
    processes = ProcessPoolExecutor(
        count, mp_context=multiprocessing.get_context(method), initializer=_ignore_signals
    )
    try:
        # The first job starts every process (a fork pool starts them all).
        processes.submit(int).result()
        yield processes
    finally:
        processes.shutdown(wait=True, cancel_futures=True)


def _ignore_signals() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


async def run_import(
    settings: Settings,
    database_url: str,
    file: ImportFile,
    processes: ProcessPoolExecutor,
    *,
    batch_rows: int = DEFAULT_BATCH_ROWS,
    loaders: int = LOADERS,
) -> ImportResult:
    """The run itself, on this event loop (which must be the main thread's:
    it takes SIGINT and SIGTERM while it runs)."""
    loop = asyncio.get_running_loop()
    threads = ThreadPoolExecutor(cores(), thread_name_prefix="argon2")
    try:
        pool = await create_pool(
            database_url, min_size=1, max_size=loaders, command_timeout=STATEMENT_TIMEOUT_SECONDS
        )
    except Exception as exc:  # the database does not answer, or refuses us
        threads.shutdown()
        raise ImportFailedError(ImportTally(), exc) from exc
    try:
        rejects = RejectsFile(rejects_path(file.path))
    except InputError:
        threads.shutdown()
        await pool.close()
        raise
    progress = import_progress(file.path.name, file.size)
    params = Argon2Params(
        settings.argon2_time_cost, settings.argon2_memory_kib, settings.argon2_parallelism
    )

    def loaded(batch: LoadedBatch) -> None:
        rejects.write(batch.rejects)
        progress.update(importer.tally)

    importer = UserImport(
        sink=PostgresUserImportSink(pool),
        hasher=Argon2Hasher(params, threads),
        clock=SystemClock(),
        on_loaded=loaded,
        loaders=loaders,
    )

    async def check(job: BlockJob) -> CheckedBlock:
        return await loop.run_in_executor(processes, check_block, job)

    lines_per_block = min(LINES_PER_BLOCK, batch_rows)
    pipeline = (
        Pipeline("import-users", capacity=2)
        .map(check, workers=2 * cores(), ordered=True)
        .map(importer.hash_passwords, workers=2, ordered=True)
        .batch(max(1, batch_rows // lines_per_block))
    )
    run = asyncio.create_task(pipeline.run(file.jobs(lines_per_block), importer.load))
    received: list[signal.Signals] = []
    abandoning: set[asyncio.Task[None]] = set()

    def stop(signum: signal.Signals) -> None:
        received.append(signum)
        if len(received) == 1:
            run.cancel()
        else:
            abandoning.add(loop.create_task(importer.abandon()))

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop, signum)
    try:
        failure: Exception | None = None
        try:
            await run
        except asyncio.CancelledError:
            if not received:
                raise
        except Exception as exc:  # noqa: BLE001 - reported below, once the loads end
            failure = exc
        # Whatever stopped the pipeline, the batches being loaded commit (or,
        # after a second signal, roll back), so the tally is exact.
        try:
            await importer.settle()
        except Exception as exc:  # noqa: BLE001 - reported below
            failure = failure or exc
        if failure is not None:
            raise ImportFailedError(importer.tally, failure) from failure
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
        progress.stop(importer.tally)
        rejects.close()
        threads.shutdown(wait=False, cancel_futures=True)
        await pool.close()
    stopped = received[0] if received and importer.tally.end < file.size else None
    return ImportResult(importer.tally, rejects.path, stopped)
