"""A process that counts into a shared metrics directory, or renders it, as
a serving process of `serve --workers N` would. prometheus_client picks its
mode at import, so each of these runs in an interpreter of its own, started
with PROMETHEUS_MULTIPROC_DIR already in its environment.

    python -m tests.unit.metrics_process observe COUNT POOL_SIZE POOL_IN_USE
    python -m tests.unit.metrics_process idle    (its metrics made, nothing counted)
    python -m tests.unit.metrics_process render
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass

from ledgerline.platform.metrics import (
    BusinessMetrics,
    DatabasePoolMetrics,
    GRPCMetrics,
    HTTPMetrics,
)


@dataclass
class FixedPool:
    size: int
    idle: int
    max_size: int

    def get_size(self) -> int:
        return self.size

    def get_idle_size(self) -> int:
        return self.idle

    def get_max_size(self) -> int:
        return self.max_size


def main(argv: list[str]) -> None:
    metrics = HTTPMetrics(os.environ["PROMETHEUS_MULTIPROC_DIR"])
    if argv[0] == "render":
        sys.stdout.write(metrics.render().decode())
        return
    BusinessMetrics(metrics.registry)  # some of its counters have no labels: files at once
    if argv[0] == "idle":
        print(os.getpid())
        return
    count, size, in_use = (int(value) for value in argv[1:4])
    for _ in range(count):
        metrics.observe("GET", "/v1/users/me", 200, 0.003)
    GRPCMetrics(metrics.registry).observe("/ledgerline.v1.UserService/GetMe", "OK", 0.002)
    pools = DatabasePoolMetrics(metrics.registry)
    pools.watch("queries", FixedPool(size, size - in_use, 10))
    pools.refresh()
    print(os.getpid())


if __name__ == "__main__":
    main(sys.argv[1:])
