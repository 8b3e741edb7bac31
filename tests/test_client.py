"""The public Python client (`facegate.client`) against real servers over real HTTP and WebSocket."""

from __future__ import annotations

import asyncio
import io
import logging
import os
import re
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from facegate.client import (
    AsyncFaceGateClient,
    AuthError,
    BadImageError,
    ConflictError,
    FaceGateClient,
    FaceGateError,
    FrameError,
    NetworkError,
    NotFoundError,
    RateLimitError,
    RecognizedFrame,
    RequestTimeoutError,
    UnavailableError,
    UnprocessableError,
)
from facegate.schemas import (
    Collection,
    CollectionList,
    DetectResponse,
    FaceList,
    Health,
    RecognizeResponse,
    Stats,
    User,
    UserList,
)
from tests.data import FACES, REPO
from tests.servers import api_server, clean_env, free_port

TOKEN = "client-test-" + uuid.uuid4().hex
DETECT_KEY = "client-detect-" + uuid.uuid4().hex
TWO_PEOPLE = FACES / "groups" / "fr_two_people.jpg"
LARGE_GROUP = FACES / "groups" / "deepface_couple.jpg"  # the slowest to detect: holds the inference slot
OBAMA = FACES / "portraits" / "Barack_Obama" / "fr_obama.jpg"
OBAMA_2 = FACES / "portraits" / "Barack_Obama" / "fr_obama2.jpg"
SMALL_OBAMA = FACES / "portraits" / "Barack_Obama" / "fr_obama-240p.jpg"
BIDEN = FACES / "portraits" / "Joe_Biden" / "fr_biden.jpg"
BIDEN_2 = FACES / "portraits" / "Joe_Biden" / "fr_biden2.jpg"
NO_FACE = FACES / "noface" / "skimage_coffee.png"
UPLOAD_LIMIT = 1_500_000  # above every test photo
RETRY_LOGGER = "facegate.client.retry"


@pytest.fixture(scope="module")
def api_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The API with a detect-scope key, no rate limit and room for one inference and no queue, so
    that a second request during a slow one is answered 503 at once."""
    with api_server(
        tmp_path_factory.mktemp("client-api"),
        TOKEN,
        FACEGATE_API_KEYS=f"detector:detect:{DETECT_KEY}",
        RATE_LIMIT_PER_MINUTE="0",
        MAX_CONCURRENT_INFERENCE="1",
        MAX_INFERENCE_QUEUE="0",
        MAX_UPLOAD_BYTES=str(UPLOAD_LIMIT),
    ) as url:
        yield url


@pytest.fixture
def client(api_url: str) -> Iterator[FaceGateClient]:
    with FaceGateClient(api_url, api_key=TOKEN) as opened:
        yield opened


@pytest.fixture
def obama(client: FaceGateClient) -> Iterator[int]:
    """Barack Obama registered for the test; his user id."""
    user_id = client.register("Barack Obama", OBAMA).user_id
    yield user_id
    client.delete_user(user_id)


# --- each method ---------------------------------------------------------------------------------


def test_health_and_stats(client: FaceGateClient) -> None:
    health = client.health()
    assert isinstance(health, Health)
    assert (health.status, health.database) == ("healthy", "connected")
    stats = client.stats()
    assert isinstance(stats, Stats)
    assert stats.embedding_dimension == health.embedding_dimension > 0


def test_detect_with_parameters(client: FaceGateClient) -> None:
    found = client.detect(TWO_PEOPLE)
    assert isinstance(found, DetectResponse)
    assert len(found.boxes) == len(found.scores) == len(found.keypoints) == 2
    # Both faces are far smaller than 1000 pixels.
    assert client.detect(TWO_PEOPLE, min_face_size=1000).boxes == []


@pytest.mark.parametrize(("image_format", "magic"), [("png", b"\x89PNG"), ("jpeg", b"\xff\xd8\xff")])
def test_detect_annotated(client: FaceGateClient, image_format: str, magic: bytes) -> None:
    drawn = client.detect_annotated(TWO_PEOPLE, format=image_format)  # type: ignore[arg-type]
    assert drawn.startswith(magic)
    assert Image.open(io.BytesIO(drawn)).size == Image.open(TWO_PEOPLE).size


def test_gallery_round_trip(client: FaceGateClient) -> None:
    name = f"Joe Biden {uuid.uuid4().hex[:6]}"
    registered = client.register(name, BIDEN)
    assert registered.name == name
    try:
        added = client.add_face(registered.user_id, BIDEN_2)
        assert added.face_count == 2
        user = client.user(registered.user_id)
        assert (user.name, user.face_count) == (name, 2)
        page = client.users(limit=500)
        assert isinstance(page, UserList)
        assert registered.user_id in [u.id for u in page.users]
        answer = client.recognize(BIDEN_2)
        assert answer.faces[0].matched_user is not None
        assert answer.faces[0].matched_user.name == name
    finally:
        deleted = client.delete_user(registered.user_id)
    assert deleted.user_id == registered.user_id
    with pytest.raises(NotFoundError):
        client.user(registered.user_id)


def test_verify(client: FaceGateClient) -> None:
    assert client.verify(BIDEN, BIDEN_2).verified
    assert not client.verify(BIDEN, OBAMA).verified


def test_every_kind_of_image(client: FaceGateClient, obama: int) -> None:
    """A path (str or Path), bytes, a binary file, a PIL image and a NumPy array: the same answer."""
    picture = Image.open(OBAMA_2).convert("RGB")
    with OBAMA_2.open("rb") as file:
        images = [OBAMA_2, str(OBAMA_2), OBAMA_2.read_bytes(), file, picture, np.asarray(picture)]
        answers = [client.recognize(image) for image in images]
    for answer in answers:
        assert isinstance(answer, RecognizeResponse)
        assert answer.matched_user is not None and answer.matched_user.id == obama
        assert answer.distance == pytest.approx(answers[0].distance, abs=1e-4)


def test_images_the_client_cannot_send(client: FaceGateClient) -> None:
    with pytest.raises(ValueError, match="uint8"):
        client.detect(np.zeros((8, 8, 3), dtype=np.float32))
    with pytest.raises(TypeError, match="binary mode"), OBAMA.open() as text_file:
        client.detect(text_file)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="not int"):
        client.detect(42)  # type: ignore[arg-type]


# --- collections and gallery management ----------------------------------------------------------


@pytest.fixture
def collection(client: FaceGateClient) -> Iterator[str]:
    """A new, empty collection for the test, deleted (with its people) after it."""
    name = f"site-{uuid.uuid4().hex[:8]}"
    created = client.create_collection(name)
    assert isinstance(created, Collection)
    assert (created.name, created.people, created.faces) == (name, 0, 0)
    yield name
    client.delete_collection(name)


def test_collections_are_listed_created_and_deleted(client: FaceGateClient) -> None:
    name = f"site-{uuid.uuid4().hex[:8]}"
    client.create_collection(name)
    listed = client.collections()
    assert isinstance(listed, CollectionList)
    names = [c.name for c in listed.collections]
    assert {"default", name} <= set(names) and names == sorted(names)
    with pytest.raises(ConflictError):
        client.create_collection(name)
    deleted = client.delete_collection(name)
    assert deleted.name == name
    assert name not in [c.name for c in client.collections().collections]
    with pytest.raises(NotFoundError):
        client.delete_collection(name)
    with pytest.raises(ConflictError):
        client.delete_collection("default")
    with pytest.raises(UnprocessableError):
        client.create_collection("-not a name/")


def test_a_collection_keeps_its_people_to_itself(client: FaceGateClient, collection: str) -> None:
    person = client.register("Barack Obama", OBAMA, collection=collection)
    stats = client.stats(collection=collection)
    assert (stats.total_users, stats.total_faces) == (1, 1)
    assert [u.id for u in client.users(collection=collection).users] == [person.user_id]
    assert client.user(person.user_id, collection=collection).name == "Barack Obama"
    [counted] = [c for c in client.collections().collections if c.name == collection]
    assert (counted.people, counted.faces) == (1, 1)
    found = client.recognize(OBAMA_2, collection=collection)
    assert found.matched_user is not None and found.matched_user.id == person.user_id
    # Not in `default` (the collection of a call that names none).
    assert person.user_id not in [u.id for u in client.users(limit=500).users]
    in_default = client.recognize(OBAMA_2).matched_user
    assert in_default is None or in_default.id != person.user_id
    with pytest.raises(NotFoundError):
        client.user(person.user_id)
    with pytest.raises(NotFoundError):
        client.users(collection=f"missing-{uuid.uuid4().hex[:6]}")


def test_top_k_candidates_are_distinct_people_nearest_first(client: FaceGateClient, collection: str) -> None:
    obama = client.register("Barack Obama", OBAMA, collection=collection).user_id
    client.add_face(obama, OBAMA_2, collection=collection)
    biden = client.register("Joe Biden", BIDEN, collection=collection).user_id
    [face] = client.recognize(SMALL_OBAMA, collection=collection, top_k=5).faces
    assert [c.user.id for c in face.candidates] == [obama, biden]  # two faces of Obama, one candidate
    assert face.candidates[0].distance <= face.candidates[1].distance
    assert face.matched_user is not None and face.matched_user.id == obama
    [face] = client.recognize(SMALL_OBAMA, collection=collection).faces
    assert [c.user.id for c in face.candidates] == [obama]  # top_k 1 by default
    with pytest.raises(UnprocessableError):
        client.recognize(SMALL_OBAMA, collection=collection, top_k=0)


def test_add_face_of_another_person_is_refused_unless_forced(client: FaceGateClient, collection: str) -> None:
    biden = client.register("Joe Biden", BIDEN, collection=collection).user_id
    with pytest.raises(UnprocessableError) as caught:
        client.add_face(biden, OBAMA, collection=collection)
    assert caught.value.status_code == 422
    assert client.user(biden, collection=collection).face_count == 1  # nothing stored
    assert client.add_face(biden, OBAMA, collection=collection, force=True).face_count == 2


def test_register_of_a_registered_face_names_its_owner(client: FaceGateClient, collection: str) -> None:
    obama = client.register("Barack Obama", OBAMA, collection=collection).user_id
    with pytest.raises(ConflictError) as caught:
        client.register("Somebody Else", OBAMA_2, collection=collection)
    assert f"(user {obama})" in str(caught.value)  # the detail names the owner
    assert client.stats(collection=collection).total_users == 1
    twin = client.register("Somebody Else", OBAMA_2, collection=collection, allow_duplicate=True)
    assert twin.user_id != obama


def test_single_photos_are_listed_and_deleted(client: FaceGateClient, collection: str) -> None:
    person = client.register("Barack Obama", OBAMA, collection=collection).user_id
    client.add_face(person, OBAMA_2, collection=collection)
    listed = client.faces(person, collection=collection)
    assert isinstance(listed, FaceList) and listed.user_id == person
    first, second = listed.faces
    assert first.id != second.id and first.created_at <= second.created_at
    assert first.box_width > 0 and first.box_height > 0 and first.model
    deleted = client.delete_face(person, first.id, collection=collection)
    assert (deleted.face_id, deleted.face_count) == (first.id, 1)
    assert [f.id for f in client.faces(person, collection=collection).faces] == [second.id]
    with pytest.raises(ConflictError) as caught:
        client.delete_face(person, second.id, collection=collection)
    assert "delete the user instead" in str(caught.value)
    with pytest.raises(NotFoundError):
        client.delete_face(person, first.id, collection=collection)
    assert client.user(person, collection=collection).face_count == 1


def test_rename_user(client: FaceGateClient, collection: str) -> None:
    person = client.register("Barak Obama", OBAMA, collection=collection).user_id
    client.register("Joe Biden", BIDEN, collection=collection)
    renamed = client.rename_user(person, "Barack Obama", collection=collection)
    assert isinstance(renamed, User) and (renamed.id, renamed.name) == (person, "Barack Obama")
    assert client.user(person, collection=collection).name == "Barack Obama"
    with pytest.raises(ConflictError):
        client.rename_user(person, "Joe Biden", collection=collection)


def test_stream_recognize_in_a_collection(client: FaceGateClient, collection: str) -> None:
    person = client.register("Barack Obama", OBAMA, collection=collection).user_id
    [answer] = client.stream_recognize([OBAMA_2], collection=collection)
    assert isinstance(answer, RecognizedFrame)
    assert answer.matched_user is not None and answer.matched_user.id == person
    with pytest.raises(NotFoundError):
        list(client.stream_recognize([OBAMA_2], collection=f"missing-{uuid.uuid4().hex[:6]}"))


def test_async_collection_calls(api_url: str, client: FaceGateClient, collection: str) -> None:
    async def scenario() -> tuple[list[str], int, int]:
        async with AsyncFaceGateClient(api_url, api_key=TOKEN) as aclient:
            person = await aclient.register("Joe Biden", BIDEN, collection=collection)
            await aclient.add_face(person.user_id, BIDEN_2, collection=collection)
            faces = await aclient.faces(person.user_id, collection=collection)
            left = await aclient.delete_face(person.user_id, faces.faces[0].id, collection=collection)
            listed = await aclient.collections()
            return [c.name for c in listed.collections], len(faces.faces), left.face_count

    names, stored, left = asyncio.run(scenario())
    assert collection in names and (stored, left) == (2, 1)


# --- each error class ----------------------------------------------------------------------------


def test_auth_errors(api_url: str) -> None:
    with FaceGateClient(api_url, api_key="wrong") as wrong, pytest.raises(AuthError) as caught:
        wrong.stats()
    assert caught.value.status_code == 401
    assert "wrong API key" in caught.value.detail
    with FaceGateClient(api_url, api_key=DETECT_KEY) as detector:
        assert detector.detect(SMALL_OBAMA).boxes  # within its scope
        with pytest.raises(AuthError) as caught:
            detector.users()
    assert caught.value.status_code == 403
    assert "scope 'detect'" in str(caught.value)


def test_not_found(client: FaceGateClient) -> None:
    with pytest.raises(NotFoundError) as caught:
        client.delete_user(2**62)
    assert caught.value.status_code == 404


def test_conflict(client: FaceGateClient, obama: int) -> None:
    with pytest.raises(ConflictError) as caught:
        client.register("Barack Obama", OBAMA_2)
    assert caught.value.status_code == 409


@pytest.mark.parametrize(
    ("image", "status"),
    [
        (OBAMA.read_bytes()[:2000], 400),  # truncated JPEG
        (b"\0" * (UPLOAD_LIMIT + 1), 413),
        (b"not an image at all", 415),
    ],
    ids=["truncated", "too-large", "not-an-image"],
)
def test_bad_images(client: FaceGateClient, image: bytes, status: int) -> None:
    with pytest.raises(BadImageError) as caught:
        client.detect(image)
    assert caught.value.status_code == status


def test_unprocessable(client: FaceGateClient) -> None:
    with pytest.raises(UnprocessableError) as caught:
        client.recognize(NO_FACE)
    assert caught.value.detail == str(caught.value) == "no face found in the image"
    with pytest.raises(UnprocessableError) as caught:
        client.detect(SMALL_OBAMA, min_face_size=0)
    # The message is the API's sentence; FastAPI's list of fields stays available beside it.
    assert "min_face_size: Input should be greater than or equal to 1" in str(caught.value)
    assert caught.value.errors is not None and caught.value.errors[0]["loc"] == ["query", "min_face_size"]


def test_busy_server_is_unavailable_then_retried(api_url: str) -> None:
    """Four detections at once on a server with one inference slot and no queue: without retries
    the late ones are 503 (Retry-After: 1); with them every one gets its answer."""

    async def scenario(max_retries: int) -> list[DetectResponse | BaseException]:
        async with AsyncFaceGateClient(api_url, api_key=TOKEN, max_retries=max_retries) as busy:
            return await asyncio.gather(*(busy.detect(LARGE_GROUP) for _ in range(4)), return_exceptions=True)

    answers = asyncio.run(scenario(0))
    refused = [a for a in answers if isinstance(a, UnavailableError)]
    assert refused, answers
    assert all(a.status_code == 503 and a.retry_after == 1.0 for a in refused)
    assert all(isinstance(a, DetectResponse | UnavailableError) for a in answers), answers
    answers = asyncio.run(scenario(20))
    assert all(isinstance(a, DetectResponse) for a in answers), answers


def test_network_errors_are_retried_for_idempotent_calls_only(caplog: pytest.LogCaptureFixture) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    caplog.set_level(logging.INFO, logger=RETRY_LOGGER)
    with FaceGateClient(dead, api_key=TOKEN, max_retries=2) as client:
        with pytest.raises(NetworkError) as caught:
            client.stats()
        assert caught.value.status_code is None
        assert f"cannot reach the API at {dead}" in str(caught.value)
        assert isinstance(caught.value.__cause__, httpx.ConnectError)
        assert len(caplog.records) == 2  # two retries after the first attempt
        caplog.clear()
        with pytest.raises(NetworkError):
            client.register("Nobody", OBAMA)
        assert caplog.records == []


def test_timeout() -> None:
    """A server that takes the request and never answers. (The service itself with a 1 ms read
    timeout was no sure test: on a busy machine the client could be descheduled for longer than
    the detection took, and find the answer waiting.)"""
    with socket.create_server(("127.0.0.1", 0)) as silent:  # connects are queued, never answered
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        with (
            FaceGateClient(url, api_key=TOKEN, timeout=httpx.Timeout(10.0, read=0.2)) as hasty,
            pytest.raises(RequestTimeoutError) as caught,
        ):
            hasty.detect(SMALL_OBAMA)
    assert isinstance(caught.value, NetworkError)
    assert "did not answer in time" in str(caught.value)


# --- retries after 429 ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def limited_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """An API allowing each key one request, then one a second: the second at once is 429 with
    `Retry-After: 1`. Each test takes its own key (its own bucket) from `limited_key`."""
    keys = ",".join(f"k{n}:admin:{key}" for n, key in enumerate(LIMITED_KEYS))
    with api_server(
        tmp_path_factory.mktemp("client-limited"),
        TOKEN,
        FACEGATE_API_KEYS=keys,
        RATE_LIMIT_PER_MINUTE="60",
        RATE_LIMIT_BURST="1",
    ) as url:
        yield url


LIMITED_KEYS = [f"limited-{n}-{uuid.uuid4().hex}" for n in range(8)]
_unused_keys = iter(LIMITED_KEYS)


@pytest.fixture
def limited_key() -> str:
    return next(_unused_keys)


def test_429_is_retried_after_retry_after(
    limited_url: str, limited_key: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=RETRY_LOGGER)
    with FaceGateClient(limited_url, api_key=limited_key) as client:
        client.stats()  # the bucket's only token
        began = time.monotonic()
        assert client.stats().total_users == 0
        waited = time.monotonic() - began
    assert waited >= 1.0  # Retry-After: 1, never less
    assert len(caplog.records) == 1
    assert "over its rate limit" in caplog.text


def test_max_retries_0_raises_the_429(limited_url: str, limited_key: str) -> None:
    with FaceGateClient(limited_url, api_key=limited_key, max_retries=0) as client:
        client.stats()
        with pytest.raises(RateLimitError) as caught:
            client.stats()
    assert caught.value.status_code == 429
    assert caught.value.retry_after == 1.0
    assert "over its rate limit" in str(caught.value)


def test_retry_after_over_the_bound_is_not_waited_for(
    limited_url: str, limited_key: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=RETRY_LOGGER)
    with FaceGateClient(limited_url, api_key=limited_key, max_retry_wait=0.5) as client:
        client.stats()
        with pytest.raises(RateLimitError):
            client.stats()
    assert caplog.records == []


def test_async_429_is_retried(limited_url: str, limited_key: str) -> None:
    async def scenario() -> float:
        async with AsyncFaceGateClient(limited_url, api_key=limited_key) as client:
            await client.stats()
            began = time.monotonic()
            await client.stats()
            return time.monotonic() - began

    assert asyncio.run(scenario()) >= 1.0


def test_stream_over_the_rate_limit_is_refused(limited_url: str, limited_key: str) -> None:
    with FaceGateClient(limited_url, api_key=limited_key) as client:
        client.stats()
        with pytest.raises(RateLimitError) as caught:
            list(client.stream_recognize([SMALL_OBAMA]))
    assert caught.value.status_code == 429


# --- async parity --------------------------------------------------------------------------------


def test_async_client_answers_as_the_sync_one(client: FaceGateClient, api_url: str, obama: int) -> None:
    def reads(c: FaceGateClient) -> list[object]:
        return [
            c.health(),
            c.stats(),
            c.detect(TWO_PEOPLE, min_face_size=40),
            c.detect_annotated(SMALL_OBAMA, format="jpeg"),
            c.recognize(OBAMA_2, threshold=0.1),
            c.verify(BIDEN, BIDEN_2),
            c.users(limit=500),
            c.user(obama),
        ]

    async def scenario() -> tuple[list[object], int, int | None]:
        async with AsyncFaceGateClient(api_url, api_key=TOKEN) as aclient:
            answers: list[object] = [
                await aclient.health(),
                await aclient.stats(),
                await aclient.detect(TWO_PEOPLE, min_face_size=40),
                await aclient.detect_annotated(SMALL_OBAMA, format="jpeg"),
                await aclient.recognize(OBAMA_2, threshold=0.1),
                await aclient.verify(BIDEN, BIDEN_2),
                await aclient.users(limit=500),
                await aclient.user(obama),
            ]
            added = await aclient.add_face(obama, OBAMA_2)
            with pytest.raises(ConflictError) as caught:
                await aclient.register("Barack Obama", OBAMA_2)
            return answers, added.face_count, caught.value.status_code

    synchronous = reads(client)
    asynchronous, face_count, conflict = asyncio.run(scenario())
    assert asynchronous == synchronous
    assert (face_count, conflict) == (2, 409)
    assert client.user(obama).face_count == 2


def test_async_methods_are_the_sync_ones() -> None:
    public = {name for name in dir(FaceGateClient) if not name.startswith("_")}
    assert public - {"close"} == {name for name in dir(AsyncFaceGateClient) if not name.startswith("_")} - {
        "aclose"
    }


# --- the stream helper ---------------------------------------------------------------------------


def test_stream_recognize(client: FaceGateClient, obama: int) -> None:
    answers = list(client.stream_recognize([OBAMA_2, NO_FACE, b"not an image", SMALL_OBAMA]))
    assert [type(a) for a in answers] == [RecognizedFrame, FrameError, FrameError, RecognizedFrame]
    assert [a.frame for a in answers] == [1, 2, 3, 4]
    assert all(a.skipped == 0 for a in answers)  # each frame is sent once the previous one is answered
    first, no_face, not_image, last = answers
    assert isinstance(first, RecognizedFrame) and isinstance(last, RecognizedFrame)
    assert first.matched_user is not None and first.matched_user.id == obama
    assert (no_face.status, not_image.status) == (422, 415)  # type: ignore[union-attr]


def test_stream_recognize_is_lazy(client: FaceGateClient, obama: int) -> None:
    """A camera generator is asked for its next picture only after the previous one's answer."""
    asked: list[int] = []

    def camera() -> Iterator[Path]:
        for number in range(1, 4):
            asked.append(number)
            yield SMALL_OBAMA

    for answer in client.stream_recognize(camera(), threshold=0.1):
        assert asked[-1] == answer.frame
        assert isinstance(answer, RecognizedFrame) and answer.threshold == 0.1


def test_stream_refusals(api_url: str, client: FaceGateClient) -> None:
    with FaceGateClient(api_url, api_key="wrong") as wrong, pytest.raises(AuthError) as caught:
        list(wrong.stream_recognize([SMALL_OBAMA]))
    assert caught.value.status_code == 401
    with pytest.raises(UnprocessableError):
        list(client.stream_recognize([SMALL_OBAMA], threshold=5.0))
    with FaceGateClient(f"http://127.0.0.1:{free_port()}") as dead, pytest.raises(NetworkError):
        list(dead.stream_recognize([SMALL_OBAMA]))


def test_async_stream_recognize(api_url: str, obama: int) -> None:
    async def frames() -> AsyncIterator[Path]:
        for photo in (OBAMA_2, NO_FACE):
            yield photo

    async def scenario() -> list[RecognizedFrame | FrameError]:
        async with AsyncFaceGateClient(api_url, api_key=TOKEN) as client:
            return [answer async for answer in client.stream_recognize(frames())]

    first, second = asyncio.run(scenario())
    assert isinstance(first, RecognizedFrame) and first.matched_user is not None
    assert first.matched_user.id == obama
    assert isinstance(second, FrameError) and second.status == 422


def test_error_without_the_apis_body() -> None:
    """A proxy's own page (nginx's 502) is an error of its status with a sentence, not a parse error."""
    from facegate.client.errors import error_from_response

    error = error_from_response(httpx.Response(502, text="<html>502 Bad Gateway</html>"))
    assert type(error) is FaceGateError
    assert (error.status_code, str(error)) == (502, "HTTP 502 Bad Gateway")


# --- the client alone, as the documentation shows it ---------------------------------------------

WHEELHOUSE = Path(sys.prefix) / "client-wheelhouse"


def documented_client_examples() -> list[str]:
    """The Python blocks of the documentation's "Python client" page."""
    return re.findall(r"```python\n(.*?)```", (REPO / "docs" / "client.md").read_text(), re.S)


@pytest.mark.slow
def test_documented_examples_in_a_venv_with_only_the_client(api_url: str, tmp_path: Path) -> None:
    if not (WHEELHOUSE / ".complete").exists():
        pytest.fail(f"no wheelhouse at {WHEELHOUSE}: run scripts/setup.sh test")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    install = [python, "-m", "pip", "install", "-q", "--no-index", "--find-links", str(WHEELHOUSE)]
    # Nothing of this checkout on the path (PYTHONPATH=src), no pip configuration of this machine.
    env = {k: v for k, v in clean_env(KEY=TOKEN).items() if k != "PYTHONPATH"}
    env |= {"PIP_CONFIG_FILE": os.devnull, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    subprocess.run([*install, str(REPO / "client")], check=True, env=env, cwd=tmp_path)
    server_side = "fastapi", "numpy", "onnxruntime", "dlib", "facegate.api"
    probe = f"import importlib.util as u; print([m for m in {server_side!r} if u.find_spec(m)])"
    absent = subprocess.run(
        [python, "-c", probe], env=env, check=True, capture_output=True, text=True, cwd=tmp_path
    )
    assert absent.stdout.strip() == "[]"
    examples = documented_client_examples()
    assert len(examples) >= 2
    for example in examples:
        code = example.replace("http://127.0.0.1:8000", api_url)
        ran = subprocess.run(
            [python, "-c", code],
            env=env,
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert ran.returncode == 0, f"{example}\n{ran.stdout}\n{ran.stderr}"
        assert "Barack Obama" in ran.stdout
