"""What every WebSocket stream shares: opening (key, ticket, rate, parameters), the latest-frame
buffer and the frame loop. The endpoints (`facegate.api.routes.stream`, `...routes.liveness`) say
only what a frame's answer is.

Authentication: the `X-API-Key` header, or (browsers cannot set headers on a WebSocket) a first
text message `{"api_key": "..."}`; an endpoint that takes tickets (`WS /ws/liveness`) also takes
`{"ticket": "..."}`, a short-lived ticket from `POST /liveness/tickets` (see
`facegate.api.tickets`). A missing or wrong key or ticket, a key without the endpoint's scope and
invalid query parameters are answered with one error message `{"error", "status"}` and close code
1008; opening a stream counts against the key's rate limit (a ticket's: the key it was issued to;
over it: status 429, close code 1013). The rules are those of HTTP (`auth.authorize`).

Frames: binary messages (JPEG, PNG, WEBP, ...). A receiver task reads every message as it arrives
and keeps only the newest unprocessed frame (`LatestFrame`); the frame loop answers that one. So a
client that sends faster than the server can work gets answers about its latest frame, never a
growing backlog, and memory stays at two frames per connection. A frame that cannot be used (not
an image, corrupt, too large, no face) is answered with an error `{"error", "status"}` mapped as
over HTTP (`errors.status_of`), and the stream goes on.
"""

from __future__ import annotations

import inspect
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, NoReturn

import anyio
from fastapi import WebSocket, WebSocketDisconnect, status
from pydantic import ValidationError

from facegate.api.auth import Refused, Scope, authorize, charge
from facegate.api.deps import Services, query
from facegate.api.errors import status_of
from facegate.api.params import admit_collection
from facegate.api.tickets import TICKET_TTL_S, TicketError
from facegate.gallery import DEFAULT_COLLECTION, GalleryError

logger = logging.getLogger(__name__)

# How long a client without the X-API-Key header has to send its `{"api_key": ...}` message.
AUTH_TIMEOUT = 10.0
# Longer than any message holding a key or a ticket (at most 1 KiB): a longer one is not parsed.
_MAX_CREDENTIALS_CHARS = 4096

Message = bytes | str  # a text message where a frame was expected is answered with an error
Handler = Callable[[bytes], Awaitable[dict[str, Any]]]


class StreamClosed(Exception):
    """The stream was refused (key, scope, rate or parameters); the socket is already closed."""


# --- the latest-frame buffer ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Frame:
    """A frame taken from a `LatestFrame`: its number (from 1) and the frames dropped before it."""

    number: int
    data: Message
    skipped: int  # frames replaced by newer ones since the previous take


class LatestFrame:
    """A one-frame mailbox: a frame not yet taken is replaced (and counted) when a newer one arrives."""

    def __init__(self) -> None:
        self._pending: Message | None = None
        self.received = 0
        self._skipped = 0
        self._arrived = anyio.Event()

    def put(self, data: Message) -> None:
        self.received += 1
        if self._pending is not None:
            self._skipped += 1
        self._pending = data
        self._arrived.set()

    async def take(self) -> Frame:
        """The newest frame, waiting for one when none is pending."""
        while self._pending is None:
            await self._arrived.wait()
            self._arrived = anyio.Event()  # anyio events cannot be cleared; a fresh one waits anew
        frame = Frame(self.received, self._pending, self._skipped)
        self._pending, self._skipped = None, 0
        return frame


# --- opening: key or ticket, rate, parameters ----------------------------------------------------


async def open_stream(websocket: WebSocket, scope: Scope, ticket_grant: str | None = None) -> Services:
    """Accept the socket and check the caller's key, its scope and its rate, or, on an endpoint that
    takes tickets (`ticket_grant`), a ticket for it; `StreamClosed` when refused."""
    await websocket.accept()
    services: Services = websocket.app.state.services
    credentials = await _credentials(websocket)
    try:
        # In a worker thread: the shared rate limiter asks the database.
        holder, by_ticket = await query(lambda: _admit(services, credentials, scope, ticket_grant))
    except Refused as refused:
        await _refuse(websocket, refused.status, refused.detail)
    # The same record HTTP requests keep (auth.require): logs name the key, never show it.
    websocket.state.key_name = holder
    websocket.state.by_ticket = by_ticket
    return services


def _admit(
    services: Services, credentials: _Credentials, scope: Scope, ticket_grant: str | None
) -> tuple[str, bool]:
    """The name of the key the stream is for, and whether a ticket opened it; `Refused` otherwise.

    Opening a stream counts as one request of the key's rate (a ticket's: the key it was issued to);
    its frames are bounded already, one inference at a time per stream.
    """
    holder = _ticket_holder(services, credentials.ticket, ticket_grant)
    if holder is not None:
        charge(services.rate_limiter, holder)
        return holder, True
    hint = _KEY_HINT + (_TICKET_HINT if ticket_grant else "")
    key = authorize(services.keys, services.rate_limiter, credentials.api_key, scope, hint=hint)
    return key.name, False


async def open_collection(websocket: WebSocket, services: Services) -> str:
    """The collection the stream searches: `?collection=` (default `default`), one its key is bound
    to (403) and that exists (404), checked once at the opening."""
    collection = websocket.query_params.get("collection", DEFAULT_COLLECTION)
    key = services.keys.named(websocket.state.key_name)
    assert key is not None  # open_stream recorded a key's name (a ticket's: the key it was issued to)
    try:
        return await query(lambda: admit_collection(services, key, collection))
    except Refused as refused:
        await _refuse(websocket, refused.status, refused.detail)
    except GalleryError as exc:
        await _refuse(websocket, *status_of(exc, f"{websocket.url.path} opening"))


_KEY_HINT = 'send the X-API-Key header or a first message {"api_key": "..."}'
_TICKET_HINT = f' (or {{"ticket": "..."}} from POST /liveness/tickets, valid {TICKET_TTL_S} s)'


@dataclass(frozen=True, slots=True)
class _Credentials:
    api_key: str | None = None
    ticket: str | None = None


async def _credentials(websocket: WebSocket) -> _Credentials:
    """The header's key, else what the first message holds (waiting at most AUTH_TIMEOUT)."""
    if header := websocket.headers.get("x-api-key"):
        return _Credentials(api_key=header)
    with anyio.move_on_after(AUTH_TIMEOUT):
        message = await websocket.receive()
        return _credentials_in(message.get("text"))  # nothing for a frame sent first or a disconnect
    return _Credentials()


def _credentials_in(text: str | None) -> _Credentials:
    """The key or ticket a first message holds; none for anything malformed (refused as a wrong key)."""
    if not text or len(text) > _MAX_CREDENTIALS_CHARS:
        return _Credentials()
    try:
        body = json.loads(text)
    except (ValueError, RecursionError):  # RecursionError: `[[[[...` nested past the parser's depth
        return _Credentials()
    if not isinstance(body, dict):
        return _Credentials()
    return _Credentials(_credential(body.get("api_key")), _credential(body.get("ticket")))


def _credential(value: object) -> str | None:
    """`value` if it can be a key or a ticket: text that encodes (JSON lets a lone surrogate through,
    which no key and no ticket holds and which would fail their hashing)."""
    if not isinstance(value, str):
        return None
    try:
        value.encode()
    except UnicodeEncodeError:
        return None
    return value


def _ticket_holder(services: Services, ticket: str | None, grant: str | None) -> str | None:
    """The name of the key a valid ticket for `grant` was issued to; None without one."""
    if ticket is None or grant is None:
        return None  # a ticket opens only the endpoint it was made for
    try:
        return services.tickets.verify(ticket, grant)
    except TicketError as exc:
        logger.info("stream ticket refused: %s", exc)
        return None


async def query_params(websocket: WebSocket, parse: Callable[..., Any]) -> Any:
    """`parse` (a `pydantic.validate_call` function) applied to the query parameters it knows (others
    are ignored, as over HTTP); invalid ones refuse the socket."""
    known = inspect.signature(parse).parameters
    try:
        return parse(**{name: value for name, value in websocket.query_params.items() if name in known})
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        await _refuse(websocket, status.HTTP_422_UNPROCESSABLE_CONTENT, problems)


async def _refuse(websocket: WebSocket, code: int, detail: str) -> NoReturn:
    """Send the one error message, close the socket and raise `StreamClosed`."""
    await send(websocket, _error_body(code, detail))
    close_code, reason = _CLOSES[code]
    await websocket.close(close_code, reason=reason)
    raise StreamClosed


_CLOSES = {
    status.HTTP_401_UNAUTHORIZED: (status.WS_1008_POLICY_VIOLATION, "unauthorized"),
    status.HTTP_403_FORBIDDEN: (status.WS_1008_POLICY_VIOLATION, "forbidden"),
    status.HTTP_404_NOT_FOUND: (status.WS_1008_POLICY_VIOLATION, "no such collection"),
    status.HTTP_422_UNPROCESSABLE_CONTENT: (status.WS_1008_POLICY_VIOLATION, "invalid parameters"),
    status.HTTP_429_TOO_MANY_REQUESTS: (status.WS_1013_TRY_AGAIN_LATER, "rate limited"),
    status.HTTP_503_SERVICE_UNAVAILABLE: (status.WS_1013_TRY_AGAIN_LATER, "gallery unavailable"),
}


async def send(websocket: WebSocket, body: dict[str, Any]) -> None:
    with anyio.CancelScope(shield=True):  # a reply is sent whole or not at all
        await websocket.send_json(body)


def _error_body(code: int, detail: str) -> dict[str, Any]:
    return {"error": detail, "status": code}


# --- the frame loop ------------------------------------------------------------------------------


async def serve(websocket: WebSocket, handle: Handler) -> None:
    """Answer each frame with `handle`'s body plus `frame`, `skipped` and `processing_ms` until the
    client goes away."""

    async def answer(frame: Frame) -> dict[str, Any]:
        began = time.perf_counter()
        body = await process(websocket, frame, handle)
        elapsed = round((time.perf_counter() - began) * 1000, 1)
        return {**body, "frame": frame.number, "skipped": frame.skipped, "processing_ms": elapsed}

    async with receiving(websocket) as mailbox:
        await answer_frames(websocket, mailbox, answer)
    logger.info("%s stream closed after %d frame(s)", websocket.url.path, mailbox.received)


@asynccontextmanager
async def receiving(websocket: WebSocket) -> AsyncIterator[LatestFrame]:
    """A `LatestFrame` that a receiver task fills while the block runs. When the client goes away
    the block is cancelled (the pending frame dropped rather than worked on for nobody), and a send
    that finds it gone ends the block quietly too; the block's end stops the receiver."""
    # Every check has passed once the frames begin: a refused stream is never logged as opened.
    how = "a ticket of key" if websocket.state.by_ticket else "key"
    logger.info("%s stream opened by %s '%s'", websocket.url.path, how, websocket.state.key_name)
    mailbox = LatestFrame()
    try:
        async with anyio.create_task_group() as tasks:

            async def receive() -> None:
                while (message := await websocket.receive())["type"] != "websocket.disconnect":
                    data = message.get("bytes")
                    mailbox.put(data if data is not None else message.get("text") or "")
                tasks.cancel_scope.cancel()

            tasks.start_soon(receive)
            yield mailbox
            tasks.cancel_scope.cancel()
    except* WebSocketDisconnect:
        pass  # the client went away while a message was being sent


async def answer_frames(
    websocket: WebSocket,
    mailbox: LatestFrame,
    answer: Callable[[Frame], Awaitable[dict[str, Any]]],
    *,
    done: Callable[[], bool] = lambda: False,
    seconds_left: Callable[[], float] | None = None,
) -> None:
    """Send `answer(frame)` for each frame taken from `mailbox`, until `done()` holds or no frame
    comes within `seconds_left()` (a deadline; without one the loop runs until the client leaves)."""
    while not done():
        frame: Frame | None = None
        with anyio.move_on_after(None if seconds_left is None else seconds_left()):
            frame = await mailbox.take()
        if frame is None:
            return
        await send(websocket, await answer(frame))


async def process(websocket: WebSocket, frame: Frame, handle: Handler) -> dict[str, Any]:
    """`handle`'s answer to the frame, or the error of a frame that cannot be used (the stream goes on)."""
    if isinstance(frame.data, str):
        return _error_body(status.HTTP_400_BAD_REQUEST, "send each frame as a binary message")
    try:
        return await handle(frame.data)
    except Exception as exc:
        return _error_body(*status_of(exc, f"{websocket.url.path} frame {frame.number}"))
