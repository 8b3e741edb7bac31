"""The service as users run it: `facegate serve`, the embedded database it starts, real HTTP."""

from __future__ import annotations

import signal
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import psutil
import pytest

from tests.data import FACES
from tests.servers import (
    API_START_TIMEOUT,
    LiveServer,
    child,
    clean_env,
    free_port,
    postmasters,
    wait_until_up,
)

KEY = "live-test-key"
OBAMA = FACES / "portraits" / "Barack_Obama"


def server(data_dir: Path, tmp_path: Path) -> LiveServer:
    # Room for all 20 parallel requests in the inference queue: these tests are about the
    # gallery, and the queue bound has its own tests (test_faults.py).
    env = {"APP_TOKEN": KEY, "FACEGATE_DATA_DIR": str(data_dir), "MAX_INFERENCE_QUEUE": "32"}
    return LiveServer(env, tmp_path / "server.log")


def register(url: str, name: str, photo: Path) -> httpx.Response:
    return httpx.post(
        f"{url}/register",
        headers={"X-API-Key": KEY},
        data={"name": name},
        files={"image": (photo.name, photo.read_bytes())},
        timeout=120,
    )


@pytest.mark.slow
def test_parallel_registrations_of_one_name_give_one_success(data_dir: Path, tmp_path: Path) -> None:
    photo = OBAMA / "fr_obama_small.jpg"
    with server(data_dir, tmp_path) as live, ThreadPoolExecutor(20) as pool:
        codes = sorted(pool.map(lambda _: register(live.url, "Barack Obama", photo).status_code, range(20)))
        users = httpx.get(f"{live.url}/users", headers={"X-API-Key": KEY}).json()
    assert codes == [201] + [409] * 19
    assert users["total"] == 1 and users["users"][0]["face_count"] == 1


@pytest.mark.slow
def test_registrations_survive_a_restart_on_the_embedded_database(data_dir: Path, tmp_path: Path) -> None:
    with server(data_dir, tmp_path) as live:
        assert register(live.url, "Barack Obama", OBAMA / "fr_obama.jpg").status_code == 201
    assert (data_dir / "pg" / "PG_VERSION").is_file()  # the database lives in the data directory
    with server(data_dir, tmp_path) as live:
        photo = OBAMA / "fr_obama2.jpg"
        response = httpx.post(
            f"{live.url}/recognize",
            headers={"X-API-Key": KEY},
            files={"image": (photo.name, photo.read_bytes())},
            timeout=120,
        )
    assert response.status_code == 200
    assert response.json()["matched_user"]["name"] == "Barack Obama"


def test_serve_generates_a_key_when_none_is_set(data_dir: Path, tmp_path: Path) -> None:
    env = {"APP_TOKEN": "", "FACEGATE_DATA_DIR": str(data_dir)}  # no key set anywhere: it generates one
    with LiveServer(env, tmp_path / "server.log") as live:
        key = (data_dir / "api_key").read_text().strip()
        assert len(key) >= 32
        assert (data_dir / "api_key").stat().st_mode & 0o077 == 0  # readable by its owner only
        assert httpx.get(f"{live.url}/stats", headers={"X-API-Key": key}).status_code == 200
        assert httpx.get(f"{live.url}/stats", headers={"X-API-Key": "guess"}).status_code == 401
        assert len(postmasters(data_dir)) == 1
    # One worker serves in the `facegate serve` process itself: its SIGTERM stops the database too.
    assert live.process.returncode == 128 + signal.SIGTERM
    assert postmasters(data_dir) == []


def test_the_app_under_plain_uvicorn_stops_the_database_it_started(data_dir: Path, tmp_path: Path) -> None:
    port = free_port()
    env = clean_env(APP_TOKEN=KEY, FACEGATE_DATA_DIR=str(data_dir))
    app = "facegate.api.app:create_app"
    command = [sys.executable, "-m", "uvicorn", "--factory", app, "--port", str(port)]
    with child("uvicorn", command, tmp_path, env) as server:
        wait_until_up(f"http://127.0.0.1:{port}/health", server, API_START_TIMEOUT)
        assert len(postmasters(data_dir)) == 1
    # uvicorn re-raises the SIGTERM after its shutdown, which skips exit hooks: the app's shutdown
    # has to have stopped the server already.
    assert postmasters(data_dir) == []


@pytest.mark.slow
def test_two_workers_share_one_embedded_database(data_dir: Path, tmp_path: Path) -> None:
    env = {"APP_TOKEN": KEY, "FACEGATE_DATA_DIR": str(data_dir)}
    with LiveServer(env, tmp_path / "server.log", workers=2) as live, ThreadPoolExecutor(4) as pool:
        assert register(live.url, "Barack Obama", OBAMA / "fr_obama.jpg").status_code == 201
        # Every worker sees the registration: there is one database, not one per worker.
        users = pool.map(lambda _: httpx.get(f"{live.url}/users", headers={"X-API-Key": KEY}), range(8))
        assert {response.json()["total"] for response in users} == {1}
        assert len(postmasters(data_dir)) == 1
        workers = psutil.Process(live.process.pid).children()
        assert len([w for w in workers if "spawn_main" in " ".join(w.cmdline())]) == 2
    assert postmasters(data_dir) == []  # `facegate serve` stopped it on the way out
