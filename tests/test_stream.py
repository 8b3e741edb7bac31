"""The WebSocket streams `/ws/detect` and `/ws/recognize`: answers, frame dropping, errors, auth.

Most tests use Starlette's test client on an app of their own (it has keys of narrower scope); one
goes over real sockets, straight to uvicorn and through nginx, with the `websockets` package.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from fastapi.testclient import TestClient
from starlette.websockets import WebSocketDisconnect
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from facegate.api import streaming
from facegate.api.ratelimit import RateLimiter
from facegate.gallery import EmbeddedServer
from tests.data import FACES
from tests.servers import api_server, free_port, nginx_server
from tests.support import FakeClock, app_settings, running_app

ADMIN_KEY = "stream-admin-" + uuid.uuid4().hex
DETECT_KEY = "stream-detect-" + uuid.uuid4().hex
RECOGNIZE_KEY = "stream-recognize-" + uuid.uuid4().hex

OBAMA = FACES / "portraits" / "Barack_Obama"
TWO_PEOPLE = FACES / "groups" / "fr_two_people.jpg"
NO_FACE = FACES / "noface" / "skimage_coffee.png"
SMALL_FRAME = OBAMA / "fr_obama-240p.jpg"
POLICY_VIOLATION = 1008
TRY_AGAIN_LATER = 1013


@pytest.fixture(scope="module")
def app_client(pg_server: EmbeddedServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """An app with an admin key, a detect-only key and a recognise key, and no rate limit."""
    settings = app_settings(
        pg_server,
        tmp_path_factory.mktemp("stream-data"),
        app_token=ADMIN_KEY,
        facegate_api_keys=f"cam:detect:{DETECT_KEY},door:recognize:{RECOGNIZE_KEY}",
        rate_limit_per_minute=0,
    )
    yield from running_app(settings)


def headers(key: str) -> dict[str, str]:
    return {"X-API-Key": key}


def send_and_receive(socket: Any, data: bytes) -> dict[str, Any]:
    socket.send_bytes(data)
    return socket.receive_json()


def refusal(app_client: TestClient, path: str, **kwargs: Any) -> tuple[dict[str, Any], int]:
    """The error message and close code of a stream that is refused before its first frame."""
    with app_client.websocket_connect(path, **kwargs) as socket:
        first = socket.receive_json()
        with pytest.raises(WebSocketDisconnect) as closed:
            socket.receive_json()
    return first, closed.value.code


# --- answers -------------------------------------------------------------------------------------


def test_detect_stream_answers_each_frame_like_post_detect(app_client: TestClient) -> None:
    photo = TWO_PEOPLE.read_bytes()
    over_http = app_client.post("/detect", headers=headers(DETECT_KEY), files={"file": ("a.jpg", photo)})
    with app_client.websocket_connect("/ws/detect", headers=headers(DETECT_KEY)) as socket:
        first = send_and_receive(socket, photo)
        second = send_and_receive(socket, NO_FACE.read_bytes())
    assert {k: first[k] for k in ("boxes", "scores", "keypoints")} == over_http.json()
    assert len(first["boxes"]) == 2
    assert (first["frame"], first["skipped"]) == (1, 0) and first["processing_ms"] > 0
    assert (second["frame"], second["boxes"]) == (2, [])


def test_recognize_stream_recognises_a_registered_person(app_client: TestClient) -> None:
    name = f"Barack Obama {uuid.uuid4().hex[:6]}"
    registered = app_client.post(
        "/register",
        headers=headers(ADMIN_KEY),
        data={"name": name},
        files={"image": ("obama.jpg", (OBAMA / "fr_obama.jpg").read_bytes())},
    )
    assert registered.status_code == 201
    photo = (OBAMA / "fr_obama2.jpg").read_bytes()
    over_http = app_client.post(
        "/recognize", headers=headers(RECOGNIZE_KEY), files={"image": ("o.jpg", photo)}
    )
    # A threshold of the stream's own, on the model's scale: its one-to-one threshold.
    threshold = round(app_client.get("/stats", headers=headers(RECOGNIZE_KEY)).json()["verify_threshold"], 3)
    # First-message auth, as a browser does it.
    with app_client.websocket_connect(f"/ws/recognize?threshold={threshold}") as socket:
        socket.send_text(json.dumps({"api_key": RECOGNIZE_KEY}))
        answer = send_and_receive(socket, photo)
    assert answer["status"] == "match" and answer["matched_user"]["name"] == name
    assert answer["frame"] == 1 and answer["threshold"] == threshold
    assert set(answer) == set(over_http.json()) | {"frame", "skipped", "processing_ms"}


def test_a_flood_of_frames_is_answered_about_the_newest_with_skip_counts(app_client: TestClient) -> None:
    sent = 200
    frame = SMALL_FRAME.read_bytes()
    with app_client.websocket_connect("/ws/detect", headers=headers(DETECT_KEY)) as socket:
        for _ in range(sent):
            socket.send_bytes(frame)
        answers = [socket.receive_json()]
        while answers[-1]["frame"] < sent:  # the newest frame is never dropped
            answers.append(socket.receive_json())
    numbers = [answer["frame"] for answer in answers]
    assert numbers == sorted(set(numbers)) and numbers[-1] == sent
    assert len(answers) < sent and any(answer["skipped"] > 0 for answer in answers)
    assert sum(1 + answer["skipped"] for answer in answers) == sent
    assert all(len(answer["boxes"]) == 1 for answer in answers)


def test_latest_frame_keeps_only_the_newest_and_counts_the_rest() -> None:
    async def scenario() -> list[streaming.Frame]:
        mailbox = streaming.LatestFrame()
        for data in (b"1", b"2", b"3"):
            mailbox.put(data)
        first = await mailbox.take()
        mailbox.put(b"4")
        return [first, await mailbox.take()]

    assert anyio.run(scenario) == [streaming.Frame(3, b"3", 2), streaming.Frame(4, b"4", 0)]


# --- bad frames ----------------------------------------------------------------------------------


def test_bad_frames_get_an_error_and_the_stream_goes_on(app_client: TestClient) -> None:
    good = SMALL_FRAME.read_bytes()
    too_large = b"\xff\xd8\xff" + bytes(20 * 1024 * 1024)  # over MAX_UPLOAD_BYTES
    with app_client.websocket_connect("/ws/recognize", headers=headers(RECOGNIZE_KEY)) as socket:
        errors = [
            send_and_receive(socket, b"certainly not an image"),
            send_and_receive(socket, good[: len(good) // 3]),
            send_and_receive(socket, too_large),
            send_and_receive(socket, NO_FACE.read_bytes()),
        ]
        socket.send_text("a text message where a frame belongs")
        errors.append(socket.receive_json())
        after = send_and_receive(socket, good)
    assert [(e["status"], e["frame"], e["skipped"]) for e in errors] == [
        (415, 1, 0), (400, 2, 0), (413, 3, 0), (422, 4, 0), (400, 5, 0),
    ]  # fmt: skip
    assert all(isinstance(e["error"], str) and e["error"] for e in errors)
    assert after["frame"] == 6 and len(after["faces"]) == 1


# --- keys, scopes, parameters --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "first_message"),
    [
        (None, b"\xff\xd8\xff a frame before any key"),
        (None, json.dumps({"api_key": "wrong"})),
        (None, "not json"),
        (None, json.dumps({"key": DETECT_KEY})),
        (None, json.dumps({"api_key": "\ud800"})),  # a lone surrogate: no key can be it
        (None, "[" * 3000),  # nested past the JSON parser's depth
        (None, "[" * 200_000),
        ("wrong", None),
    ],
)
def test_missing_or_wrong_key_is_refused_with_1008(
    app_client: TestClient, header: str | None, first_message: str | bytes | None
) -> None:
    with app_client.websocket_connect(
        "/ws/detect", headers={} if header is None else headers(header)
    ) as socket:
        if isinstance(first_message, bytes):
            socket.send_bytes(first_message)
        elif first_message is not None:
            socket.send_text(first_message)
        error = socket.receive_json()
        with pytest.raises(WebSocketDisconnect) as closed:
            socket.receive_json()
    assert error["status"] == 401 and "API key" in error["error"]
    assert closed.value.code == POLICY_VIOLATION


def test_a_client_that_sends_no_key_is_refused_after_the_timeout(
    app_client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(streaming, "AUTH_TIMEOUT", 0.2)
    error, code = refusal(app_client, "/ws/recognize")
    assert (error["status"], code) == (401, POLICY_VIOLATION)


@pytest.mark.parametrize(
    ("key", "path", "allowed"),
    [
        (DETECT_KEY, "/ws/detect", True),
        (DETECT_KEY, "/ws/recognize", False),
        (RECOGNIZE_KEY, "/ws/detect", True),
        (ADMIN_KEY, "/ws/recognize", True),
    ],
)
def test_scopes_are_respected(app_client: TestClient, key: str, path: str, allowed: bool) -> None:
    with app_client.websocket_connect(path, headers=headers(key)) as socket:
        answer = send_and_receive(socket, TWO_PEOPLE.read_bytes())
        if not allowed:
            with pytest.raises(WebSocketDisconnect) as closed:
                socket.receive_json()
            assert closed.value.code == POLICY_VIOLATION
    assert ("error" not in answer) == allowed
    if not allowed:
        assert answer["status"] == 403


@pytest.mark.parametrize(
    "query",
    ["/ws/detect?min_face_size=0", "/ws/detect?threshold_onet=nan", "/ws/detect?threshold_pnet=1.5",
     "/ws/recognize?threshold=3", "/ws/recognize?threshold=high"],
)  # fmt: skip
def test_invalid_query_parameters_are_refused_with_1008(app_client: TestClient, query: str) -> None:
    error, code = refusal(app_client, query, headers=headers(ADMIN_KEY))
    assert (error["status"], code) == (422, POLICY_VIOLATION)
    assert query.split("?")[1].split("=")[0] in error["error"]


def test_query_parameters_change_the_detection(app_client: TestClient) -> None:
    with app_client.websocket_connect("/ws/detect?min_face_size=400", headers=headers(DETECT_KEY)) as socket:
        assert send_and_receive(socket, TWO_PEOPLE.read_bytes())["boxes"] == []


def test_opening_streams_counts_against_the_key_rate_limit(
    app_client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    services = app_client.app.state.services  # type: ignore[attr-defined]
    monkeypatch.setattr(services, "rate_limiter", RateLimiter(per_minute=1, burst=1, clock=FakeClock()))
    with app_client.websocket_connect("/ws/detect", headers=headers(DETECT_KEY)) as socket:
        assert send_and_receive(socket, SMALL_FRAME.read_bytes())["frame"] == 1
    error, code = refusal(app_client, "/ws/detect", headers=headers(DETECT_KEY))
    assert (error["status"], code) == (429, TRY_AGAIN_LATER)


# --- over real sockets ---------------------------------------------------------------------------


@pytest.mark.slow
def test_streams_over_uvicorn_and_through_nginx(tmp_path: Path) -> None:
    photo = TWO_PEOPLE.read_bytes()
    with api_server(tmp_path, ADMIN_KEY) as api_url:
        api = api_url.removeprefix("http://")
        with nginx_server(tmp_path, free_port(), api, f"127.0.0.1:{free_port()}") as gateway:
            for url in (f"ws://{api}/ws/detect", f"{gateway.replace('http', 'ws', 1)}/api/ws/detect"):
                with connect(url) as socket:
                    socket.send(json.dumps({"api_key": ADMIN_KEY}))
                    socket.send(photo)
                    answer = json.loads(socket.recv(timeout=60))
                assert len(answer["boxes"]) == 2 and answer["frame"] == 1, url
            with connect(f"ws://{api}/ws/detect", additional_headers=headers("wrong")) as socket:
                assert json.loads(socket.recv(timeout=10))["status"] == 401
                with pytest.raises(ConnectionClosed) as closed:
                    socket.recv(timeout=10)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == POLICY_VIOLATION


def test_streams_and_http_refuse_by_the_same_rules_with_the_same_messages(
    app_client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    services = app_client.app.state.services  # type: ignore[attr-defined]
    monkeypatch.setattr(services, "rate_limiter", RateLimiter(per_minute=1, burst=1, clock=FakeClock()))
    photo = {"file": ("a.jpg", SMALL_FRAME.read_bytes())}
    forbidden = app_client.post("/recognize", headers=headers(DETECT_KEY), files={"image": photo["file"]})
    error, code = refusal(app_client, "/ws/recognize", headers=headers(DETECT_KEY))
    assert (forbidden.status_code, error["status"], code) == (403, 403, POLICY_VIOLATION)
    assert error["error"] == forbidden.json()["detail"]
    # Neither refusal took the key's only token.
    assert app_client.post("/detect", headers=headers(DETECT_KEY), files=photo).status_code == 200
    limited = app_client.post("/detect", headers=headers(DETECT_KEY), files=photo)
    error, code = refusal(app_client, "/ws/detect", headers=headers(DETECT_KEY))
    assert (limited.status_code, error["status"], code) == (429, 429, TRY_AGAIN_LATER)
    assert error["error"] == limited.json()["detail"] and limited.headers["Retry-After"] == "60"
