"""The limits a public listener needs, on top of uvicorn's httptools protocol.

uvicorn parses with httptools, which buffers a header of any size, and it has
no deadline for a request head nor a cap on connections. Parsing stays
httptools'; this subclass only watches the parser's callbacks and the bytes
fed to it:

- a request head larger than ``max_header_bytes`` or with more than
  ``max_headers`` fields is answered ``431`` and the connection closed,
  without reading the rest (memory stays within the limit plus one read);
- a head must arrive whole within ``header_timeout`` of its first byte (or
  of the connection's opening): ``408`` if part of it came, a silent close
  if nothing did; idle keep-alive connections close after uvicorn's
  ``timeout_keep_alive``;
- a connection beyond ``max_connections`` is answered ``503`` and closed at
  once, so its file descriptor is freed;
- at shutdown an idle keep-alive connection is not cut at once: a request
  already on its way within ``shutdown_grace`` is still answered (with
  ``Connection: close``), so a request that gets no answer was never run;
- every response while the service drains carries ``Connection: close``.

Parser errors are answered in the API's error shape rather than uvicorn's
plain text.
"""

from __future__ import annotations

import asyncio
import functools
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from ledgerline.delivery.http.errors import error_body

# A header line's ": " and "\r\n" around its name and value.
_HEADER_OVERHEAD = 4
# How long a refused client's further bytes are read and dropped.
_LINGER_SECONDS = 2.0
# At shutdown, the pause between an idle connection's grace and its close.
_LAST_LOOK_SECONDS = 0.05


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    max_header_bytes: int = 16 * 1024
    max_headers: int = 100
    header_timeout: float = 10.0
    keepalive_timeout: int = 5
    max_connections: int = 2048
    # How long an idle keep-alive connection may still bring a request once
    # shutdown begins.
    shutdown_grace: float = 1.0


def protocol_factory(
    limits: ConnectionLimits, draining: Callable[[], bool]
) -> type[asyncio.Protocol]:
    """What to give ``uvicorn.Config(http=...)``: it calls it with the
    protocol's keyword arguments."""
    factory = functools.partial(GuardedHttpToolsProtocol, limits=limits, draining=draining)
    return cast(type[asyncio.Protocol], factory)


def error_bytes(status: int, code: str, message: str) -> bytes:
    """A whole HTTP/1.1 response in the API's error shape that closes the
    connection: for answers given below the application."""
    body = json.dumps(error_body(status, code, message)).encode()
    head = (
        b"content-type: application/json\r\n"
        b"content-length: %d\r\n"
        b"connection: close\r\n"
        b"x-request-id: %s\r\n\r\n" % (len(body), uuid.uuid4().hex.encode())
    )
    return STATUS_LINE[status] + head + body


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    def __init__(
        self, *args: Any, limits: ConnectionLimits, draining: Callable[[], bool], **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self._limits = limits
        self._draining = draining
        self._in_head = False  # between a message's first byte and its last header
        self._in_trailers = False  # after a chunked body's last chunk
        self._chunk_had_data = False
        self._began_in_this_read = False
        self._body_in_this_read = 0
        self._body_before_fields = 0
        self._head_bytes = 0  # an upper bound on the open head's (or trailers') size
        self._header_count = 0
        self._head_timer: asyncio.TimerHandle | None = None
        self._grace_timer: asyncio.TimerHandle | None = None
        self._refused = False
        self._closing = False

    # The connection

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)  # type: ignore[arg-type]
        if len(self.connections) > self._limits.max_connections:
            # No linger: the point is to give the descriptor back at once.
            self._refuse(503, "unavailable", "too many connections", linger=False)
            return
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timers()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        if self._head_timer is None and self._waiting_for_head():
            self._arm_head_timer()
        was_open = self._fields_open()
        self._began_in_this_read = False
        self._body_in_this_read = 0
        super().data_received(data)
        if not self._fields_open() or self._refused:
            return
        # httptools holds a header's partial name or value until it ends, so
        # the bytes fed while a head (or a chunked body's trailers) is open
        # bound its size: all of them if it began in an earlier read, at most
        # this read if it began here.
        if was_open and not self._began_in_this_read:
            self._head_bytes += len(data)
        else:  # less the body bytes this read carried before it began
            self._head_bytes = len(data) - self._body_before_fields
        if self._head_bytes > self._limits.max_header_bytes:
            self._refuse_large_head()

    def send_400_response(self, msg: str) -> None:
        # uvicorn's answer to what httptools cannot parse, in the API's shape.
        self._refuse(400, "invalid_argument", "malformed HTTP request")

    def shutdown(self) -> None:
        self._closing = True
        if not self._idle():
            super().shutdown()  # a request in flight finishes, then the connection closes
            return
        # Idle, or a head arriving: a request may be on its way. Give it a
        # moment to land (a head still has its own deadline).
        self._grace_timer = self.loop.call_later(self._limits.shutdown_grace, self._close_if_idle)

    # Parser callbacks

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head = True
        self._began_in_this_read = True
        self._body_before_fields = self._body_in_this_read
        self._head_bytes = 0
        self._header_count = 0

    def on_url(self, url: bytes) -> None:
        if not self._refused:
            super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._refused:
            return
        self._header_count += 1
        if self._header_count > self._limits.max_headers:
            self._refuse_large_head()
            return
        if self._in_trailers:
            return  # the body's trailers: counted, and ignored as uvicorn's ASGI has no place
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        if self._refused:
            return
        self._in_head = False
        self._cancel_head_timer()
        exact = len(self.url) + sum(
            len(name) + len(value) + _HEADER_OVERHEAD for name, value in self.headers
        )
        if exact > self._limits.max_header_bytes:
            self._refuse_large_head()
            return
        super().on_headers_complete()
        if self._closing or self._draining():
            # Tell the client to take its next request elsewhere.
            self.cycle.keep_alive = False

    def on_body(self, body: bytes) -> None:
        if not self._refused:
            self._chunk_had_data = True
            self._body_in_this_read += len(body)
            super().on_body(body)

    def on_chunk_header(self) -> None:
        self._chunk_had_data = False

    def on_chunk_complete(self) -> None:
        if not self._chunk_had_data:
            # The last chunk (size 0): trailer fields may follow, under the
            # same limits as a head.
            self._in_trailers = True
            self._began_in_this_read = True
            self._body_before_fields = self._body_in_this_read
            self._head_bytes = 0
            self._header_count = 0

    def on_message_complete(self) -> None:
        self._in_trailers = False
        if not self._refused:
            super().on_message_complete()

    # Timers and refusals

    def _fields_open(self) -> bool:
        return self._in_head or self._in_trailers

    def _waiting_for_head(self) -> bool:
        return self._in_head or self._idle()

    def _idle(self) -> bool:
        """No request under way on this connection (one may be arriving)."""
        return (self.cycle is None or self.cycle.response_complete) and not self.pipeline

    def _arm_head_timer(self) -> None:
        self._head_timer = self.loop.call_later(self._limits.header_timeout, self._head_timed_out)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _cancel_timers(self) -> None:
        self._cancel_head_timer()
        if self._grace_timer is not None:
            self._grace_timer.cancel()
            self._grace_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self._refused or self.transport.is_closing():
            return
        if self._in_head:
            self._refuse(408, "request_timeout", "the request head did not arrive in time")
        elif self._idle():
            self.transport.close()  # nothing was asked: nothing to answer

    def _close_if_idle(self) -> None:
        # Once more after the next read of the sockets: a request that landed
        # while the loop was busy is read before the connection is given up.
        self._grace_timer = self.loop.call_later(_LAST_LOOK_SECONDS, self._close_now_if_idle)

    def _close_now_if_idle(self) -> None:
        self._grace_timer = None
        if not self._in_head and self._idle() and not self.transport.is_closing():
            self.transport.close()

    def _refuse_large_head(self) -> None:
        self._refuse(431, "request_header_fields_too_large", "request header fields too large")

    def _refuse(self, status: int, code: str, message: str, *, linger: bool = True) -> None:
        """Answers below the application and ends the connection; nothing
        more is parsed. With ``linger``, what the client still sends is read
        and dropped for a moment after the answer (a half close), so that
        the answer is not lost to a reset of the connection; the client's own
        end of the stream closes it sooner (``eof_received`` returns None).
        While another response is being written (pipelining, or a request
        whose trailers are refused), that response is finished first and the
        connection then closed; requests queued behind it are never started."""
        if self._refused:
            return
        self._refused = True
        self._cancel_timers()
        if self.transport.is_closing():
            return
        self.pipeline.clear()
        if self.cycle is not None and not self.cycle.response_complete:
            self.cycle.keep_alive = False
            self.flow.pause_reading()
            return
        self.transport.write(error_bytes(status, code, message))
        if linger and self.transport.can_write_eof():
            self.transport.write_eof()
            self._grace_timer = self.loop.call_later(_LINGER_SECONDS, self.transport.close)
        else:
            self.transport.close()
