"""Real servers for the end-to-end tests: the API (uvicorn), the UI (streamlit) and nginx.

Each runs as a child process on a free loopback port, logs into the test's temporary folder and is
stopped by its pid when the `with` block ends. A server that does not come up fails the test with
the tail of its log.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from facegate.config import Settings
from tests.data import REPO

logger = logging.getLogger(__name__)

NGINX_TEMPLATE = REPO / "deploy" / "nginx.conf"
UI_SCRIPT = REPO / "src" / "facegate" / "ui" / "app.py"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"

# The API loads its models, starts its embedded PostgreSQL and may convert a model first.
API_START_TIMEOUT = 300.0
START_TIMEOUT = 60.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# Servers under test have no rate limit unless a test sets one: how many requests a test sends
# within the default burst depends on how fast the machine is.
UNLIMITED = {"RATE_LIMIT_PER_MINUTE": "0"}


def clean_env(**overrides: str) -> dict[str, str]:
    """This process's environment without any FaceGate setting, plus `UNLIMITED` and `overrides`.

    A developer's DATABASE_URL or APP_TOKEN must not leak into the servers under test.
    """
    env = {k: v for k, v in os.environ.items() if k.lower() not in Settings.model_fields}
    env.update(UNLIMITED)
    env.update(overrides)
    return env


@dataclass(frozen=True)
class Child:
    name: str
    process: subprocess.Popen[bytes]
    log: Path

    def log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:] if self.log.exists() else "(no log)"


@contextmanager
def child(name: str, command: list[str], log_dir: Path, env: Mapping[str, str]) -> Iterator[Child]:
    """Run `command` in its own session (its cwd is `log_dir`, so no stray `.env` is read)."""
    log_dir.mkdir(parents=True, exist_ok=True)
    log = log_dir / f"{name}.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            command, cwd=log_dir, env=dict(env), stdout=sink, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        yield Child(name, process, log)
    finally:
        stop(process, name)


def stop(process: subprocess.Popen[bytes], name: str, sig: int = signal.SIGTERM) -> None:
    """Send `sig` and wait for the process to exit; kill it if it has not within 30 s."""
    if process.poll() is not None:
        return
    process.send_signal(sig)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        logger.warning("%s (pid %d) ignored signal %d; killing it", name, process.pid, sig)
        process.kill()
        process.wait()


def wait_until_up(url: str, server: Child, timeout: float, *, any_status: bool = False) -> None:
    """Poll `url` until it answers 2xx (any status with `any_status`).

    Fails with the server's log as soon as the server exits, or when it does not answer in time.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"{server.name} exited with {server.process.returncode}:\n{server.log_tail()}")
        try:
            response = httpx.get(url, timeout=2.0)
            if any_status or response.is_success:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"{url} did not come up within {timeout:.0f} s; {server.log}:\n{server.log_tail()}")


@contextmanager
def api_server(work: Path, token: str, root_path: str = "", **settings: str) -> Iterator[str]:
    """The API with its own embedded PostgreSQL (plus `settings`, env var names as keywords); yields
    its base URL. Its log goes to `work`."""
    with api_process(work, token, root_path, **settings) as (url, _):
        yield url


@contextmanager
def api_process(
    work: Path, token: str, root_path: str = "", address_space: int | None = None, **settings: str
) -> Iterator[tuple[str, Child]]:
    """`api_server`, yielding its process too; `address_space`: the bytes of virtual memory it (and
    the PostgreSQL it starts) may map, so that a runaway request fails there, not the machine.

    The database lives outside pytest's folder: as root, pgserver runs PostgreSQL as a `pgserver`
    user that must traverse the parent folders, and every pytest session that starts makes
    /tmp/pytest-of-root private again (0700), which breaks a concurrent session's server.
    """
    data = Path(tempfile.mkdtemp(prefix="facegate-test-api-"))
    port = free_port()
    env = clean_env(APP_TOKEN=token, FACEGATE_DATA_DIR=str(data), API_ROOT_PATH=root_path, **settings)
    limit = [] if address_space is None else ["prlimit", f"--as={address_space}", "--"]  # it execs: same pid
    command = [
        *limit, sys.executable, "-m", "uvicorn", "--factory", "facegate.api.app:create_app",
        "--host", "127.0.0.1", "--port", str(port),
    ]  # fmt: skip
    try:
        with child("api", command, work, env) as server:
            url = f"http://127.0.0.1:{port}"
            wait_until_up(f"{url}/health", server, API_START_TIMEOUT)
            yield url, server
    finally:
        shutil.rmtree(data, ignore_errors=True)


@contextmanager
def ui_server(work: Path, api_url: str, token: str, port: int, browser_api_url: str = "") -> Iterator[str]:
    """The Streamlit UI on `port`, talking to `api_url` (the browser to `browser_api_url`, empty: the
    same); yields its base URL."""
    env = clean_env(
        API_URL=api_url,
        APP_TOKEN=token,
        FACEGATE_DATA_DIR=str(work / "ui-data"),
        UI_BROWSER_API_URL=browser_api_url,
    )
    command = [
        sys.executable, "-m", "streamlit", "run", str(UI_SCRIPT),
        "--server.address", "127.0.0.1", "--server.port", str(port), "--server.headless", "true",
        "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none",
        "--server.maxUploadSize", "20", "--client.toolbarMode", "viewer",
    ]  # fmt: skip
    with child("ui", command, work, env) as server:
        url = f"http://127.0.0.1:{port}"
        wait_until_up(f"{url}/_stcore/health", server, START_TIMEOUT)
        yield url


def render_nginx_template(values: Mapping[str, str]) -> str:
    """`deploy/nginx.conf` with its ${NAME} placeholders filled, as the nginx image's envsubst does."""
    text = NGINX_TEMPLATE.read_text()
    wanted = set(re.findall(r"\$\{(\w+)\}", text))
    if missing := wanted - set(values):
        raise KeyError(f"no value for the placeholders {sorted(missing)}")
    return re.sub(r"\$\{(\w+)\}", lambda m: values[m.group(1)], text)


def nginx_main_config(work: Path, values: Mapping[str, str]) -> Path:
    """A whole nginx.conf around the project's server block filled with `values`, paths inside `work`.

    The wrapper stands in for the nginx image's own /etc/nginx/nginx.conf, so nothing under /etc or
    /var is touched; `user root` because the temporary folder is private to this user.
    """
    work.mkdir(parents=True, exist_ok=True)
    server = work / "facegate.conf"
    server.write_text(render_nginx_template(values))
    main = work / "nginx.conf"
    main.write_text(
        f"""
        {"user root;" if os.geteuid() == 0 else ""}
        daemon off;
        worker_processes 1;
        pid {work}/nginx.pid;
        error_log {work}/error.log info;
        events {{ worker_connections 256; }}
        http {{
            include /etc/nginx/mime.types;
            access_log {work}/access.log;
            client_body_temp_path {work}/client_body;
            proxy_temp_path {work}/proxy;
            fastcgi_temp_path {work}/fastcgi;
            uwsgi_temp_path {work}/uwsgi;
            scgi_temp_path {work}/scgi;
            include {server};
        }}
        """
    )
    return main


@contextmanager
def nginx_server(work: Path, port: int, api: str, ui: str) -> Iterator[str]:
    """nginx on `port` with the project's config in front of `api` and `ui` (host:port); yields its URL.

    It is ready once it answers at all: the upstreams may start later, or never (a test of its 502).
    """
    values = {
        "NGINX_PORT": f"127.0.0.1:{port}",
        "NGINX_RESOLVER": "127.0.0.1",  # never asked: the upstreams are addresses, not names
        "API_UPSTREAM": api,
        "UI_UPSTREAM": ui,
    }
    config = nginx_main_config(work / "nginx", values)
    # -e: the start-up error log, before the config's own error_log applies (nginx >= 1.19.5).
    command = [NGINX, "-c", str(config), "-e", str(work / "nginx" / "startup.log")]
    with child("nginx", command, work, clean_env()) as server:
        url = f"http://127.0.0.1:{port}"
        wait_until_up(f"{url}/", server, START_TIMEOUT, any_status=True)
        yield url
