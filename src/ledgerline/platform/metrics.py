"""Prometheus metrics, in a registry owned by the application instance (no
process-global registry: tests and several apps in one process stay apart)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class _Answered:
    """A count and a latency histogram of answers over the same labels. Label
    lookups cost more than the increments, and the label values (methods,
    routes, status codes) are few, so each one's children are kept."""

    def __init__(
        self,
        registry: CollectorRegistry,
        prefix: str,
        labels: tuple[str, ...],
        *,
        count_help: str,
        latency_help: str,
    ) -> None:
        self.requests = Counter(f"{prefix}_requests_total", count_help, labels, registry=registry)
        self.latency = Histogram(
            f"{prefix}_request_duration_seconds",
            latency_help,
            labels,
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self._children: dict[tuple[object, ...], tuple[Counter, Histogram]] = {}

    def observe(self, key: tuple[object, ...], seconds: float) -> None:
        children = self._children.get(key)
        if children is None:
            labels = tuple(str(value) for value in key)
            children = (self.requests.labels(*labels), self.latency.labels(*labels))
            self._children[key] = children
        children[0].inc()
        children[1].observe(seconds)


class HTTPMetrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._answered = _Answered(
            self.registry,
            "ledgerline_http",
            ("method", "route", "status"),
            count_help="HTTP requests answered, by method, route template and status.",
            latency_help="HTTP request latency, by method, route template and status.",
        )

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        self._answered.observe((method, route, status), seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class GRPCMetrics:
    """Per method and status code; registered beside the HTTP metrics so
    that one scrape of /metrics sees both transports of the process."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._answered = _Answered(
            registry,
            "ledgerline_grpc",
            ("method", "code"),
            count_help="gRPC calls answered, by full method name and status code.",
            latency_help="gRPC call latency, by full method name and status code.",
        )

    def observe(self, method: str, code: str, seconds: float) -> None:
        self._answered.observe((method, code), seconds)
