"""The worker's jobs: the outbox relay's loop, and the scheduled jobs that a
bounded worker pool runs. Each runs until ``stopping`` is set, then finishes
what it is doing and returns: no job is cut off mid-way unless the shutdown
deadline passes."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from ledgerline.platform.deadline import within
from ledgerline.platform.logging import get_logger
from ledgerline.platform.metrics import WorkerMetrics
from ledgerline.platform.workerpool import WorkerPool
from ledgerline.usecase.relay import OutboxRelay, RelayRound


async def wait_or_stop(stopping: asyncio.Event, seconds: float) -> None:
    """Sleeps ``seconds``, or less if ``stopping`` is set meanwhile."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await stopping.wait()


class RelayLoop:
    """Relays round after round: at once while there is work, every
    ``idle_seconds`` while there is none, and, while the bus (or the
    database) does not answer, after a backoff that doubles up to
    ``backoff_cap_seconds``, with jitter so that many workers do not come
    back in step."""

    def __init__(
        self,
        relay: OutboxRelay,
        metrics: WorkerMetrics,
        *,
        idle_seconds: float,
        backoff_cap_seconds: float = 30.0,
    ) -> None:
        self._relay = relay
        self._metrics = metrics
        self._idle = idle_seconds
        self._cap = backoff_cap_seconds
        self._log = get_logger("ledgerline.relay")

    async def run(self, stopping: asyncio.Event) -> None:
        failures = 0
        while not stopping.is_set():
            try:
                # A round publishes for at most 80 % of its lease; each of
                # its database calls is held to the pool's command timeout
                # (a deadline for the round would leave none to the call
                # that records what was published, at the end).
                outcome = await self._relay.relay_once()
            except Exception as exc:  # noqa: BLE001 - the loop outlives a failed round
                failures += 1
                self._log.warning("relay round failed", error=repr(exc), failures=failures)
                await wait_or_stop(stopping, self._backoff(failures))
                continue
            self._record(outcome)
            if outcome.bus_unavailable:
                failures += 1
                await wait_or_stop(stopping, self._backoff(failures))
            elif outcome.claimed == 0:
                failures = 0
                await wait_or_stop(stopping, self._idle)
            else:
                failures = 0

    def _backoff(self, failures: int) -> float:
        ceiling = min(self._cap, 0.5 * 2 ** min(failures - 1, 16))
        return float(ceiling * random.uniform(0.5, 1.0))  # noqa: S311 - jitter, not crypto

    def _record(self, outcome: RelayRound) -> None:
        m = self._metrics
        for name, count in (
            ("published", outcome.published),
            ("failed", outcome.failed),
            ("dead", outcome.dead),
            ("released", outcome.released),
        ):
            if count:
                m.relayed.labels(name).inc(count)
        if outcome.bus_unavailable:
            m.bus_unavailable.inc()
            self._log.warning("the event bus is unavailable; events wait in the outbox")
        if outcome.dead:
            self._log.error("events failed past their attempts and are dead", dead=outcome.dead)
        if outcome.published or outcome.failed:
            self._log.debug("relayed", published=outcome.published, failed=outcome.failed)


@dataclass(frozen=True, slots=True)
class ScheduledJob:
    name: str
    interval_seconds: float
    run: Callable[[], Awaitable[object]]
    # Each run is held to this deadline, as a request is.
    timeout_seconds: float


class Scheduler:
    """Hands each job to the pool every ``interval_seconds`` (the first run
    at once), never two runs of one job at a time. A full pool holds the
    scheduler back rather than queueing runs up. A failed run is logged and
    counted; the job runs again at its next time."""

    def __init__(
        self, jobs: Sequence[ScheduledJob], pool: WorkerPool, metrics: WorkerMetrics
    ) -> None:
        self._jobs = jobs
        self._pool = pool
        self._metrics = metrics
        self._running: set[str] = set()
        self._log = get_logger("ledgerline.worker.jobs")

    async def run(self, stopping: asyncio.Event) -> None:
        due = {job.name: time.monotonic() for job in self._jobs}
        while not stopping.is_set():
            now = time.monotonic()
            for job in self._jobs:
                if due[job.name] <= now and job.name not in self._running:
                    self._running.add(job.name)
                    due[job.name] = now + job.interval_seconds
                    await self._pool.submit(functools.partial(self._run, job))
            await wait_or_stop(stopping, max(0.0, min(due.values()) - time.monotonic()))

    async def _run(self, job: ScheduledJob) -> None:
        started = time.monotonic()
        outcome = "error"
        try:
            async with within(job.timeout_seconds):
                result = await job.run()
            outcome = "ok"
            self._log.debug("job ran", job=job.name, result=result)
        finally:
            self._running.discard(job.name)
            self._metrics.job_runs.labels(job.name, outcome).inc()
            self._metrics.job_duration.labels(job.name).observe(time.monotonic() - started)
