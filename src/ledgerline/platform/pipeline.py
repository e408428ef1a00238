"""A pipeline of stages joined by bounded queues, the Go pipeline pattern in
asyncio: each stage runs in tasks of its own and hands its output to the
next through a queue of fixed capacity, so a slow stage holds back the ones
before it (memory stays flat however long the input), and a failure or a
cancellation anywhere stops every stage.

    pipeline = Pipeline("import", capacity=256)
    pipeline.map(parse).map(hash_password, workers=4).batch(1000)
    await pipeline.run(read_rows(path), load_batch)

A ``map`` function returning None drops the item (a filter). With more than
one worker a stage may reorder items; with one it keeps their order, and so
does ``map(step, workers=N, ordered=True)``: N items are worked on at once
(say, in a process pool) and their results handed on in the order the items
came, as Go's ordered fan-out does it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

Step = Callable[[Any], Awaitable[Any]]


class _End:
    """The end of the stream, passed down once every worker of a stage is done."""


_END = _End()


@dataclass(frozen=True, slots=True)
class _Map:
    step: Step
    workers: int
    ordered: bool


@dataclass(frozen=True, slots=True)
class _Batch:
    size: int


class Pipeline:
    def __init__(self, name: str, capacity: int = 64) -> None:
        """``capacity``: how many items each queue between stages holds."""
        if capacity < 1:
            raise ValueError("a queue needs room for one item")
        self.name = name
        self._capacity = capacity
        self._stages: list[_Map | _Batch] = []

    def map(self, step: Step, *, workers: int = 1, ordered: bool = False) -> Pipeline:
        """Runs ``step`` on each item, ``workers`` at once. ``ordered``: the
        results are handed on in the items' order; a slow item holds back
        the ones after it, and at most ``workers`` items are taken in (being
        worked on, or done and waiting their turn) meanwhile."""
        if workers < 1:
            raise ValueError("a stage needs at least one worker")
        self._stages.append(_Map(step, workers, ordered))
        return self

    def batch(self, size: int) -> Pipeline:
        """Groups items into lists of ``size`` (the last may be shorter)."""
        if size < 1:
            raise ValueError("a batch holds at least one item")
        self._stages.append(_Batch(size))
        return self

    async def run(self, source: AsyncIterable[Any], sink: Step) -> None:
        """Feeds ``source`` through the stages into ``sink``, and returns when
        the last item is sunk. An exception in any stage (the source and
        the sink included) cancels the others and is raised here; so is a
        cancellation of the caller."""
        try:
            await self._run(source, sink)
        except BaseExceptionGroup as group:
            raise _first(group) from None

    async def _run(self, source: AsyncIterable[Any], sink: Step) -> None:
        queues = [self._queue() for _ in range(len(self._stages) + 1)]
        async with asyncio.TaskGroup() as group:
            group.create_task(self._feed(source, queues[0]), name=f"{self.name}-source")
            for i, stage in enumerate(self._stages):
                inbox, outbox = queues[i], queues[i + 1]
                if isinstance(stage, _Map):
                    run = self._ordered_map if stage.ordered else self._map
                    group.create_task(run(stage, inbox, outbox), name=f"{self.name}-{i}")
                else:
                    group.create_task(
                        self._batch(stage.size, inbox, outbox), name=f"{self.name}-{i}"
                    )
            group.create_task(self._sink(sink, queues[-1]), name=f"{self.name}-sink")

    def _queue(self) -> asyncio.Queue[Any]:
        return asyncio.Queue(self._capacity)

    @staticmethod
    async def _feed(source: AsyncIterable[Any], outbox: asyncio.Queue[Any]) -> None:
        try:
            async for item in source:
                await outbox.put(item)
        finally:
            # Stopped early (an error downstream, a cancellation): the source
            # is closed now, its files with it, not whenever it is collected.
            close = getattr(source, "aclose", None)
            if close is not None:
                await close()
        await outbox.put(_END)

    @staticmethod
    async def _map(stage: _Map, inbox: asyncio.Queue[Any], outbox: asyncio.Queue[Any]) -> None:
        async def worker() -> None:
            while (item := await inbox.get()) is not _END:
                result = await stage.step(item)
                if result is not None:
                    await outbox.put(result)
            await inbox.put(_END)  # for the next worker of this stage

        async with asyncio.TaskGroup() as workers:
            for _ in range(stage.workers):
                workers.create_task(worker())
        inbox.get_nowait()  # the last worker's hand-on: nobody is left to take it
        await outbox.put(_END)

    @staticmethod
    async def _ordered_map(
        stage: _Map, inbox: asyncio.Queue[Any], outbox: asyncio.Queue[Any]
    ) -> None:
        # Each item's step is a task of its own; the tasks wait in a queue,
        # in the items' order, for their results to be handed on. A place
        # is given back when a result is handed on, not when it is ready:
        # results that wait behind a slow item count against the bound.
        places = asyncio.Semaphore(stage.workers)
        started: asyncio.Queue[asyncio.Task[Any] | _End] = asyncio.Queue()

        async def start(group: asyncio.TaskGroup) -> None:
            while (item := await inbox.get()) is not _END:
                await places.acquire()
                started.put_nowait(group.create_task(_call(stage.step, item)))
            started.put_nowait(_END)

        async with asyncio.TaskGroup() as group:
            group.create_task(start(group))
            while not isinstance(task := await started.get(), _End):
                result = await task
                places.release()
                if result is not None:
                    await outbox.put(result)
        await outbox.put(_END)

    @staticmethod
    async def _batch(size: int, inbox: asyncio.Queue[Any], outbox: asyncio.Queue[Any]) -> None:
        batch: list[Any] = []
        while (item := await inbox.get()) is not _END:
            batch.append(item)
            if len(batch) == size:
                await outbox.put(batch)
                batch = []
        if batch:
            await outbox.put(batch)
        await outbox.put(_END)

    @staticmethod
    async def _sink(sink: Step, inbox: asyncio.Queue[Any]) -> None:
        while (item := await inbox.get()) is not _END:
            await sink(item)


async def _call(step: Step, item: Any) -> Any:
    return await step(item)


def _first(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The first error a stage raised (as errgroup's Wait returns it): the
    others are the stages it cancelled, or failed at the same moment."""
    first = group.exceptions[0]
    return _first(first) if isinstance(first, BaseExceptionGroup) else first
