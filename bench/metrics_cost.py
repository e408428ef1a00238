"""What one HTTP answer costs the metrics: ``HTTPMetrics.observe`` (a
counter and a latency histogram, label children cached) with per-process
values and with the values ``serve --workers N`` shares through files
(prometheus_client's multiprocess mode, chosen when it is imported).

Each mode runs in a fresh interpreter, alternately, a few rounds; the figures
are the best round of each and their ratio, from the same run.

    .venv/bin/python -m bench.metrics_cost
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import timeit

ROUNDS = 5
OBSERVATIONS = 200_000
# A few routes and statuses, as a serving process sees them.
KEYS = [
    ("GET", "/v1/users/me", 200),
    ("GET", "/v1/wallet", 200),
    ("POST", "/v1/orders/{id}/pay", 200),
    ("GET", "/v1/users/{id}", 404),
]


def measure() -> float:
    """Microseconds per observation, in this interpreter's mode."""
    from ledgerline.platform.metrics import HTTPMetrics

    metrics = HTTPMetrics(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
    keys = KEYS * (OBSERVATIONS // len(KEYS))

    def run() -> None:
        observe = metrics.observe
        for method, route, status in keys:
            observe(method, route, status, 0.0012)

    run()  # label children made, files grown
    seconds = min(timeit.repeat(run, number=1, repeat=3))
    return seconds / len(keys) * 1e6


def _child(multiprocess_dir: str | None) -> float:
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    if multiprocess_dir is not None:
        env["PROMETHEUS_MULTIPROC_DIR"] = multiprocess_dir  # before the import
    done = subprocess.run(
        [sys.executable, "-m", "bench.metrics_cost", "--child"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return float(done.stdout)


def main() -> None:
    if sys.argv[1:] == ["--child"]:
        print(measure())
        return
    plain: list[float] = []
    shared: list[float] = []
    for _ in range(ROUNDS):
        plain.append(_child(None))
        with tempfile.TemporaryDirectory(prefix="ledgerline-bench-metrics-") as directory:
            shared.append(_child(directory))
    best_plain, best_shared = min(plain), min(shared)
    print(f"observe(), per-process values: {best_plain:.2f} us")
    print(f"observe(), multiprocess files: {best_shared:.2f} us")
    print(f"ratio: {best_shared / best_plain:.2f}x (best of {ROUNDS} rounds each)")


if __name__ == "__main__":
    main()
