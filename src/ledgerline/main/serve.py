"""`ledgerline serve`: the API over one core, in this process or in N
processes sharing the listening socket. Each serving process builds its
core, starts its servers in one event loop, and stops them on one signal:
readiness turns 503, the listeners drain, then the core is torn down.
With N processes, their metrics are written to one per-run directory and
every /metrics reports the sum over them (``platform.metrics``)."""

from __future__ import annotations

import asyncio
import gc
import signal
import socket
import sys
from collections.abc import Callable

import uvloop
from opentelemetry.trace import TracerProvider
from starlette.types import ASGIApp

from ledgerline.config import ConfigError, Settings
from ledgerline.delivery.grpc.server import (
    GRPCDependencies,
    GRPCServer,
    PortInUseError,
    reserve_port,
)
from ledgerline.delivery.http.app import HTTPDependencies, create_http_app
from ledgerline.delivery.http.protocol import ConnectionLimits
from ledgerline.delivery.http.server import HTTPServer, bind_socket
from ledgerline.main.core import Core, start_unless_stopped
from ledgerline.main.runtime import Runtime, check_tracing, prepare_runtime
from ledgerline.platform.client_address import TrustedProxies
from ledgerline.platform.limits import raise_open_file_limit
from ledgerline.platform.logging import configure_logging, get_logger
from ledgerline.platform.metrics import (
    BusinessMetrics,
    DatabasePoolMetrics,
    GRPCMetrics,
    HTTPMetrics,
    RateLimitMetrics,
)
from ledgerline.platform.metrics_files import MetricsDirectory
from ledgerline.platform.supervisor import (
    Supervisor,
    hold_stop_signals,
    release_stop_signals,
)
from ledgerline.platform.tracing import tracing_from_environment

GC_YOUNG_THRESHOLD = 10_000  # allocations between young-generation collections
# How often a serving process writes its gauges (the pools') for the scrapes
# that another process answers; the one that answers reads its own at once.
GAUGE_REFRESH_SECONDS = 1.0


def serve(settings: Settings, processes: int, *, metrics_parent: str | None = None) -> int:
    """Resolve the runtime once, bind the HTTP port and claim the gRPC port
    once, then serve in this process or in ``processes`` processes sharing
    both. ``metrics_parent``: where the processes' per-run metrics directory
    is made (default: the system's temporary directory)."""
    raise_open_file_limit(settings.http_max_connections)  # children inherit it
    check_tracing()
    try:
        grpc_guard = reserve_port(settings.http_host, settings.grpc_port)
    except PortInUseError as exc:
        raise ConfigError(str(exc)) from exc
    try:
        runtime = prepare_runtime(settings, run_migrations=False, signs_tokens=True)
    except BaseException:
        grpc_guard.close()
        raise
    try:
        sock = listen(settings.http_host, settings.http_port, "LEDGERLINE_HTTP_PORT")
        try:
            args = (settings, runtime.database_url, runtime.jwt_secret, sock)
            if processes == 1:
                return 0 if run_serving_process(*args) == 0 else 1
            budget = settings.shutdown_drain_seconds + settings.shutdown_timeout_seconds
            with MetricsDirectory.create(metrics_parent) as metrics_dir:
                log = get_logger("ledgerline.serve")
                for stale in metrics_dir.removed_stale:
                    log.info("removed the metrics of a run that was killed", directory=str(stale))
                log.info("serving processes share their metrics", directory=str(metrics_dir.path))
                supervisor = Supervisor(
                    serving_process_main,
                    (*args, str(metrics_dir.path)),
                    processes,
                    budget,
                    environment=metrics_dir.environment,
                    on_exit=metrics_dir.process_ended,
                )
                return supervisor.run()
        finally:
            sock.close()
    finally:
        grpc_guard.close()
        runtime.close()


def listen(host: str, port: int, variable: str) -> socket.socket:
    """A listening socket on the configured address; one the address is
    taken for, or cannot be had, is a configuration error naming ``variable``."""
    try:
        return bind_socket(host, port)
    except OSError as exc:
        raise ConfigError(f"{variable}: cannot listen on {host}:{port}: {exc.strerror}") from exc


def serving_process_main(
    settings: Settings,
    database_url: str,
    jwt_secret: str,
    sock: socket.socket,
    metrics_dir: str | None = None,
) -> None:
    """Entry point of a serving process under the supervisor (spawned: it
    starts from scratch, with the metrics directory in its environment)."""
    hold_stop_signals()
    configure_logging(settings.log_level, settings.log_format)
    sys.exit(run_serving_process(settings, database_url, jwt_secret, sock, metrics_dir))


def run_serving_process(
    settings: Settings,
    database_url: str,
    jwt_secret: str,
    sock: socket.socket,
    metrics_dir: str | None = None,
) -> int:
    """``metrics_dir``: the directory every serving process writes its
    metrics to (None: this process's metrics are its own)."""
    # Built here, in the serving process, after it started.
    tracing = tracing_from_environment()
    metrics = HTTPMetrics(metrics_dir)
    core = Core(
        settings,
        Runtime(database_url, jwt_secret),
        tracing=tracing,
        metrics=BusinessMetrics(metrics.registry),
    )
    try:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(_serve(core, sock, metrics))
    finally:
        if tracing is not None:
            tracing.shutdown()  # what is still batched is exported


def http_app(core: Core, metrics: HTTPMetrics | None = None) -> ASGIApp:
    """The REST API over a started core."""
    return create_http_app(
        HTTPDependencies(
            users=core.users,
            payments=core.payments,
            readiness=core.readiness,
            metrics=metrics or HTTPMetrics(),
            logger=get_logger("ledgerline.http"),
            request_timeout=core.settings.request_timeout_seconds,
            rate_limiter=core.rate_limiter,
            trusted_proxies=TrustedProxies(core.settings.trusted_proxies),
            tracer_provider=_provider(core),
        )
    )


def _provider(core: Core) -> TracerProvider | None:
    return core.tracing.provider if core.tracing is not None else None


def grpc_server(core: Core, metrics: HTTPMetrics, address: str | None = None) -> GRPCServer:
    """The gRPC API over a started core, its metrics in the same registry as
    the REST API's (one scrape of /metrics sees both). ``address`` defaults
    to the configured host and gRPC port."""
    settings = core.settings
    if address is None:
        host, port = settings.http_host, settings.grpc_port
        address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return GRPCServer(
        GRPCDependencies(
            users=core.users,
            payments=core.payments,
            readiness=core.readiness,
            metrics=GRPCMetrics(metrics.registry),
            logger=get_logger("ledgerline.grpc"),
            request_timeout=settings.request_timeout_seconds,
            rate_limiter=core.rate_limiter,
            trusted_proxies=TrustedProxies(settings.trusted_proxies),
            tracer_provider=_provider(core),
        ),
        address,
    )


def connection_limits(settings: Settings) -> ConnectionLimits:
    return ConnectionLimits(
        max_header_bytes=settings.http_max_header_bytes,
        max_headers=settings.http_max_headers,
        header_timeout=settings.http_header_timeout_seconds,
        keepalive_timeout=settings.http_keepalive_timeout_seconds,
        max_connections=settings.http_max_connections,
    )


def watch_pools(core: Core, metrics: HTTPMetrics) -> DatabasePoolMetrics:
    """The started core's PostgreSQL pools in ``metrics``, read at each
    scrape this process answers."""
    pools = DatabasePoolMetrics(metrics.registry)
    for name, pool in core.database_pools.items():
        pools.watch(name, pool)
    metrics.refresh_before_render(pools.refresh)
    return pools


async def _refresh_periodically(refresh: Callable[[], None]) -> None:
    while True:
        refresh()
        await asyncio.sleep(GAUGE_REFRESH_SECONDS)


async def _serve(core: Core, sock: socket.socket, metrics: HTTPMetrics) -> int:
    log = get_logger("ledgerline.serve")
    settings = core.settings
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    release_stop_signals()  # a stop held back during start-up lands now
    exit_code = await start_unless_stopped(core, stop, log)
    if exit_code is not None:
        return exit_code
    core.rate_limiter.observe(RateLimitMetrics(metrics.registry))
    pools = watch_pools(core, metrics)
    # Alone, this process reads its pools when it renders; beside others, it
    # must also write them for the scrapes they answer.
    refreshing = (
        asyncio.create_task(_refresh_periodically(pools.refresh))
        if metrics.multiprocess_dir is not None
        else None
    )
    rpc = grpc_server(core, metrics)
    try:
        server = HTTPServer(
            http_app(core, metrics),
            sock,
            readiness=core.readiness,
            shutdown_timeout=settings.shutdown_timeout_seconds,
            drain_seconds=settings.shutdown_drain_seconds,
            limits=connection_limits(settings),
        )
        _tune_collector()
        await rpc.start()
        await server.start()
        stopped = asyncio.create_task(stop.wait())
        serving = asyncio.create_task(server.wait())
        await asyncio.wait({stopped, serving}, return_when=asyncio.FIRST_COMPLETED)
        stopped.cancel()
        log.info("shutting down", deadline_seconds=settings.shutdown_timeout_seconds)
        # One coordinator for both: readiness and gRPC health turn at once,
        # both listeners drain, and both get the one shutdown deadline.
        await asyncio.gather(
            server.shutdown(),
            rpc.shutdown(
                drain=settings.shutdown_drain_seconds, grace=settings.shutdown_timeout_seconds
            ),
        )
    finally:
        if refreshing is not None:
            refreshing.cancel()
        await rpc.stop()
        await core.stop()
    log.info("stopped")
    return 0


def _tune_collector() -> None:
    # Everything built so far lives as long as the process: keep it out of
    # the garbage collector's scans (fewer, shorter pauses under load).
    gc.freeze()
    # Each request allocates a few hundred objects, nearly all freed by
    # reference counting; at the default threshold (700) a collection ran
    # every few requests and cost about 6 % of a request's CPU.
    gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])
