"""Tracing is configured by the standard OTEL_* variables alone: off unless
an exporter is configured, and a value the service cannot use stops it at
start, naming the variable."""

from __future__ import annotations

import pytest
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from ledgerline.config import ConfigError
from ledgerline.main.runtime import check_tracing
from ledgerline.platform.tracing import (
    Tracing,
    TracingConfigError,
    check_tracing_environment,
    traced_methods,
    tracing_from_environment,
)
from ledgerline.repository.postgres.executor import _span_name

ENDPOINT = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}


@pytest.mark.parametrize(
    ("environment", "exporters"),
    [
        ({}, []),
        (ENDPOINT, ["otlp"]),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:4318/v1/traces"}, ["otlp"]),
        ({"OTEL_TRACES_EXPORTER": "console"}, ["console"]),
        ({"OTEL_TRACES_EXPORTER": "none", **ENDPOINT}, []),
        ({"OTEL_TRACES_EXPORTER": "otlp,console"}, ["otlp", "console"]),
        ({"OTEL_SDK_DISABLED": "true", **ENDPOINT}, []),
        ({"OTEL_SDK_DISABLED": "TRUE", "OTEL_TRACES_EXPORTER": "otlp"}, []),
        ({"OTEL_SDK_DISABLED": "false", **ENDPOINT}, ["otlp"]),
        ({"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc", **ENDPOINT}, ["otlp"]),
        ({"OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.1"}, []),
    ],
)
def test_exporters_are_what_the_variables_configure(
    environment: dict[str, str], exporters: list[str]
) -> None:
    assert check_tracing_environment(environment) == exporters


@pytest.mark.parametrize(
    ("environment", "variable"),
    [
        ({"OTEL_SDK_DISABLED": "yes"}, "OTEL_SDK_DISABLED"),
        ({"OTEL_TRACES_EXPORTER": "zipkin"}, "OTEL_TRACES_EXPORTER"),
        ({"OTEL_TRACES_SAMPLER": "sometimes"}, "OTEL_TRACES_SAMPLER"),
        (
            {"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "1.5"},
            "OTEL_TRACES_SAMPLER_ARG",
        ),
        (
            {"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "half"},
            "OTEL_TRACES_SAMPLER_ARG",
        ),
        ({"OTEL_EXPORTER_OTLP_PROTOCOL": "http/json", **ENDPOINT}, "OTEL_EXPORTER_OTLP_PROTOCOL"),
        (
            {"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "thrift", **ENDPOINT},
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
        ),
    ],
)
def test_a_value_the_service_cannot_use_names_its_variable(
    environment: dict[str, str], variable: str
) -> None:
    with pytest.raises(TracingConfigError, match=f"^{variable}: "):
        check_tracing_environment(environment)


def test_at_start_a_bad_value_is_a_configuration_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "jaeger-thrift")
    with pytest.raises(ConfigError, match=r"^OTEL_TRACES_EXPORTER: "):
        check_tracing()


def test_off_builds_nothing_and_on_names_the_service() -> None:
    assert tracing_from_environment({"OTEL_SDK_DISABLED": "true", **ENDPOINT}) is None
    tracing = tracing_from_environment(ENDPOINT)
    assert tracing is not None
    try:
        assert tracing.provider.resource.attributes["service.name"] == "ledgerline"
    finally:
        tracing.shutdown()


class _Service:
    def __init__(self) -> None:
        self.calls: list[int] = []

    async def work(self, n: int) -> int:
        self.calls.append(n)
        return n * 2

    def plain(self) -> str:
        return "not traced"


async def test_use_case_methods_run_in_spans_named_after_the_component() -> None:
    exporter = InMemorySpanExporter()
    tracer = Tracing.with_processor(SimpleSpanProcessor(exporter)).tracer
    service = traced_methods(_Service(), tracer, "Shop")
    assert await service.work(21) == 42
    assert service.plain() == "not traced"
    assert [span.name for span in exporter.get_finished_spans()] == ["Shop.work"]
    assert service.calls == [21]
    untraced = _Service()
    assert traced_methods(untraced, None, "Shop") is untraced
    assert "work" not in vars(untraced)  # without a tracer, nothing is wrapped


@pytest.mark.parametrize(
    ("query", "name"),
    [
        ("SELECT outcome FROM settle_order($1, $2)", "SELECT settle_order"),
        ("SELECT id, email FROM users WHERE id = $1", "SELECT users"),
        ("INSERT INTO orders (id) VALUES ($1)", "INSERT orders"),
        ("UPDATE users SET is_admin = $2 WHERE id = $1", "UPDATE users"),
        ("BEGIN", "BEGIN"),
        ("COPY import_users_staging", "COPY import_users_staging"),
        ("\n  WITH gone AS (DELETE FROM idempotency_keys) SELECT 1", "WITH idempotency_keys"),
    ],
)
def test_sql_spans_are_named_by_statement_and_table(query: str, name: str) -> None:
    assert _span_name(query) == name
