"""The gRPC server of a serving process: the three ledgerline.v1 services
behind the call envelope, plus grpc.health.v1.Health and server reflection,
on grpc.aio in the process's own event loop."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from grpc_reflection.v1alpha import reflection
from opentelemetry.instrumentation.grpc import aio_server_interceptor, filters
from opentelemetry.trace import TracerProvider

from ledgerline.delivery.grpc.interceptor import CallEnvelope
from ledgerline.delivery.grpc.servicers import PaymentServicer, UserServicer, WalletServicer
from ledgerline.platform.health import Readiness
from ledgerline.platform.logging import Logger, get_logger
from ledgerline.platform.metrics import GRPCMetrics
from ledgerline.usecase.payments import PaymentService
from ledgerline.usecase.users import UserService
from ledgerline.v1 import (
    payments_pb2,
    payments_pb2_grpc,
    users_pb2,
    users_pb2_grpc,
    wallet_pb2,
    wallet_pb2_grpc,
)

SERVICE_NAMES = (
    users_pb2.DESCRIPTOR.services_by_name["UserService"].full_name,
    wallet_pb2.DESCRIPTOR.services_by_name["WalletService"].full_name,
    payments_pb2.DESCRIPTOR.services_by_name["PaymentService"].full_name,
)
MAX_MESSAGE_BYTES = 64 * 1024  # as REST's body limit: no message here needs more
MAX_SEND_BYTES = 4 * 1024 * 1024  # a page of 100 ledger entries is about 20 KiB
# More calls at once than this in one process are refused RESOURCE_EXHAUSTED
# at once rather than queued behind a pool of 10 connections.
MAX_CONCURRENT_RPCS = 1024
# A client channel is asked to reconnect after this long (plus a grace for
# its calls), so long-lived channels spread over the processes sharing the
# port, as new processes start.
MAX_CONNECTION_AGE_MS = 5 * 60 * 1000
MAX_CONNECTION_AGE_GRACE_MS = 30 * 1000
# Dead peers are found by pings on idle connections; clients may ping too,
# but not more often than every 10 s.
KEEPALIVE_TIME_MS = 60 * 1000
KEEPALIVE_TIMEOUT_MS = 20 * 1000
MIN_CLIENT_PING_INTERVAL_MS = 10 * 1000


# How often gRPC health asks the dependencies (as /readyz does per request).
HEALTH_INTERVAL_SECONDS = 1.0


@dataclass(frozen=True, slots=True)
class GRPCDependencies:
    users: UserService
    payments: PaymentService
    readiness: Readiness
    metrics: GRPCMetrics
    logger: Logger
    request_timeout: float
    # None: nothing is traced (platform/tracing.py).
    tracer_provider: TracerProvider | None = None


def _tracing(provider: TracerProvider | None) -> list[grpc.aio.ServerInterceptor]:
    """Outermost, so the call envelope's log line is inside the call's span,
    whose parent is the client's W3C ``traceparent`` metadata, if any.
    Health checks and reflection are not traced."""
    if provider is None:
        return []
    untraced = filters.any_of(filters.health_check(), filters.service_prefix("grpc.reflection"))
    interceptor: grpc.aio.ServerInterceptor = aio_server_interceptor(  # type: ignore[no-untyped-call]
        tracer_provider=provider, filter_=filters.negate(untraced)
    )
    return [interceptor]


class GRPCServer:
    def __init__(self, deps: GRPCDependencies, address: str) -> None:
        """``address``: host:port to listen on (port 0: any free port)."""
        self._server = grpc.aio.server(
            interceptors=[
                *_tracing(deps.tracer_provider),
                CallEnvelope(
                    deps.users,
                    metrics=deps.metrics,
                    logger=deps.logger,
                    request_timeout=deps.request_timeout,
                ),
            ],
            options=[
                ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                ("grpc.max_send_message_length", MAX_SEND_BYTES),
                ("grpc.max_connection_age_ms", MAX_CONNECTION_AGE_MS),
                ("grpc.max_connection_age_grace_ms", MAX_CONNECTION_AGE_GRACE_MS),
                ("grpc.keepalive_time_ms", KEEPALIVE_TIME_MS),
                ("grpc.keepalive_timeout_ms", KEEPALIVE_TIMEOUT_MS),
                ("grpc.http2.min_ping_interval_without_data_ms", MIN_CLIENT_PING_INTERVAL_MS),
                ("grpc.keepalive_permit_without_calls", 1),
                ("grpc.so_reuseport", 1),  # the processes of --workers share the port
            ],
            maximum_concurrent_rpcs=MAX_CONCURRENT_RPCS,
        )
        users_pb2_grpc.add_UserServiceServicer_to_server(UserServicer(deps.users), self._server)
        wallet_pb2_grpc.add_WalletServiceServicer_to_server(
            WalletServicer(deps.payments), self._server
        )
        payments_pb2_grpc.add_PaymentServiceServicer_to_server(
            PaymentServicer(deps.payments), self._server
        )
        self._health = health_aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self._health, self._server)
        reflection.enable_server_reflection(
            (
                *SERVICE_NAMES,
                health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                reflection.SERVICE_NAME,
            ),
            self._server,
        )
        self._address = address
        self._readiness = deps.readiness
        self._watch: asyncio.Task[None] | None = None
        self.port = 0
        self._log = get_logger("ledgerline.grpc.server")

    async def start(self) -> None:
        self.port = self._server.add_insecure_port(self._address)
        await self._server.start()
        await self._set_health(await self._ready())
        self._watch = asyncio.create_task(self._follow_readiness(), name="grpc-health")
        self._log.info("grpc server listening", address=self._address, port=self.port)

    async def _ready(self) -> bool:
        """What /readyz says: every dependency answers, and no shutdown."""
        if self._readiness.shutting_down:
            return False
        checks = await self._readiness.check()
        return not self._readiness.shutting_down and all(v == "ok" for v in checks.values())

    async def _set_health(self, ready: bool) -> None:
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if ready
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in ("", *SERVICE_NAMES):
            await self._health.set(name, status)

    async def _follow_readiness(self) -> None:
        ready = True
        while True:
            await asyncio.sleep(HEALTH_INTERVAL_SECONDS)
            now = await self._ready()
            if now != ready:
                await self._set_health(now)
                ready = now

    async def _stop_following(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
            self._watch = None

    async def shutdown(self, grace: float, drain: float = 0.0) -> None:
        """NOT_SERVING at once, for good; after ``drain`` seconds (new calls
        are still served meanwhile, as REST's drain) the listener closes and
        calls in flight get ``grace`` seconds before they are cancelled."""
        await self._stop_following()
        await self._health.enter_graceful_shutdown()
        if drain:
            await asyncio.sleep(drain)
        await self._server.stop(grace)

    async def stop(self) -> None:
        """Stops at once, cancelling what still runs (start-up failed, or the
        shutdown itself was interrupted). Harmless after shutdown."""
        await self._stop_following()
        await self._server.stop(None)


class PortInUseError(Exception):
    """Something else holds the gRPC port."""


def reserve_port(host: str, port: int) -> socket.socket:
    """Claims the gRPC port for this service's processes. gRPC binds with
    SO_REUSEPORT, which would silently share the port with a stale or
    foreign process already on it; so first a bind that does not share
    (SO_REUSEADDR only, so connections in TIME_WAIT do not count) must
    succeed, then a socket bound with SO_REUSEPORT alone (not listening:
    no connection reaches it) holds the port until the caller closes it.
    The serving processes' gRPC servers join it; another ``serve``'s probe
    fails on it."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise PortInUseError(
                f"the gRPC port {host}:{port} is in use by another process "
                "(a ledgerline serve still running?): stop it, or set LEDGERLINE_GRPC_PORT"
            ) from exc
    guard = socket.socket(family, socket.SOCK_STREAM)
    try:
        guard.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        guard.bind((host, port))
    except OSError as exc:
        guard.close()
        raise PortInUseError(f"the gRPC port {host}:{port} was taken meanwhile") from exc
    return guard
