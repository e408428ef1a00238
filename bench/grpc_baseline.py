"""The ceiling for `GetMe` over gRPC: a bare grpc.aio server (uvloop) that
runs the service's single-row query for one fixed user through asyncpg and
answers the same message. No authentication, no interceptor, no logging.

    BENCH_DATABASE_URL=postgresql://... BENCH_USER_ID=<uuid> \\
        .venv/bin/python -m bench.grpc_baseline --port 50061 --workers 2

Like the service, N processes share the port (SO_REUSEPORT) and each has
a pool of at most 10 connections.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import signal
import uuid
from typing import Any

import asyncpg
import grpc
import uvloop
from google.protobuf.timestamp_pb2 import Timestamp

from ledgerline.v1 import users_pb2

QUERY = (
    "SELECT id, email, name, password_hash, is_admin, created_at, updated_at "
    "FROM users WHERE id = $1"
)


class BareUsers:
    """Only GetMe, registered by hand: no other method, nothing around it."""

    def __init__(self, pool: asyncpg.Pool, user_id: uuid.UUID) -> None:
        self._pool = pool
        self._user_id = user_id

    def handler(self) -> grpc.GenericRpcHandler:
        return grpc.method_handlers_generic_handler(
            "ledgerline.v1.UserService",
            {
                "GetMe": grpc.unary_unary_rpc_method_handler(
                    self.get_me,
                    request_deserializer=users_pb2.GetMeRequest.FromString,
                    response_serializer=users_pb2.GetMeResponse.SerializeToString,
                )
            },
        )

    async def get_me(
        self, request: users_pb2.GetMeRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> users_pb2.GetMeResponse:
        row = await self._pool.fetchrow(QUERY, self._user_id)
        assert row is not None
        created, updated = Timestamp(), Timestamp()
        created.FromDatetime(row["created_at"])
        updated.FromDatetime(row["updated_at"])
        user = users_pb2.User(
            id=str(row["id"]),
            email=row["email"],
            name=row["name"],
            create_time=created,
            update_time=updated,
        )
        return users_pb2.GetMeResponse(user=user)


async def _serve(port: int) -> None:
    pool = await asyncpg.create_pool(
        os.environ["BENCH_DATABASE_URL"], min_size=2, max_size=10, command_timeout=10.0
    )
    server = grpc.aio.server()
    server.add_generic_rpc_handlers(
        (BareUsers(pool, uuid.UUID(os.environ["BENCH_USER_ID"])).handler(),)
    )
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop(1)
    await pool.close()


def _process(port: int) -> None:
    uvloop.run(_serve(port))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_process, args=(args.port,)) for _ in range(args.workers)]
    for proc in procs:
        proc.start()

    def forward(signum: int, _: object) -> None:
        for proc in procs:
            if proc.pid is not None:
                os.kill(proc.pid, signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    for proc in procs:
        proc.join()


if __name__ == "__main__":
    main()
