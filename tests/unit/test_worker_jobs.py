"""The worker's scheduler and relay loop: runs on time without overlapping,
a failed run counted and followed by the next, and a stop that lets the
work in hand finish."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

from prometheus_client import CollectorRegistry

from ledgerline.delivery.worker.jobs import RelayLoop, ScheduledJob, Scheduler
from ledgerline.domain.events import OutboxEvent
from ledgerline.platform.metrics import WorkerMetrics
from ledgerline.platform.workerpool import WorkerPool
from ledgerline.usecase.relay import OutboxRelay, RelaySettings
from tests.fakes import InMemoryBus, InMemoryOutboxStore


def _sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


def _runs(registry: CollectorRegistry, job: str, outcome: str) -> float:
    return _sample(registry, "ledgerline_worker_job_runs_total", job=job, outcome=outcome)


async def test_jobs_run_at_once_then_every_interval_and_a_failure_is_counted() -> None:
    metrics = WorkerMetrics(registry := CollectorRegistry())
    ticks: list[str] = []

    async def tick() -> None:
        ticks.append("tick")

    async def fail() -> None:
        ticks.append("fail")
        raise RuntimeError("boom")

    jobs = [ScheduledJob("tick", 0.05, tick, 1.0), ScheduledJob("fail", 0.05, fail, 1.0)]
    stopping = asyncio.Event()
    async with WorkerPool("jobs", 2) as pool:
        running = asyncio.create_task(Scheduler(jobs, pool, metrics).run(stopping))
        await asyncio.sleep(0.22)
        stopping.set()
        await asyncio.wait_for(running, 1.0)

    assert 3 <= ticks.count("tick") <= 6
    assert 3 <= ticks.count("fail") <= 6
    assert _runs(registry, "tick", "ok") == ticks.count("tick")
    assert _runs(registry, "fail", "error") == ticks.count("fail")
    assert pool.failed == ticks.count("fail")


async def test_a_job_never_runs_twice_at_once_and_a_stop_lets_its_run_finish() -> None:
    metrics = WorkerMetrics(registry := CollectorRegistry())
    running = peak = finished = 0

    async def slow() -> None:
        nonlocal running, peak, finished
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.2)
        running -= 1
        finished += 1

    stopping = asyncio.Event()
    pool = WorkerPool("jobs", 4)
    pool.start()
    scheduler = asyncio.create_task(
        Scheduler([ScheduledJob("slow", 0.01, slow, 5.0)], pool, metrics).run(stopping)
    )
    await asyncio.sleep(0.1)
    stopping.set()
    await asyncio.wait_for(scheduler, 1.0)
    assert await pool.drain(2.0)

    assert peak == 1
    assert finished == 1
    assert _runs(registry, "slow", "ok") == 1


async def test_a_run_past_its_deadline_fails_and_the_job_goes_on() -> None:
    metrics = WorkerMetrics(registry := CollectorRegistry())

    async def stuck() -> None:
        await asyncio.sleep(10)

    stopping = asyncio.Event()
    async with WorkerPool("jobs", 1) as pool:
        scheduler = asyncio.create_task(
            Scheduler([ScheduledJob("stuck", 0.05, stuck, 0.05)], pool, metrics).run(stopping)
        )
        await asyncio.sleep(0.3)
        stopping.set()
        await asyncio.wait_for(scheduler, 1.0)

    assert _runs(registry, "stuck", "error") >= 2


def _event(aggregate: uuid.UUID, version: int) -> OutboxEvent:
    return OutboxEvent(
        id=uuid.uuid4(),
        type="order.changed",
        subject=f"orders/{aggregate}",
        aggregate_type="order",
        aggregate_id=aggregate,
        version=version,
        occurred_at=datetime.now(UTC),
        data={},
    )


async def test_the_relay_loop_publishes_what_comes_and_stops_when_told() -> None:
    store, bus = InMemoryOutboxStore(), InMemoryBus()
    metrics = WorkerMetrics(registry := CollectorRegistry())
    relay = OutboxRelay(store=store, publisher=bus, settings=RelaySettings())
    loop = RelayLoop(relay, metrics, idle_seconds=0.01)
    stopping = asyncio.Event()
    running = asyncio.create_task(loop.run(stopping))

    aggregate = uuid.uuid4()
    for version in (1, 2, 3):
        store.record(_event(aggregate, version))
        await asyncio.sleep(0.05)
    stopping.set()
    await asyncio.wait_for(running, 1.0)

    assert [e.version for e in bus.stored] == [1, 2, 3]
    assert _sample(registry, "ledgerline_outbox_events_total", outcome="published") == 3


async def test_the_relay_loop_backs_off_while_the_bus_is_down() -> None:
    store, bus = InMemoryOutboxStore(), InMemoryBus()
    bus.down = True
    store.record(_event(uuid.uuid4(), 1))
    metrics = WorkerMetrics(registry := CollectorRegistry())
    relay = OutboxRelay(store=store, publisher=bus, settings=RelaySettings())
    loop = RelayLoop(relay, metrics, idle_seconds=0.01, backoff_cap_seconds=10.0)
    stopping = asyncio.Event()
    running = asyncio.create_task(loop.run(stopping))

    await asyncio.sleep(1.0)
    stopping.set()
    await asyncio.wait_for(running, 1.0)

    # Waits of 0.25-0.5 s, then 0.5-1 s: a few tries in a second, not hundreds.
    assert 2 <= bus.calls <= 4
    assert _sample(registry, "ledgerline_event_bus_unavailable_total") == bus.calls
    assert store.rows[0].state == "pending"
