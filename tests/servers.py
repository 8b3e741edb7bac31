"""Real servers for the end-to-end tests: the API (uvicorn, or `facegate serve` as `LiveServer`),
the UI (streamlit) and nginx.

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
import psutil

from facegate.config import Settings
from tests.data import REPO

logger = logging.getLogger(__name__)

NGINX_TEMPLATE = REPO / "deploy" / "nginx.conf"
UI_SCRIPT = REPO / "src" / "facegate" / "ui" / "app.py"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
# The browser of the end-to-end tests (Debian's package), driven by Playwright.
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

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


def launch(
    command: list[str], log: Path, env: Mapping[str, str], *, append: bool = False
) -> subprocess.Popen[bytes]:
    """Start `command` in its own session, its output into `log` (after what is there, with `append`).

    Its cwd is the log's folder, so no stray `.env` is read: with `clean_env`, the server under test
    sees only the settings the test gives it.
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab" if append else "wb") as sink:
        return subprocess.Popen(
            command,
            cwd=log.parent,
            env=dict(env),
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


@contextmanager
def child(name: str, command: list[str], log_dir: Path, env: Mapping[str, str]) -> Iterator[Child]:
    """Run `command` (see `launch`), logging into `log_dir`; stopped when the block ends."""
    log = log_dir / f"{name}.log"
    process = launch(command, log, env)
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
def service_data_dir(prefix: str) -> Iterator[Path]:
    """A temporary folder for a service's data (its embedded PostgreSQL), outside pytest's folder,
    deleted afterwards.

    As root, pgserver runs PostgreSQL as a `pgserver` user that must traverse the parent folders,
    and every pytest session that starts makes /tmp/pytest-of-root private again (0700) and
    deletes older sessions' folders, even while a parallel session still uses them.
    """
    data = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield data
    finally:
        shutil.rmtree(data, ignore_errors=True)


@contextmanager
def api_server(work: Path, token: str, root_path: str = "", **settings: str) -> Iterator[str]:
    """The API with its own embedded PostgreSQL (plus `settings`, env var names as keywords); yields
    its base URL. Its log goes to `work`."""
    with api_process(work, token, root_path, address_space=None, **settings) as (url, _):
        yield url


@contextmanager
def api_process(
    work: Path, token: str, root_path: str = "", address_space: int | None = None, **settings: str
) -> Iterator[tuple[str, Child]]:
    """`api_server`, yielding its process too; `address_space`: the bytes of virtual memory it (and
    the PostgreSQL it starts) may map, so that a runaway request fails there, not the machine.
    Its database lives in a `service_data_dir`."""
    port = free_port()
    limit = [] if address_space is None else ["prlimit", f"--as={address_space}", "--"]  # it execs: same pid
    command = [
        *limit, sys.executable, "-m", "uvicorn", "--factory", "facegate.api.app:create_app",
        "--host", "127.0.0.1", "--port", str(port),
    ]  # fmt: skip
    with service_data_dir("facegate-test-api-") as data:
        env = clean_env(APP_TOKEN=token, FACEGATE_DATA_DIR=str(data), API_ROOT_PATH=root_path, **settings)
        with child("api", command, work, env) as server:
            url = f"http://127.0.0.1:{port}"
            wait_until_up(f"{url}/health", server, API_START_TIMEOUT)
            yield url, server


class LiveServer:
    """`facegate serve` in a child process (see `launch`), with `env` over `clean_env()`; a context
    manager. Unlike `api_server` it can be stopped with any signal and started again on the same port
    and data (its log continues), and runs the `serve` command's supervisor and workers."""

    def __init__(
        self, env: Mapping[str, str], log_path: Path, port: int | None = None, workers: int = 1
    ) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = clean_env(**env)
        self.log_path = log_path
        self.workers = workers
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def process(self) -> subprocess.Popen[bytes]:
        """The process of the latest `start`."""
        if self._process is None:
            raise RuntimeError("the server was never started")
        return self._process

    def start(self, timeout: float = API_START_TIMEOUT) -> LiveServer:
        command = [sys.executable, "-m", "facegate", "serve", "--port", str(self.port)]
        command += ["--workers", str(self.workers)]
        self._process = launch(command, self.log_path, self.env, append=True)  # a restart's log follows
        try:
            wait_until_up(f"{self.url}/health", Child("facegate serve", self.process, self.log_path), timeout)
        except RuntimeError:
            self.stop()
            raise
        return self

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self._process is not None:
            stop(self._process, "facegate serve", sig)

    def __enter__(self) -> LiveServer:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()


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


def postmasters(data_dir: Path) -> list[psutil.Process]:
    """The PostgreSQL servers running on `data_dir`'s database (their command line names it)."""
    pgdata = str(data_dir.resolve() / "pg")
    found = []
    for process in psutil.process_iter(["name", "cmdline"]):
        command = process.info["cmdline"] or []
        if process.info["name"] == "postgres" and "-D" in command and pgdata in command:
            found.append(process)
    return found


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
