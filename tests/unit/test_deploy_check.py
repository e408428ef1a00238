"""deploy.check: the repository's deployment files pass, and each kind of
mistake in them is caught, naming what is wrong."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from deploy.check import (
    ROOT,
    Check,
    check_alert_rules,
    check_compose,
    check_dashboard,
    check_dockerfile,
    check_kubernetes,
    check_runtime_lock,
    defined_metrics,
    github_anchors,
)

DEFINED = defined_metrics(ROOT / "src")

CHECKS: dict[str, Callable[[Path], Check]] = {
    "dockerfile": check_dockerfile,
    "runtime-lock": check_runtime_lock,
    "compose": check_compose,
    "kubernetes": check_kubernetes,
    "alerts": lambda root: check_alert_rules(root, DEFINED),
    "dashboard": lambda root: check_dashboard(root, DEFINED),
}
COPIED = [
    "docker",
    "deploy",
    "docs/operations.md",
    ".dockerignore",
    "pyproject.toml",
    "requirements.lock",
    "requirements-runtime.lock",
]


@pytest.fixture
def repository(tmp_path: Path) -> Path:
    """A copy of the files the checks read."""
    for name in COPIED:
        source, target = ROOT / name, tmp_path / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(source, target)
    return tmp_path


def test_the_tracked_metric_names_include_those_of_the_code() -> None:
    assert {
        "ledgerline_http_requests",
        "ledgerline_grpc_request_duration_seconds",
        "ledgerline_outbox_dead_events",
        "ledgerline_worker_pool_busy",
    } <= DEFINED


@pytest.mark.parametrize("name", list(CHECKS), ids=list(CHECKS))
def test_the_repository_passes(repository: Path, name: str) -> None:
    check = CHECKS[name](repository)
    assert check.problems == []


def edit(path: str, old: str, new: str, count: int = 1) -> Callable[[Path], None]:
    def apply(root: Path) -> None:
        file = root / path
        text = file.read_text()
        assert old in text, f"{old!r} is not in {path}"
        file.write_text(text.replace(old, new, count))

    return apply


def add_file(path: str, text: str) -> Callable[[Path], None]:
    def apply(root: Path) -> None:
        (root / path).write_text(text)

    return apply


K8S = "deploy/k8s"
MISTAKES = {
    "dockerfile-root-user": (
        "dockerfile",
        edit("docker/Dockerfile", "USER 10001:10001", "USER root"),
        "non-root USER",
    ),
    "dockerfile-stop-signal": (
        "dockerfile",
        edit("docker/Dockerfile", "STOPSIGNAL SIGTERM", "STOPSIGNAL SIGINT"),
        "STOPSIGNAL must be SIGTERM",
    ),
    "dockerfile-unlocked-install": (
        "dockerfile",
        edit("docker/Dockerfile", "uv pip sync --require-hashes", "uv pip install -r"),
        "uv pip sync --require-hashes",
    ),
    "dockerignore-hides-a-copied-file": (
        "dockerfile",
        edit(".dockerignore", "!migrations/\n", ""),
        "keeps `migrations` out",
    ),
    "runtime-lock-drifted": (
        "runtime-lock",
        edit("requirements-runtime.lock", "alembic==", "alembic==0.0.1\n# was "),
        "differs from requirements.lock",
    ),
    "compose-serve-before-migrate": (
        "compose",
        edit(
            "docker/compose.yaml",
            "condition: service_completed_successfully",
            "condition: service_started",
        ),
        "serve must start once migrate completed successfully",
    ),
    "compose-not-the-schema": (
        "compose",
        edit("docker/compose.yaml", "condition: service_healthy", "condition: healthy"),
        "the Compose specification's schema",
    ),
    "compose-mounts-a-missing-file": (
        "compose",
        edit("docker/compose.yaml", "./otel-collector.yaml:", "./otel.yaml:"),
        "mounts ./otel.yaml, which does not exist",
    ),
    "compose-unknown-setting": (
        "compose",
        edit("docker/compose.yaml", "LEDGERLINE_LOG_FORMAT: json", "LEDGERLINE_LOG_FMT: json"),
        "serve: LEDGERLINE_LOG_FMT is not a setting of config.py",
    ),
    "compose-refused-setting": (
        "compose",
        edit(
            "docker/compose.yaml",
            'LEDGERLINE_SHUTDOWN_DRAIN_SECONDS: "1"',
            'LEDGERLINE_SHUTDOWN_DRAIN_SECONDS: "-1"',
        ),
        "worker: LEDGERLINE_SHUTDOWN_DRAIN_SECONDS",
    ),
    "compose-bad-tracing-variable": (
        "compose",
        edit(
            "docker/compose.yaml",
            "OTEL_TRACES_SAMPLER: parentbased_traceidratio",
            "OTEL_TRACES_SAMPLER: sometimes",
        ),
        "serve: OTEL_TRACES_SAMPLER",
    ),
    "compose-tracing-off": (
        "compose",
        edit("docker/compose.yaml", "OTEL_TRACES_EXPORTER: otlp", "OTEL_TRACES_EXPORTER: none"),
        "worker: the OTEL_* variables configure the exporters [], not ['otlp']",
    ),
    "k8s-setting-left-out": (
        "kubernetes",
        edit(f"{K8S}/configmap.yaml", '  LEDGERLINE_HASH_WORKERS: "2"\n', ""),
        "LEDGERLINE_HASH_WORKERS is in neither the ConfigMap nor",
    ),
    "k8s-bad-setting-value": (
        "kubernetes",
        edit(
            f"{K8S}/configmap.yaml", 'LEDGERLINE_HTTP_PORT: "8000"', 'LEDGERLINE_HTTP_PORT: "70000"'
        ),
        "the ConfigMap: LEDGERLINE_HTTP_PORT",
    ),
    "k8s-credential-in-configmap": (
        "kubernetes",
        edit(f"{K8S}/configmap.yaml", "\ndata:\n", "\ndata:\n  LEDGERLINE_JWT_SECRET: x\n"),
        "LEDGERLINE_JWT_SECRET holds credentials",
    ),
    "k8s-grace-period-too-short": (
        "kubernetes",
        edit(
            f"{K8S}/serve-deployment.yaml",
            "terminationGracePeriodSeconds: 45",
            "terminationGracePeriodSeconds: 30",
        ),
        "serve's terminationGracePeriodSeconds must be at least 37",
    ),
    "k8s-writable-root": (
        "kubernetes",
        edit(
            f"{K8S}/worker-deployment.yaml",
            "readOnlyRootFilesystem: true",
            "readOnlyRootFilesystem: false",
        ),
        "worker/worker: the root filesystem must be read-only",
    ),
    "k8s-liveness-on-readyz": (
        "kubernetes",
        edit(f"{K8S}/serve-deployment.yaml", "path: /healthz", "path: /readyz"),
        "liveness probe must be GET /healthz",
    ),
    "k8s-unknown-field": (
        "kubernetes",
        edit(f"{K8S}/serve-hpa.yaml", "minReplicas: 2", "minReplica: 2"),
        "HorizontalPodAutoscaler/ledgerline-serve",
    ),
    "k8s-file-not-listed": (
        "kubernetes",
        add_file(f"{K8S}/extra.yaml", "apiVersion: v1\nkind: ConfigMap\n"),
        "the directory has",
    ),
    "alert-without-for": (
        "alerts",
        edit("deploy/prometheus/alerts.yml", "        for: 1m\n", ""),
        "LedgerlineOutboxDeadEvents: `for` must be a duration",
    ),
    "alert-runbook-missing": (
        "alerts",
        edit("deploy/prometheus/alerts.yml", "#ledgerlineoutboxlag", "#outbox-lag"),
        "is not a section of docs/operations.md",
    ),
    "alert-unknown-metric": (
        "alerts",
        edit(
            "deploy/prometheus/alerts.yml",
            "max(ledgerline_outbox_dead_events)",
            "max(ledgerline_outbox_dead)",
        ),
        "LedgerlineOutboxDeadEvents uses metrics nothing defines: ['ledgerline_outbox_dead']",
    ),
    "dashboard-unknown-metric": (
        "dashboard",
        edit(
            "deploy/grafana/ledgerline.json",
            "ledgerline_worker_pool_busy",
            "ledgerline_worker_pool_bsy",
        ),
        "metrics nothing defines: ['ledgerline_worker_pool_bsy']",
    ),
    "dashboard-panel-without-datasource": (
        "dashboard",
        edit("deploy/grafana/ledgerline.json", '"type": "prometheus"', '"type": "loki"'),
        "needs a Prometheus datasource",
    ),
}


@pytest.mark.parametrize(("check", "mistake", "problem"), MISTAKES.values(), ids=list(MISTAKES))
def test_a_mistake_is_caught(
    repository: Path, check: str, mistake: Callable[[Path], None], problem: str
) -> None:
    mistake(repository)
    problems = CHECKS[check](repository).problems
    assert any(problem in found for found in problems), problems


def test_without_kubectl_each_listed_file_is_validated(
    repository: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_which = shutil.which
    monkeypatch.setattr(
        "deploy.check.shutil.which", lambda name: None if name == "kubectl" else real_which(name)
    )
    passed = check_kubernetes(repository)
    assert (passed.notes, passed.problems) == (
        ["no kubectl: validated the listed files as they are"],
        [],
    )
    edit(f"{K8S}/worker-deployment.yaml", "replicas: 2", "replicas: two")(repository)
    check = check_kubernetes(repository)
    assert [p for p in check.problems if "Deployment/ledgerline-worker" in p] != []


def test_anchors_are_those_github_makes() -> None:
    markdown = "# Scaling out\n## `LedgerlineOutboxLag`\n### Rotate the JWT secret (HS256)"
    assert github_anchors(markdown) == {
        "scaling-out",
        "ledgerlineoutboxlag",
        "rotate-the-jwt-secret-hs256",
    }
