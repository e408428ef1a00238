"""OpenTelemetry tracing, configured only by the standard ``OTEL_*``
variables, and built inside each process after it starts (a provider's
export thread does not survive a process start, and the supervisor serves
nothing).

Tracing is off, and costs nothing on the request path, when
``OTEL_SDK_DISABLED=true``, when ``OTEL_TRACES_EXPORTER=none``, or when no
exporter is configured at all (neither ``OTEL_TRACES_EXPORTER`` nor an OTLP
endpoint): every part that would trace takes ``None`` instead of a tracer
and skips it. On, the provider samples by ``OTEL_TRACES_SAMPLER`` /
``OTEL_TRACES_SAMPLER_ARG`` (default: parent-based, always on), batches by
``OTEL_BSP_*``, names the service by ``OTEL_SERVICE_NAME`` (default
``ledgerline``), and exports over OTLP (``OTEL_EXPORTER_OTLP_PROTOCOL``
``http/protobuf``, the default, or ``grpc``; the endpoint and headers as
the exporters read them) or to the console.

The trace context travels as W3C ``traceparent``/``tracestate``: in from
HTTP headers and gRPC metadata, out with each event (stored in the outbox
with the transaction that wrote it)."""

from __future__ import annotations

import contextlib
import contextvars
import inspect
import os
import threading
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, TypeVar

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.trace import Link, SpanKind, Status, StatusCode, Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.util.types import AttributeValue

from ledgerline.domain.events import OutboxEvent
from ledgerline.domain.ports import EventPublisher, Lease, LockManager

DEFAULT_SERVICE_NAME = "ledgerline"
INSTRUMENTATION_NAME = "ledgerline"
_W3C = TraceContextTextMapPropagator()
_PROTOCOLS = ("http/protobuf", "grpc")
_EXPORTERS = ("otlp", "console", "none")
# The values OTEL_TRACES_SAMPLER takes (the SDK's own list is private).
_SAMPLERS = (
    "always_on",
    "always_off",
    "traceidratio",
    "parentbased_always_on",
    "parentbased_always_off",
    "parentbased_traceidratio",
)
# How long a stopping process waits for its last spans to be exported: an
# exporter whose collector is away would otherwise retry past the shutdown
# budget (its own timeout is 10 s, then the batch processor's 30 s).
FLUSH_SECONDS = 2.0

T = TypeVar("T")


class TracingConfigError(ValueError):
    """An ``OTEL_*`` variable has a value this service cannot use; the
    message names it."""


@dataclass(frozen=True, slots=True)
class Tracing:
    """A process's tracer provider and the tracer the service's own spans
    come from."""

    provider: TracerProvider
    tracer: Tracer

    @classmethod
    def with_processor(cls, processor: SpanProcessor, service_name: str = "") -> Tracing:
        """A provider that hands every span to ``processor`` (tests use an
        in-memory exporter this way), sampling as the environment says."""
        provider = TracerProvider(resource=_resource(service_name))
        provider.add_span_processor(processor)
        return cls(provider, provider.get_tracer(INSTRUMENTATION_NAME))

    def shutdown(self, timeout: float = FLUSH_SECONDS) -> None:
        """Exports what is still batched, then stops the export thread,
        waiting no longer than ``timeout``: spans are not worth a stop past
        its deadline (a collector that does not answer keeps the rest)."""
        closing = threading.Thread(target=self.provider.shutdown, daemon=True)
        closing.start()
        closing.join(timeout)


def tracing_from_environment(environ: Mapping[str, str] | None = None) -> Tracing | None:
    """The process's tracing as the ``OTEL_*`` variables configure it, or
    None when it is off. Raises TracingConfigError for a value it cannot
    use, so that the process stops at start naming the variable. (The
    SDK's sampler, exporters and batching read the process's environment
    themselves: ``environ`` only decides whether tracing is on.)"""
    env = os.environ if environ is None else environ
    exporters = check_tracing_environment(env)
    if not exporters:
        return None
    provider = TracerProvider(resource=_resource(env.get("OTEL_SERVICE_NAME", "")))
    for name in exporters:
        provider.add_span_processor(BatchSpanProcessor(_exporter(name, env)))
    return Tracing(provider, provider.get_tracer(INSTRUMENTATION_NAME))


def check_tracing_environment(environ: Mapping[str, str] | None = None) -> list[str]:
    """The exporters the ``OTEL_*`` variables configure (none: tracing is
    off), building nothing; raises TracingConfigError naming a variable
    whose value cannot be used. A supervisor checks this before it starts
    the processes that build the tracing."""
    env = os.environ if environ is None else environ
    disabled = env.get("OTEL_SDK_DISABLED", "false").strip().lower()
    if disabled not in ("true", "false", ""):
        raise TracingConfigError("OTEL_SDK_DISABLED: must be true or false")
    if disabled == "true":
        return []
    _check_sampler(env)
    exporters = _exporter_names(env)
    if "otlp" in exporters:
        _otlp_protocol(env)
    return exporters


def _exporter_names(env: Mapping[str, str]) -> list[str]:
    configured = env.get("OTEL_TRACES_EXPORTER")
    if configured is None or not configured.strip():
        endpoints = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        return ["otlp"] if any(env.get(name) for name in endpoints) else []
    names = [name.strip().lower() for name in configured.split(",") if name.strip()]
    for name in names:
        if name not in _EXPORTERS:
            raise TracingConfigError(
                f"OTEL_TRACES_EXPORTER: {name!r} is not one of {', '.join(_EXPORTERS)}"
            )
    return [name for name in names if name != "none"]


def _check_sampler(env: Mapping[str, str]) -> None:
    sampler = env.get("OTEL_TRACES_SAMPLER", "").strip().lower()
    if sampler and sampler not in _SAMPLERS:
        raise TracingConfigError(
            f"OTEL_TRACES_SAMPLER: {sampler!r} is not one of {', '.join(_SAMPLERS)}"
        )
    argument = env.get("OTEL_TRACES_SAMPLER_ARG", "").strip()
    if argument and "ratio" in sampler:
        try:
            ratio = float(argument)
        except ValueError:
            ratio = -1.0
        if not 0.0 <= ratio <= 1.0:
            raise TracingConfigError("OTEL_TRACES_SAMPLER_ARG: must be a ratio from 0 to 1")


def _exporter(name: str, env: Mapping[str, str]) -> SpanExporter:
    if name == "console":
        return ConsoleSpanExporter()
    protocol = _otlp_protocol(env)
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
            OTLPSpanExporter as GRPCSpanExporter,
        )

        return GRPCSpanExporter()
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
        OTLPSpanExporter as HTTPSpanExporter,
    )

    return HTTPSpanExporter()


def _otlp_protocol(env: Mapping[str, str]) -> str:
    for variable in ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"):
        protocol = env.get(variable, "").strip()
        if protocol:
            if protocol not in _PROTOCOLS:
                raise TracingConfigError(
                    f"{variable}: {protocol!r} is not one of {', '.join(_PROTOCOLS)}"
                )
            return protocol
    return "http/protobuf"


def _resource(service_name: str) -> Resource:
    # Resource.create() reads OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES;
    # without either the service is still ledgerline, not unknown_service.
    resource = Resource.create({SERVICE_NAME: service_name} if service_name else {})
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: DEFAULT_SERVICE_NAME}))
    return _HashedOnce(resource.attributes, resource.schema_url)


class _HashedOnce(Resource):
    """A Resource that computes its hash once. The OTLP encoder groups each
    batch's spans by resource, hashing it once a span, and the SDK's hash is
    a ``json.dumps`` of the attributes each time: a sixth of what encoding
    a span costs. A resource does not change once made."""

    def __init__(self, attributes: Mapping[str, AttributeValue], schema_url: str | None) -> None:
        super().__init__(attributes, schema_url)
        self._hash = super().__hash__()

    def __hash__(self) -> int:
        return self._hash


# The trace context as it travels -----------------------------------------


def current_trace_context() -> dict[str, str] | None:
    """The W3C trace context of the span running now, for an event to carry
    (None when nothing is traced)."""
    if not trace.get_current_span().get_span_context().is_valid:
        return None
    carrier: dict[str, str] = {}
    _W3C.inject(carrier)
    return carrier or None


def context_from(carrier: Mapping[str, str] | None) -> Context | None:
    """The context a stored or received ``traceparent`` names, or None."""
    if not carrier or "traceparent" not in carrier:
        return None
    context = _W3C.extract(carrier)
    return context if trace.get_current_span(context).get_span_context().is_valid else None


def trace_ids() -> tuple[str, str] | None:
    """The trace id and span id running now, as hex, for a log line."""
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None
    return format(context.trace_id, "032x"), format(context.span_id, "016x")


# Spans the service makes itself ------------------------------------------


def in_unsampled_trace() -> bool:
    """Whether the work running now belongs to a trace that is not sampled:
    a child span there would be dropped, so none is made (making and
    dropping one costs more than this check)."""
    context = trace.get_current_span().get_span_context()
    return context.is_valid and not context.trace_flags.sampled


def traced_methods(service: T, tracer: Tracer | None, component: str) -> T:
    """``service`` with each of its public coroutine methods run inside a
    span named ``Component.method``: the use cases are traced from the
    composition root, with no tracing code in them."""
    if tracer is None:
        return service
    for name in dir(type(service)):
        if name.startswith("_"):
            continue
        method = getattr(service, name)
        if callable(method) and inspect.iscoroutinefunction(method):
            setattr(service, name, _in_span(tracer, f"{component}.{name}", method))
    return service


def failed(span: trace.Span, exc: BaseException) -> None:
    """Marks ``span`` as failed by the type of ``exc`` alone. Not its
    message, nor a traceback: the driver's errors carry the rows' values
    (an email in a unique violation's detail), which traces must not."""
    name = type(exc).__name__
    span.set_status(Status(StatusCode.ERROR, name))
    span.set_attribute("error.type", getattr(exc, "code", None) or name)


class span_of:  # noqa: N801 - used as a function: ``with span_of(...) as span``
    """A current span around the block; an exception out of it marks the
    span failed by its type alone (``failed``), never recording its message
    or traceback. ``context``: the parent, when not the current span.

    A plain context manager over ``start_span`` and a context token: the
    SDK's ``start_as_current_span`` nests two generator context managers,
    which cost about a quarter of what a sampled span costs to make (18
    against 14 us a span on the bench host)."""

    __slots__ = (
        "_attributes",
        "_context",
        "_kind",
        "_links",
        "_name",
        "_span",
        "_token",
        "_tracer",
    )

    def __init__(
        self,
        tracer: Tracer,
        name: str,
        *,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: Mapping[str, AttributeValue] | None = None,
        context: Context | None = None,
        links: Sequence[Link] | None = None,
    ) -> None:
        self._tracer = tracer
        self._name = name
        self._kind = kind
        self._attributes = attributes
        self._context = context
        self._links = links

    def __enter__(self) -> trace.Span:
        self._span = self._tracer.start_span(
            self._name,
            context=self._context,
            kind=self._kind,
            attributes=self._attributes,
            links=self._links,
            record_exception=False,
            set_status_on_exception=False,
        )
        self._token = otel_context.attach(trace.set_span_in_context(self._span))
        return self._span

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        try:
            if isinstance(exc, Exception):
                failed(self._span, exc)
        finally:
            otel_context.detach(self._token)
            self._span.end()


def _in_span(
    tracer: Tracer, name: str, method: Callable[..., Awaitable[Any]]
) -> Callable[..., Awaitable[Any]]:
    async def traced(*args: Any, **kwargs: Any) -> Any:
        if in_unsampled_trace():
            return await method(*args, **kwargs)
        with span_of(tracer, name):
            return await method(*args, **kwargs)

    traced.__name__ = getattr(method, "__name__", name)
    traced.__doc__ = method.__doc__
    return traced


class TracedLockManager:
    """A LockManager whose acquisitions and releases are spans (``lock
    acquire``, ``lock release``), with whether the lock was had."""

    def __init__(self, locks: LockManager, tracer: Tracer) -> None:
        self._locks = locks
        self._tracer = tracer

    async def try_acquire(self, key: str, ttl_seconds: float) -> Lease | None:
        if in_unsampled_trace():
            return await self._locks.try_acquire(key, ttl_seconds)
        with span_of(self._tracer, "lock acquire") as current:
            lease = await self._locks.try_acquire(key, ttl_seconds)
            current.set_attribute("ledgerline.lock.acquired", lease is not None)
        return None if lease is None else _TracedLease(lease, self._tracer)


class _TracedLease:
    def __init__(self, lease: Lease, tracer: Tracer) -> None:
        self._lease = lease
        self._tracer = tracer
        self.key = lease.key

    async def extend(self, ttl_seconds: float) -> bool:
        return await self._lease.extend(ttl_seconds)

    async def release(self) -> bool:
        if in_unsampled_trace():
            return await self._lease.release()
        with span_of(self._tracer, "lock release") as current:
            released = await self._lease.release()
            current.set_attribute("ledgerline.lock.released", released)
            return released


class TracedPublisher:
    """An EventPublisher whose publishes are spans (``outbox publish``,
    a producer span) in the trace of the change that wrote the event: its
    parent is the stored trace context, and it links to it, so that one
    trace runs from the request through the transaction to the publish."""

    def __init__(self, publisher: EventPublisher, tracer: Tracer) -> None:
        self._publisher = publisher
        self._tracer = tracer

    async def publish(self, event: OutboxEvent) -> None:
        origin = context_from(event.trace_context)
        links = None
        if origin is not None:
            links = [Link(trace.get_current_span(origin).get_span_context())]
        with span_of(
            self._tracer,
            "outbox publish",
            context=origin,
            kind=SpanKind.PRODUCER,
            links=links,
            attributes={
                "messaging.operation.type": "publish",
                "messaging.message.id": str(event.id),
                "cloudevents.event_id": str(event.id),
                "cloudevents.event_type": event.type,
                "ledgerline.event.attempt": event.attempts + 1,
            },
        ):
            await self._publisher.publish(event)


# Replays, as the adapters that find them see them ------------------------

_replayed: contextvars.ContextVar[bool] = contextvars.ContextVar("ledgerline_replayed")


def note_replay(tracer: Tracer | None, operation: str) -> None:
    """An adapter found a stored answer for an idempotency key: the call in
    progress is a replay. Marks it for the outcome metrics and, traced, as a
    span ``idempotency replay`` with the operation."""
    _replayed.set(True)
    if tracer is not None and not in_unsampled_trace():
        tracer.start_span(
            "idempotency replay", attributes={"ledgerline.idempotency.operation": operation}
        ).end()


@contextlib.contextmanager
def watching_replays() -> Iterator[Callable[[], bool]]:
    """Within the block, whether a replay was noted (by ``note_replay``)."""
    token = _replayed.set(False)
    try:
        yield _replayed.get
    finally:
        _replayed.reset(token)
