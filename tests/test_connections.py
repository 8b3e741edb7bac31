"""Connection hygiene of `facegate serve` over real sockets: stalled requests, the connection cap, and
a supervisor killed with SIGKILL."""

from __future__ import annotations

import contextlib
import selectors
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from facegate.api.connections import MAX_HEADER_BYTES, MAX_HEADERS
from tests.servers import LiveServer, service_data_dir

KEY = "connections-test-key"
HEADER_TIMEOUT = 4.0
MAX_CONNECTIONS = 230
PARTIAL = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: "  # the headers never end


def environment(data: Path, **extra: str) -> dict[str, str]:
    """The service's settings over `LiveServer`'s clean environment: its embedded database in `data`."""
    return {"APP_TOKEN": KEY, "FACEGATE_DATA_DIR": str(data), **extra}


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """One service for the module's socket tests (starting one costs seconds of CPU): each test
    ends with every connection it opened closed and checks that the service still answers.

    Its data lives in a `service_data_dir`, as `data_dir`'s does outside pytest's folder.
    """
    with service_data_dir("facegate-test-connections-") as data:
        env = environment(data, HEADER_TIMEOUT=str(HEADER_TIMEOUT), MAX_CONNECTIONS=str(MAX_CONNECTIONS))
        with LiveServer(env, tmp_path_factory.mktemp("connections") / "server.log") as live:
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


def answer_to(port: int, payload: bytes) -> bytes:
    """What the server sends back to `payload` on a fresh connection before it closes it."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        # Refused before the whole payload was read: the answer is already waiting.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(payload)
        received = b""
        with contextlib.suppress(ConnectionResetError):  # the reset for the unread rest
            while chunk := sock.recv(4096):
                received += chunk
        return received


def test_oversized_header_blocks_are_answered_431_and_closed(guarded: LiveServer) -> None:
    many = b"".join(b"X-H%d: v\r\n" % n for n in range(MAX_HEADERS + 1))
    large = b"X-Big: " + b"A" * MAX_HEADER_BYTES + b"\r\n"
    for headers in (many, large):
        answer = answer_to(guarded.port, b"GET /health HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\n")
        assert answer.startswith(b"HTTP/1.1 431 "), answer[:200]
    ordinary = b"".join(b"X-H%d: %s\r\n" % (n, b"v" * 500) for n in range(MAX_HEADERS - 5))
    answer = answer_to(
        guarded.port, b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n" + ordinary + b"\r\n"
    )
    assert answer.startswith(b"HTTP/1.1 200 "), answer[:200]


def stream_endless_headers(
    port: int, stop: threading.Event, started: threading.Event, answers: list[bytes]
) -> None:
    """Open connections that send one header line without end in 64 KiB chunks, one after another
    (reconnecting when cut off), until `stop`; what the server answered each goes into `answers`."""
    while not stop.is_set():
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            try:
                sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-Junk: ")
                while not stop.is_set():
                    sock.sendall(b"A" * 65536)
                    started.set()
            except (BrokenPipeError, ConnectionResetError):
                pass
            try:
                answers.append(sock.recv(4096))
            except (ConnectionResetError, TimeoutError):
                answers.append(b"")


def test_health_stays_fast_while_a_client_streams_an_endless_header(guarded: LiveServer) -> None:
    stop, started, answers = threading.Event(), threading.Event(), []
    attacker = threading.Thread(target=stream_endless_headers, args=(guarded.port, stop, started, answers))
    attacker.start()
    try:
        assert started.wait(10)
        slowest = 0.0
        with httpx.Client(timeout=HEADER_TIMEOUT * 3) as client:
            # Past HEADER_TIMEOUT: the deadline alone would have let each attack stall the worker that long.
            for _ in range(12):
                began = time.monotonic()
                assert client.get(f"{guarded.url}/health").status_code == 200
                slowest = max(slowest, time.monotonic() - began)
                time.sleep(0.4)
    finally:
        stop.set()
        attacker.join(30)
    assert slowest < 1.0, f"/health took {slowest:.1f} s during the attack"
    assert any(answer.startswith(b"HTTP/1.1 431 ") for answer in answers), answers[:3]


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
