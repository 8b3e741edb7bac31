"""`WS /ws/liveness`: an active liveness challenge on a camera stream, ending in one verdict.

Protocol (JSON text messages from the server, binary frames from the client):

1. Authentication as on the other sockets (`X-API-Key` header or a first `{"api_key": ...}`
   message; scope `recognize`; see `facegate.api.streaming`), or a first
   `{"ticket": ...}` message: a ticket from `POST /liveness/tickets`, so that a page in a browser
   can open a session without holding an API key (see `facegate.api.tickets`).
2. The server opens a session and sends `{"type": "session", "session_id", "challenges",
   "deadline" (Unix time), "timeout_s"}`.
3. For each frame it processes: `{"type": "progress", "frame", "skipped", "face_found",
   "current", "completed", "hint", "signals"}`; a frame it cannot use gets `{"type": "error",
   "error", "status", "frame", "skipped"}` and the session goes on. As on `/ws/detect`, frames
   that arrive while one is being processed replace each other, so a fast camera never builds a
   backlog.
4. At the end, `{"type": "verdict", "session_id", "live", "score", "reasons", "messages",
   "challenges", "completed", "recognition"}` — `recognition` is the body of `POST /recognize`
   for the most frontal frame when live, else null — then the server closes the socket (1000).
   A session opened with a ticket gets no `candidates` in it: the page in a browser learns who
   matched, never who was nearest when nobody did.

A session lives only as long as its socket: it is single-use by construction, and it ends with
a verdict at its deadline even when the client sends nothing more. A client that leaves early
ends it without a verdict; nothing keeps running for it.
"""

from __future__ import annotations

import contextlib
import logging
import time
from typing import Annotated, Any

from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from starlette.websockets import WebSocketState

from facegate.api.answers import recognize_image
from facegate.api.auth import ApiKey, Scope, require
from facegate.api.deps import Services, ServicesDep, decode, infer
from facegate.api.schemas import KEYED_ERRORS, error_responses
from facegate.api.streaming import (
    Frame,
    LatestFrame,
    StreamClosed,
    answer_frames,
    open_collection,
    open_stream,
    process,
    receiving,
    send,
)
from facegate.api.tickets import LIVENESS_GRANT
from facegate.events import Sighting
from facegate.gallery.errors import GalleryError
from facegate.liveness.frames import observe_frame
from facegate.liveness.session import LivenessLimits, Progress, Session
from facegate.schemas import TicketResponse

logger = logging.getLogger(__name__)

router = APIRouter(tags=["liveness"])


@router.post("/liveness/tickets", response_model=TicketResponse, responses=error_responses(*KEYED_ERRORS))
async def liveness_ticket(
    services: ServicesDep, key: Annotated[ApiKey, require(Scope.RECOGNIZE)]
) -> TicketResponse:
    """A ticket that opens `WS /ws/liveness` for TICKET_TTL_S (60 s): what a browser page sends as its
    first message `{"ticket": "..."}` instead of an API key it must not hold."""
    ticket = services.tickets.issue(LIVENESS_GRANT, key.name)
    return TicketResponse(ticket=ticket.token, expires_at=ticket.expires_at)


@router.websocket("/ws/liveness")
async def liveness_stream(websocket: WebSocket) -> None:
    try:
        services = await open_stream(websocket, Scope.RECOGNIZE, ticket_grant=LIVENESS_GRANT)
        collection = await open_collection(websocket, services)
    except (StreamClosed, WebSocketDisconnect):
        return
    limits = LivenessLimits.from_settings(services.settings, services.policy)
    session = Session.start(limits, rng=services.challenge_rng, clock=services.challenge_clock)
    async with receiving(websocket) as mailbox:  # cancelled when the client leaves
        await send(websocket, _opening(session))
        await _run(websocket, services, session, mailbox, collection)
    if session.verdict is None:
        logger.info(
            "liveness session %s abandoned by the client after %d frame(s)", session.id, mailbox.received
        )
        return
    if websocket.client_state is WebSocketState.CONNECTED:
        with contextlib.suppress(WebSocketDisconnect):  # the client may leave as the verdict arrives
            await websocket.close()


def _opening(session: Session) -> dict[str, Any]:
    return {
        "type": "session",
        "session_id": session.id,
        "challenges": list(session.challenges),
        "deadline": round(time.time() + session.remaining(), 3),
        "timeout_s": session.limits.timeout_s,
    }


async def _run(
    websocket: WebSocket, services: Services, session: Session, mailbox: LatestFrame, collection: str
) -> None:
    """Answer frames until the session has its verdict (or its deadline passes), then send it."""

    async def handle(data: bytes) -> dict[str, Any]:
        image = await decode(services, data)
        observation = await infer(services, lambda: observe_frame(services.pipeline, image))
        return _progress(session.observe(observation))

    async def answer(frame: Frame) -> dict[str, Any]:
        body = await process(websocket, frame, handle)
        if "error" in body:
            body = {"type": "error", **body}
        return {**body, "frame": frame.number, "skipped": frame.skipped}

    await answer_frames(
        websocket,
        mailbox,
        answer,
        done=lambda: session.verdict is not None,
        seconds_left=session.remaining,
    )
    if session.verdict is None:
        session.expire()
    sighting = Sighting(collection, "liveness", websocket.state.key_name)
    verdict = await _verdict(services, session, sighting, candidates=not websocket.state.by_ticket)
    await send(websocket, verdict)


def _progress(progress: Progress) -> dict[str, Any]:
    signals = progress.signals
    return {
        "type": "progress",
        "face_found": progress.face_found,
        "current": progress.current,
        "completed": list(progress.completed),
        "hint": progress.hint,
        "signals": None
        if signals is None
        else {
            "ear": round(signals.ear, 4),
            "mar": round(signals.mar, 4),
            "yaw": round(signals.yaw, 4),
            "residual": None if signals.residual is None else round(signals.residual, 4),
        },
    }


async def _verdict(
    services: Services, session: Session, sighting: Sighting, *, candidates: bool
) -> dict[str, Any]:
    """The verdict message; its recognition without the faces' `candidates` unless `candidates`."""
    verdict = session.verdict
    assert verdict is not None
    recognition = None
    if verdict.live and verdict.best is not None and verdict.best.image is not None:
        try:
            image = verdict.best.image
            answer = await recognize_image(services, image, None, sighting.collection, sighting=sighting)
            if not candidates:
                faces = [face.model_copy(update={"candidates": []}) for face in answer.faces]
                answer = answer.model_copy(update={"faces": faces})
            recognition = answer.model_dump(mode="json")
        except GalleryError as exc:
            logger.warning("liveness session %s: gallery unavailable for recognition: %s", session.id, exc)
    return {
        "type": "verdict",
        "session_id": session.id,
        "live": verdict.live,
        "score": round(verdict.score, 4),
        "reasons": list(verdict.reasons),
        "messages": list(verdict.messages),
        "challenges": list(session.challenges),
        "completed": list(verdict.completed),
        "recognition": recognition,
    }
