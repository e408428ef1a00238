"""`ledgerline events tail`: the outbox's latest events, as the CloudEvents
documents the bus gets (published or not), one JSON document a line."""

from __future__ import annotations

import asyncio
import uuid
from collections import OrderedDict
from collections.abc import Callable

from ledgerline.main.core import Core
from ledgerline.platform.eventbus import structured_json

# Following goes back this many rows behind the newest one printed each
# time, for events whose number was taken early but that committed late.
FOLLOW_WINDOW = 1000
_REMEMBERED = 10 * FOLLOW_WINDOW


async def tail_events(
    core: Core,
    limit: int,
    *,
    follow: bool,
    poll_seconds: float,
    write: Callable[[str], None],
) -> None:
    """Writes the last ``limit`` events; with ``follow``, then every event
    recorded after them, until cancelled."""
    source = core.settings.event_source
    printed: OrderedDict[uuid.UUID, None] = OrderedDict()
    newest = 0

    def show(seq: int, document: str, event_id: uuid.UUID) -> None:
        nonlocal newest
        if event_id in printed:
            return
        write(document)
        printed[event_id] = None
        if len(printed) > _REMEMBERED:
            printed.popitem(last=False)
        newest = max(newest, seq)

    for seq, event in await core.outbox.latest(limit):
        show(seq, structured_json(event, source).decode(), event.id)
    while follow:
        await asyncio.sleep(poll_seconds)
        after = max(0, newest - FOLLOW_WINDOW)
        for seq, event in await core.outbox.latest(FOLLOW_WINDOW * 2, after_seq=after):
            show(seq, structured_json(event, source).decode(), event.id)
