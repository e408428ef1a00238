"""A job that runs every so often inside a serving process, until stopped."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

from ledgerline.platform.deadline import within
from ledgerline.platform.logging import get_logger


class Periodic:
    """Runs ``job`` every ``interval`` seconds, each run under a deadline of
    ``timeout`` seconds (as a request runs: see platform.deadline)."""

    def __init__(
        self,
        name: str,
        interval: float,
        job: Callable[[], Awaitable[object]],
        *,
        timeout: float,
    ) -> None:
        self._name = name
        self._interval = interval
        self._job = job
        self._timeout = timeout
        self._task: asyncio.Task[None] | None = None
        self._log = get_logger("ledgerline.periodic").bind(job=name)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=self._name)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                async with within(self._timeout):
                    result = await self._job()
                self._log.debug("periodic job ran", result=result)
            except Exception:  # noqa: BLE001 - a failed run is logged; the next one tries again
                self._log.exception("periodic job failed")
