"""The rules the streams share with HTTP, once: `errors.status_of` (an exception as a status and a
sentence), `auth.authorize` (401, 403, 429) and the frame loop of `facegate.api.streaming`.

The endpoints' behaviour is tested in test_stream.py, test_liveness_ws.py and test_security.py;
these tests call the shared functions directly, with the real key ring and rate limiter.
"""

from __future__ import annotations

import ast
import logging
from typing import Any, cast

import anyio
import pytest
from fastapi import HTTPException, WebSocket

from facegate.api import errors, streaming
from facegate.api.auth import KeyRing, Refused, Scope, authorize, charge
from facegate.api.ratelimit import RateLimiter
from facegate.gallery.errors import DuplicateNameError, GalleryUnavailable, UnknownUserError
from facegate.imaging import ImageTooLarge, UnsupportedImageType
from facegate.names import InvalidNameError
from facegate.pipeline import NoFaceError
from tests.data import REPO
from tests.support import FakeClock

ROUTES = REPO / "src" / "facegate" / "api" / "routes"


# --- one exception mapping -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (UnsupportedImageType("not an image"), (415, "not an image")),
        (ImageTooLarge("too large"), (413, "too large")),
        (NoFaceError("no face found in the image"), (422, "no face found in the image")),
        (InvalidNameError("the name is empty"), (422, "the name is empty")),
        (DuplicateNameError("Ann"), (409, "a person named 'Ann' is already registered")),
        (UnknownUserError(7), (404, "no user with id 7")),
        (HTTPException(503, "busy: retry shortly"), (503, "busy: retry shortly")),
    ],
)
def test_status_of_maps_each_client_error_to_its_status_and_message(
    exc: Exception, expected: tuple[int, str], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger=errors.__name__):
        assert errors.status_of(exc, "POST /x") == expected
    assert caplog.records == []  # a client's mistake is no news for the operator


def test_an_unavailable_gallery_is_503_with_the_database_message_logged_only(
    caplog: pytest.LogCaptureFixture,
) -> None:
    exc = GalleryUnavailable("the database is unavailable")
    exc.__cause__ = OSError("connection refused on /secret/socket/path")
    with caplog.at_level(logging.WARNING, logger=errors.__name__):
        assert errors.status_of(exc, "/ws/recognize frame 3") == (503, "the database is unavailable")
    [record] = caplog.records
    assert record.levelno == logging.WARNING
    assert "/ws/recognize frame 3" in record.getMessage() and "/secret/socket/path" in record.getMessage()


def test_any_other_exception_is_a_bare_500_with_its_stack_trace_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    try:
        raise KeyError("a detail the client must not see")
    except KeyError as raised:
        exc = raised
    with caplog.at_level(logging.ERROR, logger=errors.__name__):
        assert errors.status_of(exc, "POST /detect") == (500, "internal server error")
    [record] = caplog.records
    assert "POST /detect" in record.getMessage()
    assert record.exc_info is not None and record.exc_info[1] is exc


def test_a_stream_frame_gets_the_same_mapping_as_a_request() -> None:
    async def failing(data: bytes) -> dict[str, Any]:
        raise NoFaceError("no face found in the image")

    async def broken(data: bytes) -> dict[str, Any]:
        raise RuntimeError("a bug")

    socket = cast(WebSocket, _Socket())
    frame = streaming.Frame(4, b"jpeg", 1)
    assert anyio.run(streaming.process, socket, frame, failing) == {
        "error": "no face found in the image",
        "status": 422,
    }
    assert anyio.run(streaming.process, socket, frame, broken) == {
        "error": "internal server error",
        "status": 500,
    }
    text = streaming.Frame(5, "a text message", 0)
    assert anyio.run(streaming.process, socket, text, failing)["status"] == 400


# --- one authorisation ---------------------------------------------------------------------------


@pytest.fixture
def keys() -> KeyRing:
    return KeyRing.parse("admin-key", "cam:detect:detect-key")


def test_authorize_refuses_a_missing_or_wrong_key_with_401_and_the_transport_hint(keys: KeyRing) -> None:
    unlimited = RateLimiter(per_minute=0, burst=1)
    for presented in (None, "", "guessed"):
        with pytest.raises(Refused) as refused:
            authorize(keys, unlimited, presented, Scope.DETECT, hint="send a first message")
        assert refused.value.status == 401 and refused.value.holder is None
        assert refused.value.detail == "missing or wrong API key: send a first message"
    with pytest.raises(Refused, match="send it in the X-API-Key header"):
        authorize(keys, unlimited, None, Scope.DETECT)  # HTTP's hint by default


def test_authorize_refuses_a_key_without_the_scope_with_403_before_counting_it(keys: KeyRing) -> None:
    limiter = RateLimiter(per_minute=1, burst=1, clock=FakeClock())
    for _ in range(3):  # refused each time for its scope, never for its rate
        with pytest.raises(Refused) as refused:
            authorize(keys, limiter, "detect-key", Scope.RECOGNIZE)
        assert (refused.value.status, refused.value.holder) == (403, "cam")
        assert refused.value.detail == "the key 'cam' has scope 'detect'; this needs 'recognize'"
    assert authorize(keys, limiter, "detect-key", Scope.DETECT).name == "cam"  # its one token was left


def test_authorize_counts_each_allowed_call_and_refuses_past_the_rate_with_429(keys: KeyRing) -> None:
    limiter = RateLimiter(per_minute=6, burst=2, clock=FakeClock())
    assert [authorize(keys, limiter, "admin-key", Scope.ADMIN).name for _ in range(2)] == ["admin"] * 2
    with pytest.raises(Refused) as refused:
        authorize(keys, limiter, "admin-key", Scope.DETECT)
    assert (refused.value.status, refused.value.retry_after, refused.value.holder) == (429, "10", "admin")
    assert refused.value.detail == "the key 'admin' is over its rate limit; retry in 10 s"
    with pytest.raises(Refused, match="over its rate limit"):
        charge(limiter, "admin")  # what a ticket's stream is charged: the same bucket


# --- the frame loop ------------------------------------------------------------------------------


class _Socket:
    """What the frame loop needs of a WebSocket: where a failure happened, and a place to send to."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []
        self.url = type("URL", (), {"path": "/ws/test"})()

    async def send_json(self, body: dict[str, Any]) -> None:
        self.sent.append(body)


def test_the_frame_loop_stops_at_its_deadline_without_a_frame() -> None:
    async def answer(frame: streaming.Frame) -> dict[str, Any]:
        return {"frame": frame.number}

    async def scenario() -> list[dict[str, Any]]:
        socket, mailbox = _Socket(), streaming.LatestFrame()
        mailbox.put(b"1")
        mailbox.put(b"2")
        with anyio.fail_after(30):  # a generous bound: the loop must return, not wait for frames
            await streaming.answer_frames(cast(WebSocket, socket), mailbox, answer, seconds_left=lambda: 0.05)
        return socket.sent

    assert anyio.run(scenario) == [{"frame": 2}]  # the newest frame answered, then no more by the deadline


def test_the_frame_loop_stops_once_done() -> None:
    async def scenario() -> list[dict[str, Any]]:
        socket, mailbox = _Socket(), streaming.LatestFrame()

        async def answer(frame: streaming.Frame) -> dict[str, Any]:
            mailbox.put(b"next")  # a frame is always waiting: only `done` can stop the loop
            return {"frame": frame.number}

        mailbox.put(b"1")
        await streaming.answer_frames(
            cast(WebSocket, socket), mailbox, answer, done=lambda: len(socket.sent) == 3
        )
        return socket.sent

    assert anyio.run(scenario) == [{"frame": 1}, {"frame": 2}, {"frame": 3}]


# --- layout --------------------------------------------------------------------------------------


def test_no_route_module_imports_another() -> None:
    """Routes share code through the library modules (streaming, answers, params), never each other."""
    found = [
        f"{module.name}: {name}"
        for module in ROUTES.glob("*.py")
        for name in _imported(ast.parse(module.read_text()))
        if name.startswith("facegate.api.routes") or name.startswith(".")
    ]
    assert found == []


def _imported(tree: ast.Module) -> list[str]:
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            names.append("." * node.level + (node.module or ""))
    return names
