"""The gRPC server of a serving process: the three ledgerline.v1 services
behind the call envelope, plus grpc.health.v1.Health and server reflection,
on grpc.aio in the process's own event loop."""

from __future__ import annotations

from dataclasses import dataclass

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from grpc_reflection.v1alpha import reflection

from ledgerline.delivery.grpc.interceptor import CallEnvelope
from ledgerline.delivery.grpc.servicers import PaymentServicer, UserServicer, WalletServicer
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


@dataclass(frozen=True, slots=True)
class GRPCDependencies:
    users: UserService
    payments: PaymentService
    metrics: GRPCMetrics
    logger: Logger
    request_timeout: float


class GRPCServer:
    def __init__(self, deps: GRPCDependencies, address: str) -> None:
        """``address``: host:port to listen on (port 0: any free port)."""
        self._server = grpc.aio.server(
            interceptors=[
                CallEnvelope(
                    deps.users,
                    metrics=deps.metrics,
                    logger=deps.logger,
                    request_timeout=deps.request_timeout,
                )
            ],
            options=[
                ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                ("grpc.max_send_message_length", 4 * 1024 * 1024),
            ],
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
        self.port = 0
        self._log = get_logger("ledgerline.grpc.server")

    async def start(self) -> None:
        self.port = self._server.add_insecure_port(self._address)
        await self._server.start()
        for name in ("", *SERVICE_NAMES):
            await self._health.set(name, health_pb2.HealthCheckResponse.SERVING)
        self._log.info("grpc server listening", address=self._address, port=self.port)

    async def shutdown(self, grace: float) -> None:
        """NOT_SERVING at once, then calls in flight get ``grace`` seconds."""
        await self._health.enter_graceful_shutdown()
        await self._server.stop(grace)
