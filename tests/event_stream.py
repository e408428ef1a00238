"""A test's own JetStream stream on the test NATS: where the relay under
test publishes, and what the test reads back."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import nats
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent

from ledgerline.platform.eventbus import EventBusSettings, NatsEventBus

Message = tuple[str, dict[str, str], CloudEvent]  # subject, headers, event


@dataclass
class Bus:
    url: str
    settings: EventBusSettings

    @property
    def env(self) -> dict[str, str]:
        """What points a `ledgerline worker` at this stream."""
        return {
            "LEDGERLINE_EVENT_BUS_URL": self.url,
            "LEDGERLINE_EVENT_STREAM": self.settings.stream,
            "LEDGERLINE_EVENT_SUBJECT_PREFIX": self.settings.subject_prefix,
        }

    def client(self, url: str | None = None) -> NatsEventBus:
        return NatsEventBus(
            EventBusSettings(
                url=url or self.url,
                stream=self.settings.stream,
                subject_prefix=self.settings.subject_prefix,
                publish_timeout_seconds=1.0,
            )
        )

    async def messages(self) -> list[Message]:
        """What the stream holds, in its order."""
        nc = await nats.connect(self.url)
        try:
            js = nc.jetstream()
            try:
                info = await js.stream_info(self.settings.stream)
            except nats.js.errors.NotFoundError:
                return []
            stored = []
            for seq in range(info.state.first_seq, info.state.last_seq + 1):
                msg = await js.get_msg(self.settings.stream, seq)
                assert msg.data is not None
                assert msg.subject is not None
                event = JSONFormat().read(None, msg.data)
                assert isinstance(event, CloudEvent)
                stored.append((msg.subject, dict(msg.headers or {}), event))
            return stored
        finally:
            await nc.close()

    async def count(self) -> int:
        nc = await nats.connect(self.url)
        try:
            info = await nc.jetstream().stream_info(self.settings.stream)
            return int(info.state.messages)
        except nats.js.errors.NotFoundError:
            return 0
        finally:
            await nc.close()

    async def delete(self) -> None:
        nc = await nats.connect(self.url)
        try:
            with contextlib.suppress(nats.js.errors.NotFoundError):
                await nc.jetstream().delete_stream(self.settings.stream)
        finally:
            await nc.close()


def in_aggregate_order(messages: list[Message]) -> bool:
    """Each aggregate's versions arrive 1, 2, 3, ... in the stream's order."""
    seen: dict[tuple[str, str], int] = {}
    for _, _, event in messages:
        aggregate = (event.get_extension("aggregatetype"), event.get_extension("aggregateid"))
        version = event.get_extension("aggregateversion")
        if version != seen.get(aggregate, 0) + 1:
            return False
        seen[aggregate] = version
    return True
