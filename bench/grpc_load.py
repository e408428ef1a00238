"""A closed-loop load of unary `GetMe` calls for bench/grpc_getme.py: each of
``--channels`` channels (a connection each, so that the server processes
sharing the port all get some) carries ``--concurrency`` callers that call
again as soon as they are answered. Prints one JSON line: calls, errors,
seconds, p50 and p99 in ms."""

from __future__ import annotations

import argparse
import asyncio
import json
import time

import grpc
import uvloop

from ledgerline.v1 import users_pb2, users_pb2_grpc


async def _caller(
    stub: users_pb2_grpc.UserServiceStub,
    metadata: tuple[tuple[str, str], ...],
    until: float,
    latencies: list[float],
    errors: list[str],
) -> None:
    request = users_pb2.GetMeRequest()
    while (now := time.perf_counter()) < until:
        try:
            await stub.GetMe(request, metadata=metadata, timeout=10)
            latencies.append(time.perf_counter() - now)
        except grpc.aio.AioRpcError as exc:
            errors.append(exc.code().name)


async def _run(args: argparse.Namespace) -> dict[str, object]:
    metadata = (("authorization", f"Bearer {args.token}"),) if args.token else ()
    channels = [
        grpc.aio.insecure_channel(args.target, options=[("grpc.use_local_subchannel_pool", 1)])
        for _ in range(args.channels)
    ]
    latencies: list[float] = []
    errors: list[str] = []
    started = time.perf_counter()
    until = started + args.duration
    await asyncio.gather(
        *(
            _caller(users_pb2_grpc.UserServiceStub(channel), metadata, until, latencies, errors)
            for channel in channels
            for _ in range(args.concurrency)
        )
    )
    elapsed = time.perf_counter() - started
    for channel in channels:
        await channel.close()
    latencies.sort()

    def pct(q: float) -> float:
        return round(latencies[int(q * (len(latencies) - 1))] * 1000, 2) if latencies else 0.0

    return {
        "calls": len(latencies),
        "errors": len(errors),
        "error_codes": sorted(set(errors)),
        "seconds": round(elapsed, 3),
        "p50_ms": pct(0.5),
        "p99_ms": pct(0.99),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", required=True)
    parser.add_argument("--token", default="")
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--channels", type=int, default=4)
    parser.add_argument("--concurrency", type=int, default=16)
    print(json.dumps(uvloop.run(_run(parser.parse_args()))))


if __name__ == "__main__":
    main()
