"""Real-time streams: `WS /ws/detect` and `WS /ws/recognize`.

The client sends frames (JPEG, PNG, WEBP, ... as binary messages); the server answers each frame it
processes with the body of `POST /detect` or `POST /recognize` plus `frame` (the frame's number,
from 1), `skipped` (frames dropped since the previous answer) and `processing_ms`. A receiver task
reads every message as it arrives and keeps only the newest unprocessed frame; a worker task
processes that one. So a client that sends faster than the server can work gets answers about its
latest frame, never a growing backlog, and memory stays at two frames per connection.

Authentication: the `X-API-Key` header, or (browsers cannot set headers on a WebSocket) a first
text message `{"api_key": "..."}`; `WS /ws/liveness` also takes `{"ticket": "..."}`, a short-lived
ticket from `POST /liveness/tickets` (see `facegate.api.tickets`). A missing or wrong key or
ticket, a key without the endpoint's scope and invalid query parameters are answered with one error
message and close code 1008; opening a stream counts against the key's rate limit (a ticket's: the
key it was issued to; over it: status 429, close code 1013). A frame that
cannot be used (not an image, corrupt, too large, no face) is answered with an error message
`{"error", "status", "frame", "skipped"}` and the stream goes on.
"""

from __future__ import annotations

import inspect
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, NoReturn

import anyio
from fastapi import APIRouter, HTTPException, WebSocket, WebSocketDisconnect, status
from pydantic import ValidationError, validate_call

from facegate.api.answers import recognize_image
from facegate.api.auth import Scope
from facegate.api.deps import Services, decode, infer, query
from facegate.api.params import ThresholdQuery, detection_params
from facegate.api.ratelimit import retry_after
from facegate.api.tickets import TICKET_TTL_S, TicketError
from facegate.faces import detection_dict
from facegate.gallery.errors import GalleryError
from facegate.imaging import ImageError
from facegate.pipeline import NoFaceError

logger = logging.getLogger(__name__)

router = APIRouter(tags=["streaming"])

# How long a client without the X-API-Key header has to send its `{"api_key": ...}` message.
AUTH_TIMEOUT = 10.0

Frame = bytes | str  # a text message where a frame was expected is answered with an error
Handler = Callable[[bytes], Awaitable[dict[str, Any]]]


class StreamClosed(Exception):
    """The stream was refused (key, scope, rate or parameters); the socket is already closed."""


@dataclass(frozen=True, slots=True)
class Taken:
    number: int
    data: Frame
    skipped: int  # frames replaced by newer ones since the previous take


class LatestFrame:
    """A one-frame mailbox: a frame not yet taken is replaced (and counted) when a newer one arrives."""

    def __init__(self) -> None:
        self._pending: Frame | None = None
        self.received = 0
        self._skipped = 0
        self._arrived = anyio.Event()

    def put(self, data: Frame) -> None:
        self.received += 1
        if self._pending is not None:
            self._skipped += 1
        self._pending = data
        self._arrived.set()

    async def take(self) -> Taken:
        """The newest frame, waiting for one when none is pending."""
        while self._pending is None:
            await self._arrived.wait()
            self._arrived = anyio.Event()  # anyio events cannot be cleared; a fresh one waits anew
        taken = Taken(self.received, self._pending, self._skipped)
        self._pending, self._skipped = None, 0
        return taken


# --- the endpoints -------------------------------------------------------------------------------

# The HTTP routes' own parameter functions, validated the same way from the socket's query string.
_detection_params = validate_call(detection_params)


@validate_call
def _threshold(threshold: ThresholdQuery = None) -> float | None:
    return threshold


@router.websocket("/ws/detect")
async def detect_stream(websocket: WebSocket) -> None:
    """Detection on every frame: the body of `POST /detect` plus frame, skipped and processing_ms."""
    try:
        services = await _open(websocket, Scope.DETECT)
        params = await _query(websocket, _detection_params)
    except (StreamClosed, WebSocketDisconnect):
        return

    async def handle(data: bytes) -> dict[str, Any]:
        image = await decode(services, data)
        faces = await infer(services, lambda: services.pipeline.detect(image, params))
        return detection_dict(faces)

    await _serve(websocket, handle)


@router.websocket("/ws/recognize")
async def recognize_stream(websocket: WebSocket) -> None:
    """Recognition on every frame: the body of `POST /recognize` plus frame, skipped and processing_ms."""
    try:
        services = await _open(websocket, Scope.RECOGNIZE)
        threshold = await _query(websocket, _threshold)
    except (StreamClosed, WebSocketDisconnect):
        return

    async def handle(data: bytes) -> dict[str, Any]:
        answer = await recognize_image(services, await decode(services, data), threshold)
        return answer.model_dump(mode="json")

    await _serve(websocket, handle)


# --- opening: key, scope, parameters -------------------------------------------------------------


async def _open(websocket: WebSocket, scope: Scope, ticket_grant: str | None = None) -> Services:
    """Accept the socket and check the caller's key and its scope, or, on an endpoint that takes
    tickets (`ticket_grant`), a ticket for it; `StreamClosed` when refused."""
    await websocket.accept()
    services: Services = websocket.app.state.services
    credentials = await _credentials(websocket)
    holder = _ticket_holder(services, credentials.ticket, ticket_grant)
    by_ticket = holder is not None
    if holder is None:
        holder = await _key_holder(websocket, services, credentials.api_key, scope, ticket_grant)
    # Opening a stream counts as one request of the key's rate (a ticket's: the key it was issued
    # to); its frames are bounded already, one inference at a time per stream. In a worker thread:
    # the shared limiter asks the database.
    if (wait := await query(lambda: services.rate_limiter.acquire(holder))) > 0:
        await _refuse(
            websocket,
            status.HTTP_429_TOO_MANY_REQUESTS,
            f"the key '{holder}' is over its rate limit; retry in {retry_after(wait)} s",
            close_code=status.WS_1013_TRY_AGAIN_LATER,
        )
    _remember(websocket, holder, by_ticket=by_ticket)
    return services


@dataclass(frozen=True, slots=True)
class Credentials:
    api_key: str | None = None
    ticket: str | None = None


async def _credentials(websocket: WebSocket) -> Credentials:
    """The header's key, else what the first message holds (waiting at most AUTH_TIMEOUT)."""
    if header := websocket.headers.get("x-api-key"):
        return Credentials(api_key=header)
    with anyio.move_on_after(AUTH_TIMEOUT):
        message = await websocket.receive()
        return _credentials_in(message.get("text"))  # nothing for a frame sent first or a disconnect
    return Credentials()


def _credentials_in(text: str | None) -> Credentials:
    try:
        body = json.loads(text or "")
    except ValueError:
        return Credentials()
    if not isinstance(body, dict):
        return Credentials()
    key, ticket = body.get("api_key"), body.get("ticket")
    return Credentials(key if isinstance(key, str) else None, ticket if isinstance(ticket, str) else None)


def _ticket_holder(services: Services, ticket: str | None, grant: str | None) -> str | None:
    """The name of the key a valid ticket for `grant` was issued to; None without one."""
    if ticket is None or grant is None:
        return None  # a ticket opens only the endpoint it was made for
    try:
        return services.tickets.verify(ticket, grant)
    except TicketError as exc:
        logger.info("stream ticket refused: %s", exc)
        return None


async def _key_holder(
    websocket: WebSocket, services: Services, presented: str | None, scope: Scope, ticket_grant: str | None
) -> str:
    """The name of the presented key, when it exists and covers `scope`; refuses the socket otherwise."""
    key = services.keys.identify(presented)
    if key is None:
        await _refuse(
            websocket, status.HTTP_401_UNAUTHORIZED, _NO_KEY + (_TICKET_HINT if ticket_grant else "")
        )
    if not key.allows(scope):
        await _refuse(
            websocket,
            status.HTTP_403_FORBIDDEN,
            f"the key '{key.name}' has scope '{key.scope}'; this needs '{scope}'",
        )
    return key.name


_NO_KEY = 'missing or wrong API key: send the X-API-Key header or a first message {"api_key": "..."}'
_TICKET_HINT = f' (or {{"ticket": "..."}} from POST /liveness/tickets, valid {TICKET_TTL_S} s)'


def _remember(websocket: WebSocket, holder: str, *, by_ticket: bool) -> None:
    # The same record HTTP requests keep (auth.authenticate): logs name the key, never show it.
    websocket.state.key_name = holder
    how = "a ticket of key" if by_ticket else "key"
    logger.info("%s stream opened by %s '%s'", websocket.url.path, how, holder)


async def _query(websocket: WebSocket, parse: Callable[..., Any]) -> Any:
    """`parse` applied to the query parameters it knows (others are ignored, as over HTTP)."""
    known = inspect.signature(parse).parameters
    try:
        return parse(**{name: value for name, value in websocket.query_params.items() if name in known})
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        await _refuse(websocket, status.HTTP_422_UNPROCESSABLE_CONTENT, problems)


async def _refuse(
    websocket: WebSocket, code: int, detail: str, close_code: int = status.WS_1008_POLICY_VIOLATION
) -> NoReturn:
    await _send(websocket, {"error": detail, "status": code})
    await websocket.close(close_code, reason=_CLOSE_REASONS[code])
    raise StreamClosed


_CLOSE_REASONS = {401: "unauthorized", 403: "forbidden", 422: "invalid parameters", 429: "rate limited"}


async def _send(websocket: WebSocket, body: dict[str, Any]) -> None:
    with anyio.CancelScope(shield=True):  # a reply is sent whole or not at all
        await websocket.send_json(body)


# --- the stream ----------------------------------------------------------------------------------


async def _serve(websocket: WebSocket, handle: Handler) -> None:
    """Receive into a LatestFrame and answer from it until the client goes away."""
    mailbox = LatestFrame()
    try:
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(_answer, websocket, mailbox, handle)
            await _receive(websocket, mailbox)
            # The client is gone: drop the pending frame rather than work for nobody.
            tasks.cancel_scope.cancel()
    except* WebSocketDisconnect:
        pass  # the client went away while an answer was being sent
    logger.info("%s stream closed after %d frame(s)", websocket.url.path, mailbox.received)


async def _receive(websocket: WebSocket, mailbox: LatestFrame) -> None:
    while (message := await websocket.receive())["type"] != "websocket.disconnect":
        data = message.get("bytes")
        mailbox.put(data if data is not None else message.get("text") or "")


async def _answer(websocket: WebSocket, mailbox: LatestFrame, handle: Handler) -> None:
    while True:
        taken = await mailbox.take()
        began = time.perf_counter()
        body = await _process(taken, handle)
        elapsed = round((time.perf_counter() - began) * 1000, 1)
        await _send(
            websocket, {**body, "frame": taken.number, "skipped": taken.skipped, "processing_ms": elapsed}
        )


async def _process(taken: Taken, handle: Handler) -> dict[str, Any]:
    """The handler's answer, or the error of a frame that cannot be used (the stream goes on)."""
    if isinstance(taken.data, str):
        return _error(status.HTTP_400_BAD_REQUEST, "send each frame as a binary message")
    try:
        return await handle(taken.data)
    except ImageError as exc:
        return _error(exc.status, str(exc))
    except NoFaceError as exc:
        return _error(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc))
    except HTTPException as exc:  # the inference queue is full (503), ...
        return _error(exc.status_code, str(exc.detail))
    except GalleryError as exc:
        logger.warning("stream frame %d: gallery unavailable: %s", taken.number, exc)
        return _error(status.HTTP_503_SERVICE_UNAVAILABLE, str(exc))
    except Exception:
        # As over HTTP: the client learns nothing of the failure but that it happened.
        logger.exception("stream frame %d failed", taken.number)
        return _error(status.HTTP_500_INTERNAL_SERVER_ERROR, "internal server error")


def _error(code: int, detail: str) -> dict[str, Any]:
    return {"error": detail, "status": code}
