"""Connection hygiene of `facegate serve` over real sockets: stalled requests, the connection cap, and
a supervisor killed with SIGKILL."""

from __future__ import annotations

import selectors
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from tests.servers import LiveServer

KEY = "connections-test-key"
HEADER_TIMEOUT = 4.0
MAX_CONNECTIONS = 230
PARTIAL = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: "  # the headers never end


def environment(data: Path, **extra: str) -> dict[str, str]:
    """The service's settings over `LiveServer`'s clean environment: its embedded database in `data`."""
    return {"APP_TOKEN": KEY, "FACEGATE_DATA_DIR": str(data), **extra}


@pytest.fixture
def guarded(data_dir: Path, tmp_path: Path) -> Iterator[LiveServer]:
    env = environment(data_dir, HEADER_TIMEOUT=str(HEADER_TIMEOUT), MAX_CONNECTIONS=str(MAX_CONNECTIONS))
    with LiveServer(env, tmp_path / "server.log") as live:
        yield live


def stalled(port: int, count: int, payload: bytes = PARTIAL) -> list[socket.socket]:
    sockets = []
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        sock.sendall(payload)
        sockets.append(sock)
    return sockets


def wait_closed(sockets: list[socket.socket], within: float) -> dict[socket.socket, float]:
    """When the server closed each socket (EOF or reset), waiting at most `within` seconds."""
    started = time.monotonic()
    closed: dict[socket.socket, float] = {}
    with selectors.DefaultSelector() as selector:
        for sock in sockets:
            sock.setblocking(False)
            selector.register(sock, selectors.EVENT_READ)
        while len(closed) < len(sockets) and time.monotonic() - started < within:
            for key, _ in selector.select(timeout=0.5):
                sock = key.fileobj
                try:
                    data = sock.recv(4096)
                except ConnectionResetError:
                    data = b""
                assert data == b"", f"the server answered a request it never got whole: {data[:80]!r}"
                closed[sock] = time.monotonic() - started
                selector.unregister(sock)
    return closed


def close_all(sockets: list[socket.socket]) -> None:
    for sock in sockets:
        sock.close()


def test_stalled_partial_requests_are_closed_within_the_header_timeout(guarded: LiveServer) -> None:
    sockets = stalled(guarded.port, 199) + stalled(guarded.port, 1, payload=b"")  # and one that says nothing
    try:
        closed = wait_closed(sockets, within=HEADER_TIMEOUT + 15)
        assert len(closed) == len(sockets), f"{len(sockets) - len(closed)} of {len(sockets)} still open"
    finally:
        close_all(sockets)
    assert httpx.get(f"{guarded.url}/health", timeout=10).status_code == 200  # and it still serves


def test_connections_past_the_cap_are_closed_at_once(guarded: LiveServer) -> None:
    held = stalled(guarded.port, MAX_CONNECTIONS)
    try:
        extra = stalled(guarded.port, 10)
        try:
            closed = wait_closed(extra, within=HEADER_TIMEOUT + 15)
            assert len(closed) == len(extra)
            # Closed for the cap, not by the header deadline: the held ones are still open.
            still_open = [sock for sock in held if not wait_closed([sock], within=0)]
            assert len(still_open) >= MAX_CONNECTIONS - 5, "the extra ones were closed only by the deadline"
        finally:
            close_all(extra)
        assert len(wait_closed(held, within=HEADER_TIMEOUT + 15)) == len(held)
    finally:
        close_all(held)
    assert httpx.get(f"{guarded.url}/health", timeout=10).status_code == 200


def serving(url: str) -> bool:
    try:
        httpx.get(f"{url}/health", timeout=2)
    except httpx.TransportError:
        return False
    return True


@pytest.mark.slow
def test_workers_exit_with_a_killed_supervisor_and_a_restart_succeeds(data_dir: Path, tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    first = LiveServer(environment(data_dir), log, workers=2).start()
    children = psutil.Process(first.process.pid).children()
    workers = [child for child in children if "spawn_main" in " ".join(child.cmdline())]
    try:
        assert len(workers) == 2
        assert httpx.get(f"{first.url}/health", timeout=10).status_code == 200
        first.process.send_signal(signal.SIGKILL)
        first.process.wait(10)
        # Serving stops within 10 s (a worker's SIGTERM closes its socket at once); the processes
        # themselves may take longer to finish their shutdown on a loaded machine.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and serving(first.url):
            time.sleep(0.2)
        assert not serving(first.url), "a worker still serves 10 s after its supervisor died"
        _, alive = psutil.wait_procs(workers, timeout=30)
        assert not alive, f"workers still running 30 s after their supervisor died: {alive}"
    finally:
        for orphan in workers:  # a failed test must not leave them serving
            if orphan.is_running():
                orphan.kill()

    # The same port and data: the database the first one started is adopted, and works.
    with LiveServer(environment(data_dir), log, port=first.port) as second:
        health = httpx.get(f"{second.url}/health", timeout=10).json()
        assert health["status"] == "healthy", health
