"""`WS /ws/liveness` end to end on real frames: every presentation attack ends `live: false` with its
reason, over a socket that stays up until the verdict and then closes cleanly.

Frames are real photos from the shared corpus, cropped to the same framing (so that swapping one
photo for another does not also move the face) and, for the attacks that move a print, warped the
way a print moves. There is no camera here: a real person passing is tested on landmark sequences
(tests/test_liveness.py) and, through this socket, with scripted observations.
"""

from __future__ import annotations

import dataclasses
import io
import logging
import random
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from starlette.websockets import WebSocketDisconnect

from facegate.api.routes import liveness
from facegate.detection import MTCNN
from facegate.imaging import decode_image, load_image_file
from facegate.liveness.session import Challenge, Observation, Reason, draw_challenges
from tests.attacks import tilt_homography, warp_image
from tests.data import FACES
from tests.support import (
    API_KEY,
    FakeClock,
    close_eyes,
    open_mouth,
    placed_like,
    points_of,
    shrunk,
    turned_for,
)

PORTRAITS = FACES / "portraits"
PERSON_A = PORTRAITS / "Jack_Dorsey" / "deepface_img62.jpg"
PERSON_B = PORTRAITS / "Katy_Perry" / "deepface_img43.jpg"
TURNED = PORTRAITS / "Jack_Dorsey" / "deepface_img59.jpg"  # PERSON_A turned
TWO_PEOPLE = FACES / "groups" / "fr_two_people.jpg"
NO_FACE = FACES / "noface" / "skimage_coffee.png"
FRAME = 320  # pixels on a side; the face fills about half of it
TIMEOUT = 4.0  # seconds per session in these tests
NORMAL_CLOSURE = 1000
POLICY_VIOLATION = 1008


@pytest.fixture(scope="module")
def detector() -> MTCNN:
    return MTCNN()


def framed(detector: MTCNN, path: Path) -> np.ndarray:
    """The photo's largest face centred in a FRAME×FRAME square, half its width."""
    image = load_image_file(path)
    face = max(detector.detect(image), key=lambda f: f.area)
    cx, cy, side = (face.box[0] + face.box[2]) / 2, (face.box[1] + face.box[3]) / 2, 2 * face.width
    crop = Image.fromarray(image).crop((cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2))
    return np.asarray(crop.resize((FRAME, FRAME), Image.Resampling.LANCZOS))


def load_image_file_bytes(data: bytes) -> np.ndarray:
    return decode_image(data, max_bytes=len(data), max_pixels=FRAME * FRAME)


def jpeg(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def moved(image: np.ndarray, **tilt: Any) -> bytes:
    return jpeg(warp_image(image, tilt_homography((FRAME, FRAME), (FRAME / 2, FRAME / 2), **tilt)))


def with_settings(monkeypatch: pytest.MonkeyPatch, client: TestClient, **changes: object) -> None:
    """The app's settings with `changes`, for this test only."""
    services = client.app.state.services
    settings = services.settings.model_copy(update=changes)
    monkeypatch.setattr(services, "core", dataclasses.replace(services.core, settings=settings))


@pytest.fixture
def app(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    """The shared test app with short sessions whose challenges start with `turn_left` (a seeded
    random source), so that the tilt tests meet the turn check."""
    with_settings(monkeypatch, client, liveness_timeout=TIMEOUT)
    seed = next(s for s in range(100) if draw_challenges(random.Random(s))[0] is Challenge.TURN_LEFT)
    services = client.app.state.services  # type: ignore[attr-defined]
    monkeypatch.setattr(services, "challenge_rng", random.Random(seed))
    monkeypatch.setattr(services, "challenge_clock", FakeClock())
    yield client


def run_session(
    app: TestClient, frames: list[bytes]
) -> tuple[dict[str, Any], list[dict[str, Any]], dict[str, Any]]:
    """Open a session, send the frames in lockstep with the answers, and wait for the verdict.

    Returns the opening message, the answers to the frames and the verdict; checks the socket is
    then closed normally by the server.
    """
    with app.websocket_connect("/ws/liveness") as socket:
        opening = socket.receive_json()
        answers: list[dict[str, Any]] = []
        verdict = None
        # Then past the deadline: one more frame ends the session, with no wait for the real one.
        clock = app.app.state.services.challenge_clock  # type: ignore[attr-defined]
        for frame in [*frames, None]:
            if frame is None:
                clock.now += TIMEOUT + 1
                frame = frames[-1] if frames else jpeg(np.zeros((FRAME, FRAME, 3), np.uint8))
            socket.send_bytes(frame)
            message = socket.receive_json()
            if message["type"] == "verdict":
                verdict = message
                break
            answers.append(message)
        while verdict is None:
            message = socket.receive_json()
            if message["type"] == "verdict":
                verdict = message
            else:
                answers.append(message)
        with pytest.raises(WebSocketDisconnect) as closed:
            socket.receive_json()
    assert closed.value.code == NORMAL_CLOSURE
    return opening, answers, verdict


def assert_failed(verdict: dict[str, Any], *reasons: Reason) -> None:
    assert verdict["type"] == "verdict" and verdict["live"] is False
    assert verdict["recognition"] is None
    assert set(reasons) <= set(verdict["reasons"]), verdict
    assert len(verdict["messages"]) == len(verdict["reasons"])


# --- the session opening ---------------------------------------------------------------------------


def test_opening_message(app: TestClient) -> None:
    opening, _, verdict = run_session(app, [])
    assert opening["type"] == "session" and opening["session_id"]
    assert 2 <= len(opening["challenges"]) <= 3 and opening["challenges"][0] == "turn_left"
    assert opening["timeout_s"] == TIMEOUT
    assert_failed(verdict, Reason.EXPIRED, Reason.NO_FACE)
    assert verdict["session_id"] == opening["session_id"]


# --- attacks ---------------------------------------------------------------------------------------


def test_the_same_photo_repeated(app: TestClient, detector: MTCNN) -> None:
    photo = jpeg(framed(detector, PERSON_A))
    _, answers, verdict = run_session(app, [photo] * 4)
    assert all(a["type"] == "progress" and a["face_found"] for a in answers)
    assert answers[-1]["current"] == "turn_left"
    assert_failed(verdict, Reason.EXPIRED)
    assert verdict["completed"] == []


def test_a_photo_sliding_and_rotating_in_the_image_plane(app: TestClient, detector: MTCNN) -> None:
    image = framed(detector, PERSON_A)
    frames = [moved(image, roll_deg=4 * step, shift=(6 * step, -3 * step)) for step in range(-2, 3)]
    _, answers, verdict = run_session(app, frames)
    assert all(abs(a["signals"]["yaw"]) < 0.2 for a in answers if a["signals"])
    assert_failed(verdict, Reason.EXPIRED)
    assert verdict["completed"] == []


def test_a_print_tilted_left_and_right(app: TestClient, detector: MTCNN) -> None:
    image = framed(detector, PERSON_A)
    frames = [moved(image, yaw_deg=yaw) for yaw in (0, -40, -20, 20, 40)]
    _, _, verdict = run_session(app, frames)
    assert_failed(verdict, Reason.EXPIRED)
    assert verdict["completed"] == []


def test_a_tilted_print_that_reaches_the_yaw_gate_is_refused_as_flat(
    app: TestClient, detector: MTCNN, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the yaw gate lowered until the tilted print passes it, the planarity check must refuse."""
    with_settings(monkeypatch, app, liveness_turn_yaw=0.01)
    image = framed(detector, PERSON_A)
    frames = [moved(image, yaw_deg=yaw) for yaw in (0, -40, -25, 25, 40)]
    _, answers, verdict = run_session(app, frames)
    assert_failed(verdict, Reason.EXPIRED, Reason.FLAT_MOTION)
    assert verdict["completed"] == []
    residuals = [
        a["signals"]["residual"] for a in answers if a["signals"] and a["signals"]["residual"] is not None
    ]
    assert residuals and max(residuals) < app.app.state.services.settings.liveness_planar_residual


def test_photos_of_two_people_alternated(app: TestClient, detector: MTCNN) -> None:
    first, second = jpeg(framed(detector, PERSON_A)), jpeg(framed(detector, PERSON_B))
    _, _, verdict = run_session(app, [first, first, second, first, second])
    assert_failed(verdict, Reason.IDENTITY_CHANGED)
    assert verdict["score"] == 0.0


def test_no_face(app: TestClient) -> None:
    photo = jpeg(np.asarray(Image.open(NO_FACE).convert("RGB")))
    _, answers, verdict = run_session(app, [photo] * 3)
    assert all(a["face_found"] is False for a in answers)
    assert_failed(verdict, Reason.EXPIRED, Reason.NO_FACE)


def test_two_faces(app: TestClient) -> None:
    _, _, verdict = run_session(app, [TWO_PEOPLE.read_bytes()])
    assert_failed(verdict, Reason.MULTIPLE_FACES)


# --- bad frames, early close, auth -----------------------------------------------------------------


def test_bad_frames_are_answered_and_the_session_goes_on(app: TestClient, detector: MTCNN) -> None:
    with app.websocket_connect("/ws/liveness") as socket:
        socket.receive_json()
        socket.send_text("not a frame")
        text = socket.receive_json()
        socket.send_bytes(b"\xff\xd8\xff garbage")
        corrupt = socket.receive_json()
        socket.send_bytes(jpeg(framed(detector, PERSON_A)))
        progress = socket.receive_json()
    assert text["type"] == "error" and text["status"] == 400 and "binary" in text["error"]
    assert corrupt["type"] == "error" and corrupt["status"] == 400
    assert progress["type"] == "progress" and progress["face_found"] and progress["frame"] == 3


def test_a_client_that_leaves_mid_session_ends_it(
    app: TestClient, detector: MTCNN, caplog: pytest.LogCaptureFixture
) -> None:
    def abandoned() -> bool:
        return any("abandoned" in record.getMessage() for record in caplog.records)

    with (
        caplog.at_level(logging.INFO, logger=liveness.__name__),
        app.websocket_connect("/ws/liveness") as socket,
    ):
        socket.receive_json()
        socket.send_bytes(jpeg(framed(detector, PERSON_A)))
        socket.receive_json()
        socket.close()
        # The server notices at once, well before the deadline, and gives the session up (the test
        # client cancels the app when its block ends, so wait inside it).
        waited = 0.0
        while not abandoned() and waited < TIMEOUT / 2:
            time.sleep(0.05)
            waited += 0.05
    assert abandoned()


def test_a_missing_key_is_refused(anonymous: TestClient) -> None:
    with anonymous.websocket_connect("/ws/liveness") as socket:
        socket.send_text('{"api_key": "wrong"}')
        refusal = socket.receive_json()
        with pytest.raises(WebSocketDisconnect) as closed:
            socket.receive_json()
    assert refusal["status"] == 401 and closed.value.code == POLICY_VIOLATION


def test_the_key_may_come_in_the_first_message(anonymous: TestClient) -> None:
    with anonymous.websocket_connect("/ws/liveness") as socket:
        socket.send_text(f'{{"api_key": "{API_KEY}"}}')
        assert socket.receive_json()["type"] == "session"


# --- a live session (scripted observations: there is no camera here) ------------------------------


@pytest.mark.parametrize("credential", ["key", "ticket"])
def test_a_live_session_answers_with_the_recognition_of_its_best_frame(
    app: TestClient,
    detector: MTCNN,
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
    credential: str,
) -> None:
    """The frames are real; what the models see in them is replaced by a landmark sequence of a
    person doing the challenges, so the verdict path and its recognition body are exercised. A
    ticket's holder (a browser page) is told who matched, but no candidates."""
    image = framed(detector, PERSON_A)
    photo = jpeg(image)
    name = f"liveness-{random.Random().random()}"
    registered = app.post("/register", data={"name": name}, files={"image": ("a.jpg", photo)})
    assert registered.status_code == 201, registered.text
    request.addfinalizer(lambda: app.delete(f"/users/{registered.json()['user_id']}"))  # the face, once
    expected = app.post("/recognize", files={"image": ("a.jpg", photo)}).json()

    decoded = load_image_file_bytes(photo)
    real = liveness.observe_frame(app.app.state.services.pipeline, decoded)
    assert real.landmarks is not None
    frontal = real.landmarks
    turned = shrunk(TURNED)
    poses = {
        "turned": points_of(detector, turned),
        "turned_mirrored": points_of(detector, np.ascontiguousarray(turned[:, ::-1])),
    }
    steps = {
        Challenge.BLINK: [frontal, close_eyes(frontal), frontal],
        Challenge.OPEN_MOUTH: [frontal, open_mouth(frontal), frontal],
        Challenge.TURN_LEFT: [placed_like(turned_for(Challenge.TURN_LEFT, poses), frontal), frontal],
        Challenge.TURN_RIGHT: [placed_like(turned_for(Challenge.TURN_RIGHT, poses), frontal), frontal],
    }
    script: list[Observation] = []

    def scripted(pipeline: object, image: np.ndarray) -> Observation:
        return script.pop(0)

    monkeypatch.setattr(liveness, "observe_frame", scripted)
    ticket = app.post("/liveness/tickets").json()["ticket"]
    with app.websocket_connect(
        "/ws/liveness", headers={"X-API-Key": ""} if credential == "ticket" else {}
    ) as socket:
        if credential == "ticket":
            socket.send_json({"ticket": ticket})
        opening = socket.receive_json()
        sequence = [frontal] + [points for c in opening["challenges"] for points in steps[Challenge(c)]]
        script.extend(replace(real, landmarks=points) for points in sequence)
        for _ in sequence:
            socket.send_bytes(photo)
            message = socket.receive_json()
        verdict = socket.receive_json()
    assert message["type"] == "progress" and message["hint"] == "done"
    assert verdict["live"] is True and verdict["reasons"] == [] and verdict["score"] == 1.0
    assert verdict["completed"] == opening["challenges"]
    if credential == "ticket":
        assert expected["faces"][0]["candidates"]  # what a key holder gets
        for face in expected["faces"]:
            face["candidates"] = []
    assert verdict["recognition"] == expected
    assert verdict["recognition"]["matched_user"]["name"] == name


def test_the_session_ends_at_its_real_deadline_without_another_frame(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The route's own timer (the other tests move a fake clock): a client that sends nothing gets
    its verdict when the deadline passes."""
    with_settings(monkeypatch, client, liveness_timeout=0.5)
    with client.websocket_connect("/ws/liveness") as socket:
        opening = socket.receive_json()
        verdict = socket.receive_json()
    assert opening["timeout_s"] == 0.5
    assert verdict["type"] == "verdict" and verdict["live"] is False and Reason.EXPIRED in verdict["reasons"]
