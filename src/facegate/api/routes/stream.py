"""Real-time streams: `WS /ws/detect` and `WS /ws/recognize`.

The client sends frames (JPEG, PNG, WEBP, ... as binary messages); the server answers each frame it
processes with the body of `POST /detect` or `POST /recognize` plus `frame` (the frame's number,
from 1), `skipped` (frames dropped since the previous answer) and `processing_ms`. Frames that
arrive while one is being processed replace each other, so a client that sends faster than the
server can work gets answers about its latest frame, never a growing backlog.

Authentication: the `X-API-Key` header or a first text message `{"api_key": "..."}`; scope
`detect` for `/ws/detect`, `recognize` for `/ws/recognize`. A missing or wrong key, a key without
the scope and invalid query parameters are answered with one error message and close code 1008;
opening a stream counts against the key's rate limit (over it: status 429, close code 1013). A
frame that cannot be used (not an image, corrupt, too large, no face) is answered with an error
message `{"error", "status", "frame", "skipped"}` and the stream goes on. The mechanics are those
of every stream: `facegate.api.streaming`.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from pydantic import validate_call

from facegate.api.answers import recognize_image
from facegate.api.auth import Scope
from facegate.api.deps import decode, infer
from facegate.api.params import ThresholdQuery, TopKQuery, detection_params
from facegate.api.streaming import StreamClosed, open_collection, open_stream, query_params, serve
from facegate.events import Sighting, StreamDedup
from facegate.faces import detection_dict

router = APIRouter(tags=["streaming"])

# The HTTP routes' own parameter functions, validated the same way from the socket's query string.
_detection_params = validate_call(detection_params)


@validate_call
def _recognition_params(threshold: ThresholdQuery = None, top_k: TopKQuery = 1) -> tuple[float | None, int]:
    return threshold, top_k


@router.websocket("/ws/detect")
async def detect_stream(websocket: WebSocket) -> None:
    """Detection on every frame: the body of `POST /detect` plus frame, skipped and processing_ms."""
    try:
        services = await open_stream(websocket, Scope.DETECT)
        params = await query_params(websocket, _detection_params)
    except (StreamClosed, WebSocketDisconnect):
        return

    async def handle(data: bytes) -> dict[str, Any]:
        image = await decode(services, data)
        faces = await infer(services, lambda: services.pipeline.detect(image, params))
        return detection_dict(faces)

    await serve(websocket, handle)


@router.websocket("/ws/recognize")
async def recognize_stream(websocket: WebSocket) -> None:
    """Recognition on every frame: the body of `POST /recognize` plus frame, skipped and processing_ms."""
    try:
        services = await open_stream(websocket, Scope.RECOGNIZE)
        threshold, top_k = await query_params(websocket, _recognition_params)
        collection = await open_collection(websocket, services)
    except (StreamClosed, WebSocketDisconnect):
        return

    sighting = Sighting(collection, "stream", websocket.state.key_name)
    # One event per person per EVENT_STREAM_DEDUP_S, not one per frame.
    dedup = StreamDedup(services.settings.event_stream_dedup_s)

    async def handle(data: bytes) -> dict[str, Any]:
        image = await decode(services, data)
        answer = await recognize_image(
            services, image, threshold, collection, top_k, sighting=sighting, dedup=dedup
        )
        return answer.model_dump(mode="json")

    await serve(websocket, handle)
