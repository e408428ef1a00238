"""FastAPI's own OpenTelemetry support stays off: the request envelope makes
the one server span of a request. Were FastAPI's on, a process with a global
tracer provider (one run under `opentelemetry-instrument`, say) would get a
second server span for every request, and untraced paths (the probes) would
be traced. Run in a child interpreter: a global tracer provider can be set
only once in a process."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.timeout(120)

_CHILD = textwrap.dedent(
    """
    import asyncio, sys
    import httpx
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from ledgerline.main.core import Core
    from ledgerline.main.runtime import Runtime
    from ledgerline.main.serve import http_app
    from tests.integration.conftest import JWT_SECRET, cheap_settings

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)

    async def main() -> None:
        async with Core(cheap_settings(), Runtime(sys.argv[1], JWT_SECRET)) as core:
            transport = httpx.ASGITransport(app=http_app(core))
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                assert (await client.get("/v1/users/me")).status_code == 401
                assert (await client.get("/healthz")).status_code == 200
                assert (await client.get("/openapi.json")).status_code == 200
        # The global provider works: a span of the child's own is exported.
        with trace.get_tracer("check").start_as_current_span("the child's own"):
            pass
        print(sorted(span.name for span in exporter.get_finished_spans()))

    asyncio.run(main())
    """
)


def test_a_global_tracer_provider_gets_no_span_from_the_framework(database_url: str) -> None:
    child = subprocess.run(
        [sys.executable, "-c", _CHILD, database_url],
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
        env={**os.environ, "PYTHONPATH": os.getcwd()},
    )
    assert child.returncode == 0, child.stderr
    assert child.stdout.strip().splitlines()[-1] == '["the child\'s own"]', child.stdout
