"""Readiness: each dependency answers a cheap probe; from the moment shutdown
begins the service reports itself not ready."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from ledgerline.platform.deadline import within

Probe = Callable[[], Awaitable[object]]


class Readiness:
    def __init__(self, probes: dict[str, Probe], timeout: float = 2.0) -> None:
        self._probes = probes
        self._timeout = timeout
        self.shutting_down = False

    def with_probes(self, probes: dict[str, Probe]) -> Readiness:
        """These probes as well as this readiness's own, on a new one."""
        return Readiness({**self._probes, **probes}, self._timeout)

    async def check(self) -> dict[str, str]:
        """Returns {dependency: "ok" | "unavailable"}."""
        names = list(self._probes)
        results = await asyncio.gather(
            *(self._probe(self._probes[name]) for name in names), return_exceptions=False
        )
        return dict(zip(names, results, strict=True))

    async def _probe(self, probe: Probe) -> str:
        try:
            # A deadline of its own, not only a timeout: the probe's clean-up
            # (its connection's hand-back) then keeps it too.
            async with within(self._timeout):
                await probe()
        except Exception:  # noqa: BLE001 - any failure means not ready
            return "unavailable"
        return "ok"
