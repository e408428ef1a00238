"""The bounded worker pool: at most N jobs at once, backpressure when the
queue is full, a failing job counted and the pool going on, a drain that
finishes what was accepted, and a deadline past which it cancels."""

from __future__ import annotations

import asyncio
import functools

import pytest

from ledgerline.platform.workerpool import PoolClosedError, WorkerPool


async def test_no_more_than_size_jobs_run_at_once() -> None:
    running, peak = 0, 0

    async def job() -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.01)
        running -= 1

    async with WorkerPool("t", size=3, queue_size=10) as pool:
        for _ in range(20):
            await pool.submit(job)
    assert peak == 3
    assert (pool.completed, pool.failed, pool.busy, pool.queued) == (20, 0, 0, 0)


async def test_a_full_queue_makes_the_producer_wait() -> None:
    release = asyncio.Event()

    async def blocked() -> None:
        await release.wait()

    async with WorkerPool("t", size=1, queue_size=1) as pool:
        await pool.submit(blocked)  # taken by the worker
        await asyncio.sleep(0)
        await pool.submit(blocked)  # waits in the queue
        third = asyncio.create_task(pool.submit(blocked))
        await asyncio.sleep(0.05)
        assert not third.done()  # backpressure
        assert (pool.busy, pool.queued) == (1, 1)
        release.set()
        await asyncio.wait_for(third, 1)
    assert pool.completed == 3


async def test_a_failing_job_is_counted_and_the_pool_goes_on() -> None:
    done: list[int] = []

    async def ok(i: int) -> None:
        done.append(i)

    async def boom() -> None:
        raise RuntimeError("this job fails")

    async with WorkerPool("t", size=2) as pool:
        await pool.submit(lambda: ok(1))
        await pool.submit(boom)
        await pool.submit(lambda: ok(2))
        await pool.submit(boom)
        await pool.submit(lambda: ok(3))
    assert sorted(done) == [1, 2, 3]
    assert (pool.completed, pool.failed) == (3, 2)


async def test_drain_finishes_what_was_accepted_and_takes_no_more() -> None:
    done: list[int] = []

    async def slow(i: int) -> None:
        await asyncio.sleep(0.02)
        done.append(i)

    pool = WorkerPool("t", size=2, queue_size=8)
    pool.start()
    for i in range(8):
        await pool.submit(functools.partial(slow, i))
    assert await pool.drain(grace=5) is True
    assert sorted(done) == list(range(8))
    with pytest.raises(PoolClosedError):
        await pool.submit(lambda: slow(99))


async def test_a_producer_waiting_for_room_when_the_drain_starts_still_gets_its_job_run() -> None:
    release = asyncio.Event()
    done: list[str] = []

    async def job(name: str) -> None:
        await release.wait()
        done.append(name)

    pool = WorkerPool("t", size=1, queue_size=1)
    pool.start()
    await pool.submit(functools.partial(job, "running"))
    await asyncio.sleep(0)
    await pool.submit(functools.partial(job, "queued"))
    waiting = asyncio.create_task(pool.submit(functools.partial(job, "waiting")))
    await asyncio.sleep(0.01)
    draining = asyncio.create_task(pool.drain(grace=5))
    await asyncio.sleep(0.01)
    release.set()
    assert await draining is True
    await waiting
    assert done == ["running", "queued", "waiting"]


async def test_past_the_drain_deadline_what_still_runs_is_cancelled() -> None:
    cancelled = asyncio.Event()

    async def stuck() -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    pool = WorkerPool("t", size=1, queue_size=2)
    pool.start()
    await pool.submit(stuck)
    await pool.submit(stuck)  # never starts
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await pool.drain(grace=0.1) is False
    assert loop.time() - started < 2  # the promised deadline, with a wide margin
    assert cancelled.is_set()
    assert (pool.busy, pool.queued, pool.completed) == (0, 0, 0)


async def test_an_error_in_the_block_cancels_the_pool() -> None:
    started = asyncio.Event()

    async def forever() -> None:
        started.set()
        await asyncio.sleep(3600)

    pool = WorkerPool("t", size=1)

    async def producer() -> None:
        async with pool:
            await pool.submit(forever)
            await started.wait()
            raise ValueError("producer failed")

    with pytest.raises(ValueError, match="producer failed"):
        await producer()
    assert pool.busy == 0


def test_a_pool_needs_a_worker() -> None:
    with pytest.raises(ValueError, match="at least one worker"):
        WorkerPool("t", size=0)
