"""The pipeline of bounded stages: order kept with one worker, filtering and
batching, backpressure from a slow sink, and an error or a cancellation
anywhere stopping every stage."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from ledgerline.platform.pipeline import Pipeline


async def numbers(n: int, read: list[int] | None = None) -> AsyncIterator[int]:
    for i in range(n):
        if read is not None:
            read.append(i)
        yield i


async def double(x: int) -> int:
    return 2 * x


async def odd_only(x: int) -> int | None:
    return x if x % 2 else None


async def test_items_go_through_every_stage_in_order() -> None:
    out: list[int] = []

    async def sink(x: int) -> None:
        out.append(x)

    await Pipeline("t", capacity=2).map(double).map(odd_only).run(numbers(10), sink)
    assert out == []  # doubles are even: all filtered
    await Pipeline("t", capacity=2).map(odd_only).map(double).run(numbers(10), sink)
    assert out == [2, 6, 10, 14, 18]


async def test_several_workers_process_every_item_once() -> None:
    out: list[int] = []

    async def slow_double(x: int) -> int:
        await asyncio.sleep(0.001 * (x % 3))
        return 2 * x

    async def sink(x: int) -> None:
        out.append(x)

    await Pipeline("t").map(slow_double, workers=4).run(numbers(50), sink)
    assert sorted(out) == [2 * i for i in range(50)]


async def test_batches_hold_size_items_and_the_rest() -> None:
    batches: list[list[int]] = []

    async def sink(batch: list[int]) -> None:
        batches.append(batch)

    await Pipeline("t").batch(4).run(numbers(10), sink)
    assert batches == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]


async def test_a_slow_sink_holds_the_source_back() -> None:
    """Memory stays flat: the source is never more than the queues' room
    (and what the stages hold in hand) ahead of the sink."""
    read: list[int] = []
    sunk: list[int] = []
    ahead: list[int] = []

    async def slow_sink(x: int) -> None:
        await asyncio.sleep(0.001)
        sunk.append(x)
        ahead.append(len(read) - len(sunk))

    capacity, stages = 3, 2
    await (
        Pipeline("t", capacity=capacity).map(double).map(double).run(numbers(200, read), slow_sink)
    )
    assert len(sunk) == 200
    # one queue per stage plus the sink's, each full, plus one item in hand
    # per task (source, two stages, sink).
    assert max(ahead) <= (stages + 1) * capacity + stages + 2


async def test_an_error_in_a_stage_stops_every_stage_and_is_raised() -> None:
    cancelled: list[str] = []

    async def endless() -> AsyncIterator[int]:
        try:
            i = 0
            while True:
                yield i
                i += 1
        finally:
            cancelled.append("source")

    async def fails_at_five(x: int) -> int:
        if x == 5:
            raise ValueError("bad row 5")
        return x

    async def sink(x: int) -> None:
        await asyncio.sleep(0)

    with pytest.raises(ValueError, match="bad row 5"):
        await Pipeline("t", capacity=2).map(fails_at_five).run(endless(), sink)
    assert cancelled == ["source"]


async def test_cancelling_the_run_reaches_every_stage() -> None:
    stopped: list[str] = []
    started = asyncio.Event()

    async def step(x: int) -> int:
        try:
            started.set()
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            stopped.append("stage")
            raise
        return x

    async def sink(x: int) -> None:
        return None

    run = asyncio.create_task(Pipeline("t").map(step, workers=2).run(numbers(10), sink))
    await started.wait()
    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run
    assert stopped == ["stage", "stage"]


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: Pipeline("t", capacity=0), "room for one item"),
        (lambda: Pipeline("t").map(double, workers=0), "at least one worker"),
        (lambda: Pipeline("t").batch(0), "at least one item"),
    ],
    ids=["no-capacity", "no-workers", "empty-batch"],
)
def test_a_pipeline_that_cannot_run_is_refused(build: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build()  # type: ignore[operator]


async def test_an_ordered_stage_hands_results_on_in_the_items_order() -> None:
    out: list[int] = []
    running: list[int] = []
    most_at_once = 0

    async def uneven_double(x: int) -> int:
        nonlocal most_at_once
        running.append(x)
        most_at_once = max(most_at_once, len(running))
        await asyncio.sleep(0.001 * ((7 * x) % 5))  # later items often finish first
        running.remove(x)
        return 2 * x

    async def sink(x: int) -> None:
        out.append(x)

    await (
        Pipeline("t", capacity=2).map(uneven_double, workers=4, ordered=True).run(numbers(60), sink)
    )
    assert out == [2 * i for i in range(60)]
    assert most_at_once == 4


async def test_an_ordered_stage_takes_in_no_more_than_its_workers_behind_a_slow_item() -> None:
    started: list[int] = []
    release = asyncio.Event()

    async def first_is_slow(x: int) -> int | None:
        started.append(x)
        if x == 0:
            await release.wait()
        return x if x % 2 == 0 else None  # a filter, as a plain map's

    out: list[int] = []

    async def sink(x: int) -> None:
        out.append(x)

    run = asyncio.create_task(
        Pipeline("t", capacity=1).map(first_is_slow, workers=3, ordered=True).run(numbers(20), sink)
    )
    for _ in range(50):
        await asyncio.sleep(0)
    assert started == [0, 1, 2]  # the rest wait for item 0's result to be handed on
    assert out == []
    release.set()
    await run
    assert out == list(range(0, 20, 2))


async def test_an_error_in_an_ordered_stage_cancels_the_items_in_flight() -> None:
    cancelled: list[int] = []

    async def fails_at_three(x: int) -> int:
        if x == 3:
            raise ValueError("bad item 3")
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.append(x)
            raise
        return x

    async def sink(x: int) -> None:
        return None

    with pytest.raises(ValueError, match="bad item 3"):
        await Pipeline("t").map(fails_at_three, workers=4, ordered=True).run(numbers(10), sink)
    assert sorted(cancelled) == [0, 1, 2]


async def test_cancelling_the_run_reaches_an_ordered_stages_items() -> None:
    stopped: list[int] = []
    started = asyncio.Event()

    async def step(x: int) -> int:
        try:
            if x == 1:
                started.set()
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            stopped.append(x)
            raise
        return x

    async def sink(x: int) -> None:
        return None

    run = asyncio.create_task(
        Pipeline("t").map(step, workers=2, ordered=True).run(numbers(10), sink)
    )
    await started.wait()
    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run
    assert sorted(stopped) == [0, 1]
