"""Prometheus metrics, in a registry owned by the application instance (no
process-global registry: tests and several apps in one process stay apart).

Two modes, chosen by the composition root:

- One process (``serve``, ``serve --workers 1``, the worker, the tests that
  build apps in-process): the values live in the process and /metrics
  renders its own registry.
- ``serve --workers N``: every serving process writes its values to files in
  one per-run directory (prometheus_client's multiprocess mode, which the
  library picks when it is first imported, from ``PROMETHEUS_MULTIPROC_DIR``;
  see ``metrics_files``), and /metrics renders the sum over all of them,
  dead processes' counters included, whichever process answers.

A new metric is defined on ``HTTPMetrics.registry`` (the process's registry)
in either mode, as ``GRPCMetrics``, ``BusinessMetrics`` and
``DatabasePoolMetrics`` are. Counters and histograms need nothing more. A
gauge names its ``multiprocess_mode`` (``livesum``: a per-process amount
summed over the live processes; ``liveall``: one series per live process,
labelled ``pid``; ``max``...), and never uses ``set_function``: in
multiprocess mode only what is written to the files is seen, so set it where
it changes or from a periodic refresh."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, values
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.multiprocess import MultiProcessCollector

from ledgerline.domain.errors import DomainError
from ledgerline.domain.ports import Lease, LockManager
from ledgerline.platform.tracing import watching_replays

T = TypeVar("T")
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class _Answered:
    """A count and a latency histogram of answers over the same labels. Label
    lookups cost more than the increments, and the label values (methods,
    routes, status codes) are few, so each one's children are kept."""

    def __init__(
        self,
        registry: CollectorRegistry,
        prefix: str,
        labels: tuple[str, ...],
        *,
        count_help: str,
        latency_help: str,
    ) -> None:
        self.requests = Counter(f"{prefix}_requests_total", count_help, labels, registry=registry)
        self.latency = Histogram(
            f"{prefix}_request_duration_seconds",
            latency_help,
            labels,
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self._children: dict[tuple[object, ...], tuple[Counter, Histogram]] = {}

    def observe(self, key: tuple[object, ...], seconds: float) -> None:
        children = self._children.get(key)
        if children is None:
            labels = tuple(str(value) for value in key)
            children = (self.requests.labels(*labels), self.latency.labels(*labels))
            self._children[key] = children
        children[0].inc()
        children[1].observe(seconds)


class NotMultiprocessError(RuntimeError):
    """Shared metrics asked for in a process whose prometheus_client keeps
    its values in memory: nothing it counted would reach the files."""


def multiprocess_values() -> bool:
    """Whether this process's prometheus_client writes its values to files
    (``PROMETHEUS_MULTIPROC_DIR`` was set when it was imported)."""
    return values.ValueClass is not values.MutexValue


class HTTPMetrics:
    """The metrics of one process that answers /metrics: the HTTP answers,
    and the registry where the process's other metrics are defined.
    ``multiprocess_dir``: render the sum over every process writing to that
    directory (``serve --workers N``) instead of this registry alone."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self, multiprocess_dir: str | None = None) -> None:
        if multiprocess_dir is not None and not multiprocess_values():
            raise NotMultiprocessError(
                "PROMETHEUS_MULTIPROC_DIR must be set before prometheus_client is imported"
            )
        self.registry = CollectorRegistry()
        self.multiprocess_dir = multiprocess_dir
        self._refreshers: list[Callable[[], None]] = []
        self._answered = _Answered(
            self.registry,
            "ledgerline_http",
            ("method", "route", "status"),
            count_help="HTTP requests answered, by method, route template and status.",
            latency_help="HTTP request latency, by method, route template and status.",
        )

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        self._answered.observe((method, route, status), seconds)

    def refresh_before_render(self, refresh: Callable[[], None]) -> None:
        """``refresh`` brings gauges up to date whenever this process renders."""
        self._refreshers.append(refresh)

    def render(self) -> bytes:
        for refresh in self._refreshers:
            refresh()
        if self.multiprocess_dir is None:
            return generate_latest(self.registry)
        # A registry of its own per scrape, as prometheus_client's
        # multiprocess mode requires: the collector reads every file anew.
        merged = CollectorRegistry()
        MultiProcessCollector(merged, path=self.multiprocess_dir)  # type: ignore[no-untyped-call]
        return generate_latest(merged)


class GRPCMetrics:
    """Per method and status code; registered beside the HTTP metrics so
    that one scrape of /metrics sees both transports of the process."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._answered = _Answered(
            registry,
            "ledgerline_grpc",
            ("method", "code"),
            count_help="gRPC calls answered, by full method name and status code.",
            latency_help="gRPC call latency, by full method name and status code.",
        )

    def observe(self, method: str, code: str, seconds: float) -> None:
        self._answered.observe((method, code), seconds)


class RateLimitMetrics:
    """What the rate limiter refused, and what it let through unchecked
    (its storage did not answer); registered beside the HTTP metrics."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._refused = Counter(
            "ledgerline_rate_limited_total",
            "Calls refused for being over a rate limit, by limit "
            "(login_per_email, login_per_address, register_per_address).",
            ["limit"],
            registry=registry,
        )
        self._unchecked = Counter(
            "ledgerline_rate_limit_unchecked_total",
            "Rate-limit checks (one per limit a call is subject to) passed unchecked "
            "because the limits' storage (Redis) failed or did not answer in time.",
            registry=registry,
        )

    def refused(self, limit: str) -> None:
        self._refused.labels(limit).inc()

    def unchecked(self) -> None:
        self._unchecked.inc()


class ConnectionPool(Protocol):
    """What the pool gauges read (asyncpg's Pool has it)."""

    def get_size(self) -> int: ...

    def get_idle_size(self) -> int: ...

    def get_max_size(self) -> int: ...


class DatabasePoolMetrics:
    """PostgreSQL connection pools, per pool name, each process's summed
    over the live processes (a process that died takes its share with it).
    Read from the pools by ``refresh``: at each scrape of the process that
    answers, and periodically in every process (see ``HTTPMetrics``)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.size = Gauge(
            "ledgerline_db_pool_size",
            "Open connections of the PostgreSQL pool, summed over the serving processes.",
            ["pool"],
            multiprocess_mode="livesum",
            registry=registry,
        )
        self.in_use = Gauge(
            "ledgerline_db_pool_in_use",
            "Connections of the PostgreSQL pool lent out now, summed over the serving processes.",
            ["pool"],
            multiprocess_mode="livesum",
            registry=registry,
        )
        self.max_size = Gauge(
            "ledgerline_db_pool_max_size",
            "The PostgreSQL pool's maximum size, summed over the serving processes.",
            ["pool"],
            multiprocess_mode="livesum",
            registry=registry,
        )
        self._pools: dict[str, tuple[ConnectionPool, Gauge, Gauge, Gauge]] = {}

    def watch(self, name: str, pool: ConnectionPool) -> None:
        self._pools[name] = (
            pool,
            self.size.labels(name),
            self.in_use.labels(name),
            self.max_size.labels(name),
        )

    def refresh(self) -> None:
        for pool, size, in_use, max_size in self._pools.values():
            open_connections = pool.get_size()
            size.set(open_connections)
            in_use.set(open_connections - pool.get_idle_size())
            max_size.set(pool.get_max_size())


class WorkerMetrics:
    """The background worker's: the outbox (lag, backlog, what the relay
    did with each event), the job pool's occupancy and the jobs' runs.
    Registered beside the worker port's own HTTP metrics. The worker is one
    process with values in memory, so its gauges may read at scrape time
    (``set_function``)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.outbox_lag = Gauge(
            "ledgerline_outbox_lag_seconds",
            "Age of the oldest event not yet published (0 when none waits).",
            registry=registry,
        )
        self.outbox_backlog = Gauge(
            "ledgerline_outbox_backlog_events",
            "Events waiting to be published.",
            registry=registry,
        )
        self.outbox_dead = Gauge(
            "ledgerline_outbox_dead_events",
            "Events that failed past the maximum number of attempts, kept for an operator.",
            registry=registry,
        )
        self.relayed = Counter(
            "ledgerline_outbox_events_total",
            "What this relay did with the events it claimed, by outcome "
            "(published, failed: to be retried, dead, released: given back unpublished).",
            ["outcome"],
            registry=registry,
        )
        self.bus_unavailable = Counter(
            "ledgerline_event_bus_unavailable_total",
            "Relay rounds that found the event bus unreachable.",
            registry=registry,
        )
        self.bus_duplicates = Gauge(
            "ledgerline_event_bus_duplicates",
            "Events this relay sent that the stream had stored already (a retry after a "
            "lost ack, or after a relay died before recording them): dropped by the stream.",
            registry=registry,
        )
        self.job_runs = Counter(
            "ledgerline_worker_job_runs_total",
            "Runs of the worker's jobs, by job and outcome (ok, error).",
            ["job", "outcome"],
            registry=registry,
        )
        self.job_duration = Histogram(
            "ledgerline_worker_job_duration_seconds",
            "How long the worker's job runs take, by job.",
            ["job"],
            buckets=(*LATENCY_BUCKETS, 30.0, 60.0, 300.0),
            registry=registry,
        )
        self.pool_busy = Gauge(
            "ledgerline_worker_pool_busy",
            "Jobs running in the worker's pool now.",
            ["pool"],
            registry=registry,
        )
        self.pool_size = Gauge(
            "ledgerline_worker_pool_size",
            "Workers in the worker's pool.",
            ["pool"],
            registry=registry,
        )
        self.pool_queued = Gauge(
            "ledgerline_worker_pool_queued",
            "Jobs accepted by the worker's pool and waiting for a worker.",
            ["pool"],
            registry=registry,
        )

    def watch_bus(self, duplicates: Callable[[], int]) -> None:
        self.bus_duplicates.set_function(duplicates)

    def watch_pool(
        self, name: str, size: int, busy: Callable[[], int], queued: Callable[[], int]
    ) -> None:
        """Occupancy read from the pool at each scrape."""
        self.pool_size.labels(name).set(size)
        self.pool_busy.labels(name).set_function(busy)
        self.pool_queued.labels(name).set_function(queued)


# What the use cases did, counted from the composition root (the use cases
# know nothing of metrics): each call's outcome is its success label, or
# "replayed" when an adapter found a stored answer for its idempotency key,
# or its error's code, shortened where the dashboards say it shorter.
_SHORT_CODES = {"payment_in_progress": "in_progress", "idempotency_mismatch": "mismatch"}


class BusinessMetrics:
    """Payments, refunds and credits by outcome, lock acquisitions that
    found the lock taken, idempotency replays, registrations and logins by
    outcome. Registered beside the process's HTTP and gRPC metrics."""

    def __init__(self, registry: CollectorRegistry) -> None:
        def outcomes(name: str, what: str) -> Counter:
            return Counter(name, f"{what}, by outcome.", ["outcome"], registry=registry)

        self.payments = outcomes("ledgerline_payments_total", "Order payments")
        self.refunds = outcomes("ledgerline_refunds_total", "Order refunds")
        self.credits = outcomes("ledgerline_credits_total", "Wallet credits")
        self.registrations = outcomes("ledgerline_registrations_total", "Registrations")
        self.logins = outcomes("ledgerline_logins_total", "Logins (token requests)")
        self.replays = Counter(
            "ledgerline_idempotency_replays_total",
            "Requests answered with the answer stored under their idempotency key.",
            registry=registry,
        )
        self.lock_failures = Counter(
            "ledgerline_lock_acquire_failures_total",
            "Payment lock acquisitions that found the lock held by another request.",
            registry=registry,
        )

    def count_outcomes(self, service: T, counted: dict[str, tuple[Counter, str]]) -> T:
        """``service`` with each method named in ``counted`` counting its
        calls' outcomes on the counter given, under the success label given."""
        for name, (counter, success) in counted.items():
            method = getattr(service, name)
            setattr(service, name, self._counting(method, counter, success))
        return service

    def _counting(
        self,
        method: Callable[..., Awaitable[Any]],
        counter: Counter,
        success: str,
    ) -> Callable[..., Awaitable[Any]]:
        labels: dict[str, Counter] = {}

        def count(outcome: str) -> None:
            child = labels.get(outcome)
            if child is None:
                child = labels[outcome] = counter.labels(outcome)
            child.inc()

        async def counting(*args: Any, **kwargs: Any) -> Any:
            with watching_replays() as was_replayed:
                try:
                    result = await method(*args, **kwargs)
                except Exception as exc:
                    code = exc.code if isinstance(exc, DomainError) else "internal"
                    count(_SHORT_CODES.get(code, code))
                    raise
                if was_replayed():
                    count("replayed")
                    self.replays.inc()
                else:
                    count(success)
                return result

        return counting

    def count_lock_failures(self, locks: LockManager) -> LockManager:
        return _CountedLocks(locks, self.lock_failures)


class _CountedLocks:
    def __init__(self, locks: LockManager, failures: Counter) -> None:
        self._locks = locks
        self._failures = failures

    async def try_acquire(self, key: str, ttl_seconds: float) -> Lease | None:
        lease = await self._locks.try_acquire(key, ttl_seconds)
        if lease is None:
            self._failures.inc()
        return lease
