"""The event bus: NATS JetStream, events as CloudEvents 1.0 structured-mode
JSON documents (the CloudEvents SDK's JSON format).

Each event goes to ``<prefix>.<type>`` (``ledgerline.events.order.paid``)
in one stream, created when missing. The JetStream ``Nats-Msg-Id`` header is
the event id: a retry of an event the stream stored already (the ack was
lost, or a relay died before recording it) is dropped by the stream as a
duplicate within the stream's ``duplicate_window``, which is therefore kept
at least as long as the relay's longest retry horizon.

The connection is made on first use, and made again on the first use after
it drops; while the bus cannot be reached, publishing raises
BusUnavailableError at once (no event is blamed for an outage)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import nats
from cloudevents.core.exceptions import BaseCloudEventException
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent
from nats.aio.client import Client as NatsClient
from nats.errors import Error as NATSError
from nats.js import JetStreamContext
from nats.js.api import StreamConfig
from nats.js.errors import NoStreamResponseError, NotFoundError, ServiceUnavailableError

from ledgerline.domain.events import BusUnavailableError, OutboxEvent, PublishError
from ledgerline.platform.logging import get_logger

SPEC_VERSION = "1.0"
_FORMAT = JSONFormat()
CONTENT_TYPE = _FORMAT.CONTENT_TYPE


def cloud_event(event: OutboxEvent, source: str) -> CloudEvent:
    """The event as a CloudEvent 1.0 (the SDK checks every attribute): the
    one place its envelope is built. The aggregate and its version travel
    as extension attributes, and the trace context (when recorded) as the
    distributed-tracing extension's ``traceparent``/``tracestate``."""
    attributes: dict[str, Any] = {
        "specversion": SPEC_VERSION,
        "id": str(event.id),
        "source": source,
        "type": event.type,
        "subject": event.subject,
        "time": event.occurred_at,
        "datacontenttype": "application/json",
        "aggregatetype": event.aggregate_type,
        "aggregateid": str(event.aggregate_id),
        "aggregateversion": event.version,
    }
    for key in ("traceparent", "tracestate"):
        if event.trace_context and key in event.trace_context:
            attributes[key] = event.trace_context[key]
    return CloudEvent(attributes, event.data)


def structured_json(event: OutboxEvent, source: str) -> bytes:
    """The CloudEvents structured-mode JSON document of the event."""
    return _FORMAT.write(cloud_event(event, source))


@dataclass(frozen=True, slots=True)
class EventBusSettings:
    url: str
    stream: str = "LEDGERLINE_EVENTS"
    subject_prefix: str = "ledgerline.events"
    source: str = "/ledgerline"
    # At least the relay's retry horizon (see RelaySettings).
    duplicate_window_seconds: float = 600.0
    publish_timeout_seconds: float = 5.0
    connect_timeout_seconds: float = 2.0


class NatsEventBus:
    def __init__(self, settings: EventBusSettings) -> None:
        self._settings = settings
        self._nc: NatsClient | None = None
        self._js: JetStreamContext | None = None
        self._stream_ready = False
        self._closing = False
        self._connecting = asyncio.Lock()
        # Events the stream had stored already (a retry after a lost ack,
        # or after a relay died before recording it): dropped, not stored twice.
        self.duplicates = 0
        self._log = get_logger("ledgerline.eventbus")

    def subject(self, event_type: str) -> str:
        return f"{self._settings.subject_prefix}.{event_type}"

    async def publish(self, event: OutboxEvent) -> None:
        js = await self._ready()
        try:
            payload = structured_json(event, self._settings.source)
        except (BaseCloudEventException, TypeError, ValueError) as exc:
            raise PublishError(f"not a valid CloudEvent: {exc}") from exc
        try:
            ack = await js.publish(
                self.subject(event.type),
                payload,
                timeout=self._settings.publish_timeout_seconds,
                headers={"Nats-Msg-Id": str(event.id), "Content-Type": CONTENT_TYPE},
            )
        except NoStreamResponseError as exc:
            # Nothing listens on the subject: the stream is gone (deleted,
            # or the server lost it). Make it again before the next event.
            self._stream_ready = False
            raise BusUnavailableError("no stream takes the event's subject") from exc
        except ServiceUnavailableError as exc:  # JetStream itself is down, not this event
            raise BusUnavailableError(f"the bus cannot store events now: {exc}") from exc
        except TimeoutError as exc:
            # No ack in time: a stream without a leader, a server that
            # stalls. Like an outage, it blames no event (an outage of any
            # length must not kill events); the duplicate window absorbs the
            # retry if the event was stored after all.
            raise BusUnavailableError("the bus did not acknowledge in time") from exc
        except (NATSError, OSError) as exc:
            if not self.connected:
                raise BusUnavailableError(f"the bus went away: {exc!r}") from exc
            raise PublishError(f"not stored by the bus: {exc or type(exc).__name__}") from exc
        if ack.stream != self._settings.stream:
            raise PublishError(f"stored by stream {ack.stream}, not {self._settings.stream}")
        if ack.duplicate:
            self.duplicates += 1

    @property
    def connected(self) -> bool:
        return self._nc is not None and self._nc.is_connected

    async def ping(self) -> None:
        """Readiness: the bus answers a round trip."""
        nc = await self._connection()
        try:
            await nc.flush(timeout=2)
        except (NATSError, TimeoutError, OSError) as exc:
            raise BusUnavailableError(repr(exc)) from exc

    async def close(self) -> None:
        self._closing = True
        nc, self._nc, self._js = self._nc, None, None
        self._stream_ready = False
        if nc is not None and not nc.is_closed:
            try:
                async with asyncio.timeout(5):
                    await nc.drain()
            except (NATSError, TimeoutError, OSError):
                await nc.close()

    async def _ready(self) -> JetStreamContext:
        nc = await self._connection()
        if self._js is None:
            self._js = nc.jetstream(timeout=self._settings.publish_timeout_seconds)
        if not self._stream_ready:
            async with self._connecting:
                if not self._stream_ready:
                    await self._ensure_stream(self._js)
        return self._js

    async def _connection(self) -> NatsClient:
        if self._nc is not None and not self._nc.is_closed:
            if not self._nc.is_connected:
                raise BusUnavailableError("reconnecting to the bus")
            return self._nc
        async with self._connecting:
            if self._nc is None or self._nc.is_closed:
                self._nc = await self._connect()
                self._js = None
                self._stream_ready = False
        return self._nc

    async def _connect(self) -> NatsClient:
        s = self._settings
        log = self._log
        self._closing = False

        async def on_error(exc: Exception) -> None:
            log.warning("event bus error", error=repr(exc))

        async def on_disconnected() -> None:
            if not self._closing:
                log.warning("event bus disconnected")

        async def on_reconnected() -> None:
            log.info("event bus reconnected")

        try:
            return await nats.connect(
                s.url,
                name="ledgerline-worker",
                connect_timeout=max(1, round(s.connect_timeout_seconds)),
                # A bus that does not answer is found out at once: the client
                # would otherwise try for ever inside connect (it gives up on
                # a server only past max_reconnect_attempts, and only when
                # that is above 0). A connection that drops is closed, and
                # the next publish (or probe) makes a new one, at the relay's
                # backoff.
                allow_reconnect=False,
                max_reconnect_attempts=1,
                reconnect_time_wait=0,
                error_cb=on_error,
                disconnected_cb=on_disconnected,
                reconnected_cb=on_reconnected,
            )
        except (NATSError, TimeoutError, OSError) as exc:
            raise BusUnavailableError(f"cannot reach the bus: {exc!r}") from exc

    async def _ensure_stream(self, js: JetStreamContext) -> None:
        s = self._settings
        subjects = [f"{s.subject_prefix}.>"]
        try:
            try:
                info = await js.stream_info(s.stream)
            except NotFoundError:
                await js.add_stream(
                    StreamConfig(
                        name=s.stream,
                        subjects=subjects,
                        duplicate_window=s.duplicate_window_seconds,
                    )
                )
                self._log.info("created the event stream", stream=s.stream, subjects=subjects)
            else:
                config = info.config
                if (config.duplicate_window or 0) < s.duplicate_window_seconds:
                    config.duplicate_window = s.duplicate_window_seconds
                    await js.update_stream(config)
                    self._log.info(
                        "widened the event stream's duplicate window",
                        stream=s.stream,
                        seconds=s.duplicate_window_seconds,
                    )
        except (NATSError, TimeoutError, OSError) as exc:
            raise BusUnavailableError(f"cannot set up the stream {s.stream}: {exc!r}") from exc
        self._stream_ready = True
