"""`ledgerline serve` with no payment lock at all, for bench/payments.py to
measure what the lock costs. Benchmark only: the service itself has no such
mode (the lock answers a concurrent caller at once and keeps two processors
from doing the same work; exactly-once still holds without it, which is
what makes this measurement safe to take).

    .venv/bin/python -m bench.unlocked_serve --workers 2 --port 8000

Same options and environment as `ledgerline serve`. Each serving process
(spawned by the supervisor) imports this module again and is patched the
same way before it builds its core."""

from __future__ import annotations

import socket
import sys

import ledgerline.main.serve as serving
from ledgerline.cli import cli
from ledgerline.config import Settings
from ledgerline.domain.ports import Lease, LockManager
from ledgerline.main.core import Core
from ledgerline.platform.health import Probe


class _NoLease:
    def __init__(self, key: str) -> None:
        self.key = key

    async def extend(self, ttl_seconds: float) -> bool:
        return True

    async def release(self) -> bool:
        return True


class NoLocks:
    """Grants every lock at once, to everyone."""

    async def try_acquire(self, key: str, ttl_seconds: float) -> Lease | None:
        return _NoLease(key)


async def _no_lock_manager(self: Core, probes: dict[str, Probe]) -> LockManager:
    return NoLocks()


_serving_process_main = serving.serving_process_main


def unlocked_process_main(
    settings: Settings,
    database_url: str,
    jwt_secret: str,
    sock: socket.socket,
    metrics_dir: str | None = None,
) -> None:
    """A serving process, its payments under no lock."""
    Core._lock_manager = _no_lock_manager  # type: ignore[method-assign]
    _serving_process_main(settings, database_url, jwt_secret, sock, metrics_dir)


def main() -> None:
    Core._lock_manager = _no_lock_manager  # type: ignore[method-assign]
    serving.serving_process_main = unlocked_process_main
    cli(["serve", *sys.argv[1:]], prog_name="unlocked_serve")


if __name__ == "__main__":
    main()
