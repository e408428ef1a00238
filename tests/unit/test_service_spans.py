"""The spans the service makes itself (``span_of``): current within the block
and not after, ended whatever happens, failed by the exception's type alone;
and the resource they carry hashes as the SDK's own would."""

from __future__ import annotations

import asyncio

import pytest
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, SpanKind, StatusCode

from ledgerline.domain.errors import NotFoundError
from ledgerline.platform.tracing import Tracing, _resource, span_of


@pytest.fixture
def traced() -> tuple[Tracing, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    return Tracing.with_processor(SimpleSpanProcessor(exporter)), exporter


def test_span_is_current_in_the_block_only_and_ends(
    traced: tuple[Tracing, InMemorySpanExporter],
) -> None:
    tracing, exporter = traced
    before = trace.get_current_span()
    with span_of(
        tracing.tracer, "SELECT users", kind=SpanKind.CLIENT, attributes={"db.system": "postgresql"}
    ) as span:
        assert trace.get_current_span() is span
        with span_of(tracing.tracer, "inner") as inner:
            assert trace.get_current_span() is inner
        assert trace.get_current_span() is span
    assert trace.get_current_span() is before
    inner_span, outer = exporter.get_finished_spans()
    assert (outer.name, outer.kind, outer.attributes) == (
        "SELECT users",
        SpanKind.CLIENT,
        {"db.system": "postgresql"},
    )
    assert outer.status.status_code is StatusCode.UNSET
    assert inner_span.parent is not None
    assert inner_span.parent.span_id == outer.context.span_id


@pytest.mark.parametrize(
    ("error", "error_type"),
    [
        (NotFoundError("user a@example.com not found"), "not_found"),
        (ValueError("secret value a@example.com"), "ValueError"),
    ],
)
def test_an_exception_fails_the_span_by_its_type_alone(
    traced: tuple[Tracing, InMemorySpanExporter], error: Exception, error_type: str
) -> None:
    tracing, exporter = traced
    with pytest.raises(type(error)), span_of(tracing.tracer, "UserService.get"):
        raise error
    (span,) = exporter.get_finished_spans()
    assert span.status.status_code is StatusCode.ERROR
    assert span.status.description == type(error).__name__
    assert span.attributes is not None
    assert span.attributes["error.type"] == error_type
    assert not span.events  # no exception event: its message may carry an email
    assert trace.get_current_span() is trace.INVALID_SPAN


def test_a_cancelled_block_ends_its_span_without_failing_it(
    traced: tuple[Tracing, InMemorySpanExporter],
) -> None:
    tracing, exporter = traced
    with pytest.raises(asyncio.CancelledError), span_of(tracing.tracer, "lock acquire"):
        raise asyncio.CancelledError
    (span,) = exporter.get_finished_spans()
    assert span.end_time is not None
    assert span.status.status_code is StatusCode.UNSET
    assert trace.get_current_span() is trace.INVALID_SPAN


def test_a_given_parent_and_links_are_used(traced: tuple[Tracing, InMemorySpanExporter]) -> None:
    tracing, exporter = traced
    origin = tracing.tracer.start_span("POST /v1/orders/{order_id}/pay")
    origin.end()
    parent = trace.set_span_in_context(origin)
    with span_of(
        tracing.tracer,
        "outbox publish",
        context=parent,
        kind=SpanKind.PRODUCER,
        links=[Link(origin.get_span_context())],
    ):
        pass
    _, publish = exporter.get_finished_spans()
    assert publish.context.trace_id == origin.get_span_context().trace_id
    assert publish.parent is not None
    assert publish.parent.span_id == origin.get_span_context().span_id
    assert [link.context.span_id for link in publish.links] == [origin.get_span_context().span_id]


def test_the_resource_hashes_and_compares_as_the_sdks_own() -> None:
    resource = _resource("ledgerline-test")
    same = Resource(resource.attributes, resource.schema_url)
    assert resource.attributes["service.name"] == "ledgerline-test"
    assert hash(resource) == hash(same)
    assert resource == same
    assert {resource: 1}[same] == 1
