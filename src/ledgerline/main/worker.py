"""`ledgerline worker`: the background work over one core, under one
structured-concurrency supervisor (a TaskGroup):

- the outbox relay (when an event bus is configured), and
- the scheduled jobs, run by a bounded worker pool: order expiry, the purge
  of expired idempotency keys and of outbox events past their retention,
  and the outbox's figures for /metrics.

Beside them, a port of its own answers /healthz, /readyz (the database,
and the event bus where configured) and /metrics.

SIGTERM or SIGINT: readiness turns 503, nothing new is claimed or
scheduled, what runs finishes (a relay round, a job's run), and the process
exits 0 within the shutdown deadline; past it, what still runs is cancelled
(a relay round still records what it published). Any number of workers, on
any number of machines, may run at once: claims and row locks share the work
out."""

from __future__ import annotations

import asyncio
import signal
import socket
import time

import uvloop

from ledgerline.config import Settings
from ledgerline.delivery.http.app import create_operations_app
from ledgerline.delivery.http.server import HTTPServer
from ledgerline.delivery.worker.jobs import RelayLoop, ScheduledJob, Scheduler
from ledgerline.domain.ports import EventPublisher
from ledgerline.main.core import Core, start_unless_stopped
from ledgerline.main.runtime import check_tracing, prepare_runtime
from ledgerline.main.serve import connection_limits, listen, watch_pools
from ledgerline.platform.eventbus import EventBusSettings, NatsEventBus
from ledgerline.platform.health import Readiness
from ledgerline.platform.logging import get_logger
from ledgerline.platform.metrics import HTTPMetrics, WorkerMetrics
from ledgerline.platform.tracing import TracedPublisher, tracing_from_environment
from ledgerline.platform.workerpool import WorkerPool
from ledgerline.usecase.relay import OutboxRelay, RelaySettings

JOB_POOL_SIZE = 4
OUTBOX_STATS_INTERVAL_SECONDS = 5.0


def worker(settings: Settings) -> int:
    """Runs the worker until SIGTERM or SIGINT; returns the exit code."""
    check_tracing()
    sock = listen(settings.http_host, settings.worker_port, "LEDGERLINE_WORKER_PORT")
    try:
        runtime = prepare_runtime(settings, run_migrations=False, signs_tokens=False)
        tracing = tracing_from_environment()
        try:
            # Payments' lock service (Redis) is not the worker's concern.
            core = Core(settings, runtime, with_payments=False, tracing=tracing)
            with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
                return runner.run(run_worker(core, sock))
        finally:
            if tracing is not None:
                tracing.shutdown()
            runtime.close()
    finally:
        sock.close()


def relay_settings(settings: Settings) -> RelaySettings:
    return RelaySettings(
        aggregates_per_claim=settings.relay_batch_size,
        concurrency=settings.relay_concurrency,
        max_attempts=settings.relay_max_attempts,
        lease_seconds=settings.relay_lease_seconds,
        publish_timeout_seconds=settings.event_publish_timeout_seconds,
    )


def event_bus(settings: Settings, relay: RelaySettings) -> NatsEventBus | None:
    if settings.event_bus_url is None:
        return None
    return NatsEventBus(
        EventBusSettings(
            url=settings.event_bus_url,
            stream=settings.event_stream,
            subject_prefix=settings.event_subject_prefix,
            source=settings.event_source,
            # The stream drops a repeated id for as long as a relay may
            # retry one, and never for less than ten minutes.
            duplicate_window_seconds=max(600.0, relay.retry_horizon_seconds),
            publish_timeout_seconds=settings.event_publish_timeout_seconds,
        )
    )


def scheduled_jobs(core: Core, metrics: WorkerMetrics) -> list[ScheduledJob]:
    s = core.settings
    # Each run works in batches, each batch its own short statement or
    # transaction; what a run leaves undone, the next one does.
    timeout = max(s.request_timeout_seconds, 60.0)

    async def outbox_stats() -> None:
        stats = await core.outbox.stats()
        metrics.outbox_backlog.set(stats.pending)
        metrics.outbox_dead.set(stats.dead)
        metrics.outbox_lag.set(stats.lag_seconds)

    return [
        ScheduledJob(
            "order-expiry", s.order_expiry_interval_seconds, core.expiry.expire_due, timeout
        ),
        ScheduledJob(
            "purge-idempotency-keys",
            s.purge_interval_seconds,
            core.retention.purge_idempotency_keys,
            timeout,
        ),
        ScheduledJob(
            "purge-outbox", s.purge_interval_seconds, core.retention.purge_outbox, timeout
        ),
        ScheduledJob("outbox-stats", OUTBOX_STATS_INTERVAL_SECONDS, outbox_stats, timeout),
    ]


async def run_worker(core: Core, sock: socket.socket) -> int:
    """The worker over ``core`` (started here, stopped on the way out), its
    health port listening on ``sock``."""
    log = get_logger("ledgerline.worker")
    settings = core.settings
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    exit_code = await start_unless_stopped(core, stop, log)
    if exit_code is not None:
        return exit_code
    relay = relay_settings(settings)
    bus = event_bus(settings, relay)
    http_metrics = HTTPMetrics()
    metrics = WorkerMetrics(http_metrics.registry)
    watch_pools(core, http_metrics)
    readiness = core.readiness
    if bus is not None:
        readiness = readiness.with_probes({"event_bus": bus.ping})
        metrics.watch_bus(lambda: bus.duplicates)
    pool = WorkerPool("jobs", JOB_POOL_SIZE)
    metrics.watch_pool(pool.name, pool.size, lambda: pool.busy, lambda: pool.queued)
    server = HTTPServer(
        create_operations_app(
            readiness, http_metrics, get_logger("ledgerline.http"), settings.request_timeout_seconds
        ),
        sock,
        readiness=readiness,
        shutdown_timeout=settings.shutdown_timeout_seconds,
        drain_seconds=0.0,
        limits=connection_limits(settings),
    )
    stopping = asyncio.Event()
    try:
        await server.start()
        pool.start()
        log.info(
            "worker started",
            port=sock.getsockname()[1],
            event_bus=bus is not None,
            order_ttl_seconds=settings.order_ttl.total_seconds(),
        )
        if bus is None:
            log.warning(
                "LEDGERLINE_EVENT_BUS_URL is not set: events stay in the outbox for its "
                "retention (see `ledgerline events tail`)"
            )
        await _supervise(core, bus, relay, metrics, pool, readiness, stop, stopping)
    finally:
        readiness.shutting_down = True
        stopping.set()
        await pool.cancel()
        await server.shutdown()
        if bus is not None:
            await bus.close()
        await core.stop()
    log.info("stopped")
    return 0


async def _supervise(
    core: Core,
    bus: NatsEventBus | None,
    relay: RelaySettings,
    metrics: WorkerMetrics,
    pool: WorkerPool,
    readiness: Readiness,
    stop: asyncio.Event,
    stopping: asyncio.Event,
) -> None:
    log = get_logger("ledgerline.worker")
    settings = core.settings
    scheduler = Scheduler(scheduled_jobs(core, metrics), pool, metrics)
    deadline = time.monotonic()
    try:
        async with asyncio.timeout(None) as bound, asyncio.TaskGroup() as group:
            if bus is not None:
                publisher: EventPublisher = bus
                if core.tracing is not None:
                    publisher = TracedPublisher(bus, core.tracing.tracer)
                loop = RelayLoop(
                    OutboxRelay(store=core.outbox, publisher=publisher, settings=relay),
                    metrics,
                    idle_seconds=settings.relay_idle_poll_seconds,
                )
                group.create_task(loop.run(stopping), name="outbox-relay")
            group.create_task(scheduler.run(stopping), name="scheduler")
            await stop.wait()
            log.info("shutting down", deadline_seconds=settings.shutdown_timeout_seconds)
            readiness.shutting_down = True
            deadline = time.monotonic() + settings.shutdown_timeout_seconds
            bound.reschedule(asyncio.get_running_loop().time() + settings.shutdown_timeout_seconds)
            stopping.set()  # no new claim, no new run; what runs finishes
        # The relay and the scheduler are done; the runs already handed to
        # the pool finish within what is left of the deadline.
        left = max(0.0, deadline - time.monotonic())
        if not await pool.drain(left):
            log.warning("shutdown deadline passed; cancelled the jobs still running")
    except TimeoutError:
        log.warning("shutdown deadline passed; cancelled the work still running")
