"""A bounded worker pool, the Go worker-pool pattern in asyncio: a fixed
number of workers take jobs from a bounded queue, so a producer that runs
ahead waits (backpressure) instead of piling work up in memory. A job that
fails is logged and counted; the pool goes on. Closing it stops intake and
drains what was accepted, within a deadline past which what still runs is
cancelled.

    async with WorkerPool("relay", size=4) as pool:
        for batch in batches:
            await pool.submit(lambda b=batch: publish(b))
    # leaving the block drains the pool
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from types import TracebackType

from ledgerline.platform.logging import get_logger

Job = Callable[[], Awaitable[object]]


class PoolClosedError(RuntimeError):
    """A job was submitted to a pool that no longer takes any."""


class _Stop:
    """Tells one worker to finish, once everything before it is done."""


class WorkerPool:
    def __init__(self, name: str, size: int, *, queue_size: int | None = None) -> None:
        """``size`` jobs run at once; ``queue_size`` more (default ``size``)
        may wait for a worker before ``submit`` itself waits."""
        if size < 1:
            raise ValueError("a pool needs at least one worker")
        self.name = name
        self.size = size
        self._queue: asyncio.Queue[Job | _Stop] = asyncio.Queue(queue_size or size)
        self._workers: list[asyncio.Task[None]] = []
        self._closed = False
        self._stops_owed = 0
        self._submitting = 0  # producers waiting for room
        self._settled = asyncio.Event()  # set while none waits
        self._settled.set()
        self.busy = 0  # jobs running now
        self.completed = 0
        self.failed = 0
        self._log = get_logger("ledgerline.workerpool").bind(pool=name)

    @property
    def queued(self) -> int:
        """Jobs accepted and waiting for a worker."""
        return self._queue.qsize()

    def start(self) -> None:
        self._stops_owed = self.size
        for i in range(self.size):
            self._workers.append(asyncio.create_task(self._work(), name=f"{self.name}-{i}"))

    async def submit(self, job: Job) -> None:
        """Hands ``job`` to the pool, waiting while the queue is full."""
        if self._closed:
            raise PoolClosedError(f"the {self.name} pool is closed")
        self._submitting += 1
        self._settled.clear()
        try:
            await self._queue.put(job)
        finally:
            self._submitting -= 1
            if not self._submitting:
                self._settled.set()

    async def drain(self, grace: float | None = None) -> bool:
        """Takes no more jobs, lets the accepted ones finish, and waits for
        the workers. Past ``grace`` seconds what still runs or waits is cancelled;
        returns False then (True when everything finished)."""
        self._closed = True
        try:
            async with asyncio.timeout(grace):
                # Producers already waiting for room get in first: what the
                # pool accepted, it runs. Then one stop per worker, behind
                # the accepted jobs (waiting for room as a producer would).
                await self._settled.wait()
                while self._stops_owed:
                    await self._queue.put(_Stop())
                    self._stops_owed -= 1
                if self._workers:
                    await asyncio.wait(self._workers)
        except TimeoutError:
            self._log.warning("drain deadline passed; cancelling", running=self.busy)
            await self.cancel()
            return False
        return True

    async def cancel(self) -> None:
        """Stops at once: running jobs are cancelled, waiting ones dropped."""
        self._closed = True
        for worker in self._workers:
            worker.cancel()
        for worker in self._workers:
            with contextlib.suppress(asyncio.CancelledError):
                await worker
        while not self._queue.empty():
            self._queue.get_nowait()

    async def _work(self) -> None:
        while True:
            job = await self._queue.get()
            if isinstance(job, _Stop):
                return
            self.busy += 1
            try:
                await job()
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - one job's failure is not the pool's
                self.failed += 1
                self._log.exception("job failed")
            else:
                self.completed += 1
            finally:
                self.busy -= 1

    async def __aenter__(self) -> WorkerPool:
        self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            await self.drain()
        else:
            await self.cancel()
