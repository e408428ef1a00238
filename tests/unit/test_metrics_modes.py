"""Which metrics a process keeps: its own in memory (one process, the tests'
in-process apps), or the sum of every serving process's, through files in a
per-run directory (`serve --workers N`)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from ledgerline.platform.metrics import HTTPMetrics, NotMultiprocessError, multiprocess_values
from ledgerline.platform.metrics_files import MULTIPROCESS_ENV, MetricsDirectory, take_inherited

ROOT = Path(__file__).resolve().parents[2]
REQUESTS = ("ledgerline_http_requests_total", {"method": "GET", "route": "/v1/users/me"})
CALLS = ("ledgerline_grpc_requests_total", {"method": "/ledgerline.v1.UserService/GetMe"})
IN_USE = ("ledgerline_db_pool_in_use", {"pool": "queries"})
OPEN = ("ledgerline_db_pool_size", {"pool": "queries"})
MAX = ("ledgerline_db_pool_max_size", {"pool": "queries"})


@pytest.mark.parametrize(
    ("environ", "taken"),
    [
        pytest.param({}, None, id="none-set"),
        pytest.param({MULTIPROCESS_ENV: "/srv/m"}, "/srv/m", id="set"),
        pytest.param({"prometheus_multiproc_dir": "/srv/old"}, "/srv/old", id="legacy-name"),
        pytest.param(
            {MULTIPROCESS_ENV: "/srv/m", "prometheus_multiproc_dir": "/srv/old"},
            "/srv/m",
            id="both-the-current-name-wins",
        ),
        pytest.param({MULTIPROCESS_ENV: ""}, None, id="empty"),
    ],
)
def test_an_inherited_directory_is_taken_out_of_the_environment(
    environ: dict[str, str], taken: str | None
) -> None:
    environ = {**environ, "PATH": "/usr/bin"}
    assert take_inherited(environ) == taken
    assert environ == {"PATH": "/usr/bin"}


def test_a_process_of_its_own_renders_its_own_registry() -> None:
    first, second = HTTPMetrics(), HTTPMetrics()
    first.observe("GET", "/v1/users/me", 200, 0.01)
    first.observe("GET", "/v1/users/me", 200, 0.01)
    second.observe("GET", "/v1/users/me", 200, 0.01)
    assert _value(first.render().decode(), *REQUESTS) == 2
    assert _value(second.render().decode(), *REQUESTS) == 1


@pytest.mark.skipif(multiprocess_values(), reason="this interpreter writes metrics to files")
def test_shared_metrics_in_a_process_that_keeps_them_in_memory_are_refused(
    tmp_path: Path,
) -> None:
    """Started without the variable, a serving process would count in
    memory and every scrape would miss its share: it stops at once instead."""
    with pytest.raises(NotMultiprocessError, match=MULTIPROCESS_ENV):
        HTTPMetrics(str(tmp_path))


def test_processes_writing_to_one_directory_add_up_and_the_dead_keep_their_counts() -> None:
    with MetricsDirectory.create() as directory:
        first = _run(directory, "observe", "3", "4", "1")
        _run(directory, "observe", "5", "2", "2")
        text = _run(directory, "render")
        assert _value(text, *REQUESTS) == 8
        assert _value(text, *CALLS) == 2
        assert _value(text, "ledgerline_http_request_duration_seconds_count", REQUESTS[1]) == 8
        assert (_value(text, *OPEN), _value(text, *IN_USE), _value(text, *MAX)) == (6, 3, 20)

        directory.process_ended(int(first))
        text = _run(directory, "render")
        assert _value(text, *REQUESTS) == 8, "a dead process's counts are still counted"
        assert (_value(text, *OPEN), _value(text, *IN_USE), _value(text, *MAX)) == (2, 2, 10)
    assert not directory.path.exists()


def test_a_process_that_counted_nothing_leaves_no_files() -> None:
    """A serving process that could not start (the database down) made its
    metrics but never served: once it ended, none of its files are read."""
    with MetricsDirectory.create() as directory:
        idle = int(_run(directory, "idle"))
        counted = int(_run(directory, "observe", "1", "2", "1"))
        assert list(directory.path.glob(f"*_{idle}.db"))

        directory.process_ended(idle)
        directory.process_ended(counted)

        assert list(directory.path.glob(f"*_{idle}.db")) == []
        assert list(directory.path.glob(f"*_{counted}.db"))
        text = _run(directory, "render")
        assert _value(text, *REQUESTS) == 1
        assert _value(text, "ledgerline_idempotency_replays_total", {}) == 0


def test_each_run_gets_a_fresh_directory_inside_the_one_given(tmp_path: Path) -> None:
    parent = tmp_path / "metrics"
    with MetricsDirectory.create(str(parent)) as one, MetricsDirectory.create(str(parent)) as two:
        assert one.path.parent == two.path.parent == parent
        assert one.path != two.path
        assert list(one.path.iterdir()) == []
        assert one.environment == {MULTIPROCESS_ENV: str(one.path)}
    assert list(parent.iterdir()) == []


def _aged(path: Path, seconds: float) -> Path:
    then = time.time() - seconds
    os.utime(path, (then, then))
    return path


def test_directories_nobody_holds_are_removed_by_the_next_run(tmp_path: Path) -> None:
    """A run killed before it could remove its directory (SIGKILL, the OOM
    killer) leaves it; the next run in the same place removes it, and only
    what matches: a live run's directory, one made a moment ago (not locked
    yet), and anything else there stay."""
    left = tmp_path / "ledgerline-metrics-left"
    left.mkdir()
    (left / "counter_123.db").write_bytes(b"\0" * 16)
    _aged(left, 120)
    just_made = tmp_path / "ledgerline-metrics-just-made"
    just_made.mkdir()
    other = tmp_path / "not-ours"
    other.mkdir()
    _aged(other, 120)
    with MetricsDirectory.create(str(tmp_path)) as live:
        assert live.removed_stale == [left]
        assert not left.exists()
        assert just_made.exists()
        assert other.exists()
        _aged(live.path, 120)
        with MetricsDirectory.create(str(tmp_path), stale_after=60) as second:
            assert second.removed_stale == []
            assert live.path.exists(), "a live run's directory is never taken"
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "ledgerline-metrics-just-made",
        "not-ours",
    ]


def test_a_killed_supervisors_directory_goes_with_the_next_run(tmp_path: Path) -> None:
    """The real case: a process made its directory, holds it, and is killed
    with SIGKILL (nothing of its own runs after that)."""
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\n"
            "from ledgerline.platform.metrics_files import MetricsDirectory\n"
            f"d = MetricsDirectory.create({str(tmp_path)!r})\n"
            "print(d.path, flush=True)\n"
            "time.sleep(120)\n",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        made = Path(holder.stdout.readline().strip())
        with MetricsDirectory.create(str(tmp_path), stale_after=0) as while_alive:
            assert while_alive.removed_stale == []
            assert made.exists(), "held while its process lives"
    finally:
        holder.kill()
        holder.wait(30)
    with MetricsDirectory.create(str(tmp_path), stale_after=0) as after:
        assert after.removed_stale == [made]
    assert list(tmp_path.iterdir()) == []


def _run(directory: MetricsDirectory, *args: str) -> str:
    env = {k: v for k, v in os.environ.items() if k.lower() != MULTIPROCESS_ENV.lower()}
    done = subprocess.run(
        [sys.executable, "-m", "tests.unit.metrics_process", *args],
        env={**env, **directory.environment},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def _value(text: str, name: str, labels: dict[str, str]) -> float:
    """The sum of the samples named ``name`` that carry ``labels``."""
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and labels.items() <= sample.labels.items()
    )
