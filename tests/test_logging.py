"""Logs: the access log's fields, and nothing secret in any record."""

from __future__ import annotations

import json
import logging
import uuid
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from websockets.sync.client import connect

from tests.data import FACES
from tests.servers import LiveServer
from tests.support import API_KEY, SCOPED_KEYS, scoped_headers, unique, upload

BIDEN = FACES / "portraits" / "Joe_Biden"


def test_logs_carry_the_request_id_and_never_keys_or_names(
    secured: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    name = unique("Secret Person")
    with caplog.at_level(logging.DEBUG):
        registered = secured.post(
            "/register",
            headers={**scoped_headers("admin"), "X-Request-ID": "trace-42"},
            data={"name": name},
            files=upload(BIDEN / "fr_biden.jpg", "image"),
        )
        secured.post(
            "/recognize", headers=scoped_headers("recognize"), files=upload(BIDEN / "fr_biden2.jpg", "image")
        )
        secured.post("/register", headers={"X-API-Key": "guessed-" + API_KEY})
    assert registered.status_code == 201, registered.text
    access = [r.getMessage() for r in caplog.records if r.name == "facegate.access"]
    assert any(
        "route=/register status=201" in m and "key=admin-client request_id=trace-42" in m for m in access
    )
    text = caplog.text + "".join(str(vars(record)) for record in caplog.records)
    for secret in [name, API_KEY, *SCOPED_KEYS.values()]:
        assert secret not in text
    secured.delete(f"/users/{registered.json()['user_id']}", headers=scoped_headers("admin"))


def test_the_server_log_shows_no_query_string_and_no_refused_stream_as_opened(
    data_dir: Path, tmp_path: Path
) -> None:
    """Over `facegate serve` (its own logging): uvicorn's WebSocket handshake line shows the path
    without the query, where a client may have put a key; a stream refused for its collection was
    never opened."""
    key, leaked = "log-test-" + uuid.uuid4().hex, "leaked-" + uuid.uuid4().hex
    log = tmp_path / "server.log"
    with LiveServer({"APP_TOKEN": key, "FACEGATE_DATA_DIR": str(data_dir)}, log) as live:
        ws = live.url.replace("http", "ws", 1)
        with connect(f"{ws}/ws/detect?api_key={leaked}") as socket:
            socket.send(json.dumps({"api_key": key}))
        with connect(
            f"{ws}/ws/recognize?collection=nowhere", additional_headers={"X-API-Key": key}
        ) as socket:
            assert json.loads(socket.recv(timeout=10))["status"] == 404
    text = log.read_text()
    assert '"WebSocket /ws/detect?…" [accepted]' in text and "/ws/detect stream opened by key 'admin'" in text
    assert leaked not in text and "/ws/recognize stream opened" not in text
