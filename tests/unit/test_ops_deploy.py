"""The deployment files: structure, probes, ports, settings and grace periods.

The settings the manifests give the service are loaded through the service's own
`load_settings`, so a typo'd variable or an invalid JSON value fails here, not at
the first rollout. `docker compose config` runs too where the compose plugin is
installed (it needs no engine); this machine's docker client has none.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from service.entrypoints.app import shutdown_budget_s
from service.settings import ENV_PREFIX, Settings, load_settings

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
K8S = DEPLOY / "k8s"

API_VERSIONS = {
    "Deployment": "apps/v1",
    "Service": "v1",
    "ConfigMap": "v1",
    "Secret": "v1",
    "PodDisruptionBudget": "policy/v1",
}
SECRET_SETTINGS = {
    "PAYMENTS_MONGODB_URL",
    "PAYMENTS_KAFKA_SASL_PASSWORD",
    "PAYMENTS_ADMIN_KEYS",
    "PAYMENTS_PROVIDER_OPTIONS",
}


def _k8s_documents() -> list[dict[str, Any]]:
    documents: list[dict[str, Any]] = []
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        documents.extend(d for d in yaml.safe_load_all(path.read_text()) if d)
    return documents


def _one(documents: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [
        d
        for d in documents
        if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)
    ]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def _settings_from(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The service's settings for exactly these variables (the test's env cleared)."""
    for name in [n for n in os.environ if n.startswith(ENV_PREFIX)]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, str(value))
    return load_settings()


# -- Kubernetes -----------------------------------------------------------------------------


def test_k8s_kinds_and_api_versions() -> None:
    documents = _k8s_documents()
    kinds = {d["kind"] for d in documents}
    assert {"Deployment", "Service", "ConfigMap", "Secret"} <= kinds
    for document in documents:
        assert document["apiVersion"] == API_VERSIONS[document["kind"]], document["kind"]
        assert document["metadata"]["name"]
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    listed = set(kustomization["resources"])
    on_disk = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == on_disk


def test_deployment_probes_ports_and_security() -> None:
    documents = _k8s_documents()
    deployment = _one(documents, "Deployment")
    spec = deployment["spec"]
    pod = spec["template"]
    assert spec["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    (container,) = pod["spec"]["containers"]
    (port,) = container["ports"]
    assert port == {"name": "http", "containerPort": 8080, "protocol": "TCP"}

    def probe_port(probe: dict[str, Any]) -> Any:
        return probe["httpGet"]["port"]

    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["startupProbe"]["httpGet"]["path"] == "/healthz"
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        assert probe_port(container[probe]) in ("http", 8080)

    resources = container["resources"]
    assert {"cpu", "memory"} <= resources["requests"].keys()
    assert "memory" in resources["limits"]

    pod_security = pod["spec"]["securityContext"]
    assert pod_security["runAsNonRoot"] is True
    assert pod_security["runAsUser"] != 0
    container_security = container["securityContext"]
    assert container_security["allowPrivilegeEscalation"] is False
    assert container_security["readOnlyRootFilesystem"] is True
    assert container_security["capabilities"]["drop"] == ["ALL"]
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert "/tmp" in mounts  # writable scratch space on a read-only root

    service = _one(documents, "Service")
    assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    (service_port,) = service["spec"]["ports"]
    assert service_port["targetPort"] in ("http", 8080)


def test_deployment_settings_come_from_configmap_and_secret(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    documents = _k8s_documents()
    deployment = _one(documents, "Deployment")
    pod_spec = deployment["spec"]["template"]["spec"]
    (container,) = pod_spec["containers"]
    sources = container["envFrom"]
    config_name = next(s["configMapRef"]["name"] for s in sources if "configMapRef" in s)
    secret_name = next(s["secretRef"]["name"] for s in sources if "secretRef" in s)
    config = _one(documents, "ConfigMap", config_name)["data"]
    secret = _one(documents, "Secret", secret_name)["stringData"]
    # Secrets are in the Secret only.
    assert secret.keys() >= SECRET_SETTINGS
    assert not SECRET_SETTINGS & config.keys()
    assert all(name.startswith(ENV_PREFIX) for name in (*config, *secret))
    # Every secret volume the pod mounts exists.
    for volume in pod_spec["volumes"]:
        if "secret" in volume:
            _one(documents, "Secret", volume["secret"]["secretName"])

    env = {**config, **secret, **{e["name"]: e["value"] for e in container.get("env", [])}}
    settings = _settings_from(env, monkeypatch)
    assert settings.kafka_security_protocol == "SASL_SSL"
    assert settings.kafka_sasl_password is not None
    assert settings.http_port == 8080
    assert settings.mongodb_url is not None
    assert "replicaSet=" in settings.mongodb_url.get_secret_value()
    assert settings.log_format == "json"

    grace = pod_spec["terminationGracePeriodSeconds"]
    assert grace >= shutdown_budget_s(settings), (grace, shutdown_budget_s(settings))
    replicas = deployment["spec"]["replicas"]
    assert 1 <= replicas <= settings.topic_partitions


# -- docker compose ---------------------------------------------------------------------------


def _compose() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    return document


def _seconds(duration: str) -> float:
    match = re.fullmatch(r"(?:(\d+)m)?(?:(\d+)s)?", duration)
    assert match and duration, duration
    return int(match.group(1) or 0) * 60 + int(match.group(2) or 0)


def test_compose_services_and_healthchecks(monkeypatch: pytest.MonkeyPatch) -> None:
    services = _compose()["services"]
    assert {"kafka", "mongodb", "mongodb-init", "payments", "kafka-ui"} <= services.keys()

    kafka = services["kafka"]
    assert kafka["image"].startswith("apache/kafka:")
    assert "controller" in kafka["environment"]["KAFKA_PROCESS_ROLES"]  # KRaft
    assert not any("zookeeper" in str(v).lower() for v in kafka["environment"].values())
    assert "zookeeper" not in services

    mongodb = services["mongodb"]
    assert mongodb["image"].startswith("mongo:7")
    command = mongodb["command"]
    assert command[command.index("--replSet") + 1] == "rs0"
    init = services["mongodb-init"]
    assert "rs.initiate" in " ".join(init["entrypoint"])
    assert init["depends_on"]["mongodb"]["condition"] == "service_healthy"

    for name in ("kafka", "mongodb", "payments"):
        assert services[name]["healthcheck"]["test"], name

    payments = services["payments"]
    assert payments["build"]["context"] == ".."
    assert (DEPLOY.parent / payments["build"]["dockerfile"]).is_file()
    assert payments["depends_on"]["kafka"]["condition"] == "service_healthy"
    assert payments["depends_on"]["mongodb-init"]["condition"] == ("service_completed_successfully")
    assert "/readyz" in " ".join(payments["healthcheck"]["test"])
    assert "8080:8080" in payments["ports"]

    # Its environment is a valid configuration (defaults of ${VAR:-default} applied).
    env = {
        k: re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", str(v))
        for k, v in payments["environment"].items()
    }
    settings = _settings_from(env, monkeypatch)
    assert settings.kafka_bootstrap_servers == "kafka:9092"
    assert settings.mongodb_url is not None
    assert "replicaSet=rs0" in settings.mongodb_url.get_secret_value()
    assert _seconds(payments["stop_grace_period"]) >= shutdown_budget_s(settings)

    assert services["kafka-ui"]["profiles"] == ["ui"]
    assert "profiles" not in payments


def test_compose_config_where_the_plugin_exists() -> None:
    """`docker compose config` validates the file against the real schema. The
    compose plugin is optional; where it is missing this test still proves the
    file is YAML that names an existing Dockerfile."""
    compose = _compose()
    assert (DEPLOY / "Dockerfile").is_file()
    assert compose["name"] == "payments"
    docker = shutil.which("docker")
    has_plugin = (
        docker is not None
        and subprocess.run(
            [docker, "compose", "version"], capture_output=True, timeout=30, check=False
        ).returncode
        == 0
    )
    if has_plugin:
        assert docker is not None
        result = subprocess.run(
            [docker, "compose", "-f", str(DEPLOY / "docker-compose.yml"), "config", "--quiet"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, result.stderr


# -- Dockerfile -------------------------------------------------------------------------------


def _stages() -> list[list[str]]:
    """The Dockerfile's instructions (continuations joined), split by stage."""
    text = (DEPLOY / "Dockerfile").read_text()
    logical = re.sub(r"\\\n", " ", text)
    lines = [ln.strip() for ln in logical.splitlines() if ln.strip() and not ln.startswith("#")]
    stages: list[list[str]] = []
    for line in lines:
        if line.upper().startswith("FROM "):
            stages.append([])
        if stages:
            stages[-1].append(line)
    return stages


def test_dockerfile_is_multi_stage_non_root_without_build_tools() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    assert "ARG PYTHON_IMAGE=python:3.11-slim" in text
    builder, runtime = _stages()
    assert builder[0] == "FROM ${PYTHON_IMAGE} AS builder"
    assert runtime[0] == "FROM ${PYTHON_IMAGE} AS runtime"
    assert any("pip wheel" in line for line in builder)
    assert any("from=builder" in line for line in runtime)
    assert not any("pip wheel" in line or "COPY service" in line for line in runtime)
    assert not any(
        re.search(r"\b(gcc|build-essential|apt-get install|make)\b", line) for line in runtime
    )
    users = [line.split(None, 1)[1] for line in runtime if line.startswith("USER ")]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    assert runtime[-1] == 'ENTRYPOINT ["payments", "run"]'
    assert any(line.startswith("HEALTHCHECK") and "/healthz" in line for line in runtime)
    assert any(line.startswith("EXPOSE 8080") for line in runtime)
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
    assert "*" in ignore  # everything excluded, then only what the wheel needs
    assert {"!pyproject.toml", "!README.md", "!schemas/", "!service/"} <= set(ignore)
