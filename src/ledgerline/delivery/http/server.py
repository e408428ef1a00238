"""Runs the HTTP app on an already-bound socket inside the caller's event
loop (so a gRPC server can later share the loop and the shutdown), with the
graceful shutdown the service promises: readiness turns 503, the listener
closes, accepted requests finish, and only past the deadline is work
cancelled."""

from __future__ import annotations

import asyncio
import contextlib
import math
import socket
from collections.abc import Generator

import uvicorn
from starlette.types import ASGIApp

from ledgerline.delivery.http.protocol import ConnectionLimits, protocol_factory
from ledgerline.platform.health import Readiness
from ledgerline.platform.logging import get_logger


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        # Signals belong to the process's shutdown coordinator, not to uvicorn.
        yield


class HTTPServer:
    def __init__(
        self,
        app: ASGIApp,
        sock: socket.socket,
        *,
        readiness: Readiness,
        shutdown_timeout: float,
        drain_seconds: float,
        limits: ConnectionLimits,
    ) -> None:
        config = uvicorn.Config(
            app,
            http=protocol_factory(limits, lambda: readiness.shutting_down),
            timeout_keep_alive=limits.keepalive_timeout,
            # No route speaks WebSocket: an Upgrade is served as plain HTTP
            # rather than handed to a protocol without these limits.
            ws="none",
            lifespan="off",
            log_config=None,
            access_log=False,
            server_header=False,
            # The client address stays the peer's: the rate limits read
            # X-Forwarded-For themselves, from trusted proxies only
            # (platform/client_address.py). A proxy in front sets
            # X-Request-ID, which the request envelope honours.
            proxy_headers=False,
            timeout_graceful_shutdown=math.ceil(shutdown_timeout),
            backlog=2048,
        )
        self._server = _Server(config)
        self._sock = sock
        self._readiness = readiness
        self._drain = drain_seconds
        self._task: asyncio.Task[None] | None = None
        self._log = get_logger("ledgerline.http.server")

    async def start(self) -> None:
        self._task = asyncio.create_task(self._server.serve(sockets=[self._sock]))
        while not self._server.started:
            if self._task.done():
                await self._task  # startup failed: raise its error
                raise RuntimeError("the HTTP server stopped during startup")
            await asyncio.sleep(0.01)
        self._log.info("http server listening", address=_address(self._sock))

    async def wait(self) -> None:
        if self._task is not None:
            await asyncio.shield(self._task)

    async def shutdown(self) -> None:
        """Not ready at once; after the drain delay, stop accepting and wait
        for in-flight requests (uvicorn cancels them past the deadline)."""
        self._readiness.shutting_down = True
        if self._drain:
            await asyncio.sleep(self._drain)
        self._server.should_exit = True
        if self._task is not None:
            await self._task


def _address(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://{host}:{port}"


def bind_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock
