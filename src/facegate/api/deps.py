"""What routes depend on: the shared services, the API key check, uploads and the inference pool."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, TypeVar

import anyio
import numpy as np
from anyio.to_thread import run_sync
from fastapi import Depends, HTTPException, Request, UploadFile, status

from facegate.api.auth import KeyRing
from facegate.api.metrics import Metrics
from facegate.api.ratelimit import Limiter
from facegate.api.tickets import TicketSigner
from facegate.config import Settings
from facegate.enrolment import Enrolment
from facegate.events import EventLog
from facegate.gallery import Gallery
from facegate.imaging import decode_image
from facegate.pipeline import Pipeline
from facegate.recognition import MatchPolicy, Recognizer
from facegate.runtime import release_free_memory
from facegate.services import Core
from facegate.visitors import Visitors

T = TypeVar("T")

_CHUNK = 1 << 20


@dataclass
class Services:
    """Everything a request may use, created once per process by the app's lifespan."""

    core: Core
    keys: KeyRing
    tickets: TicketSigner
    inference_limiter: anyio.CapacityLimiter
    rate_limiter: Limiter
    metrics: Metrics
    # Draws each liveness session's challenges; a test gives a seeded `random.Random` to fix the order.
    challenge_rng: random.Random = field(default_factory=random.SystemRandom)
    # Times each liveness session; a test gives a clock it moves, so a deadline passes at once.
    challenge_clock: Callable[[], float] = time.monotonic

    # The core's parts, as the routes use them.
    @property
    def settings(self) -> Settings:
        return self.core.settings

    @property
    def pipeline(self) -> Pipeline:
        return self.core.pipeline

    @property
    def gallery(self) -> Gallery:
        return self.core.gallery

    @property
    def policy(self) -> MatchPolicy:
        return self.core.policy

    @property
    def recognizer(self) -> Recognizer:
        return self.core.recognizer

    @property
    def enrolment(self) -> Enrolment:
        return self.core.enrolment

    @property
    def events(self) -> EventLog:
        return self.core.events

    @property
    def visitors(self) -> Visitors:
        return self.core.visitors


def get_services(request: Request) -> Services:
    return request.app.state.services


ServicesDep = Annotated[Services, Depends(get_services)]


async def read_image(upload: UploadFile, services: Services) -> np.ndarray:
    """Read an upload chunk by chunk, stopping at the byte limit, and decode it off the event loop."""
    limit = services.settings.max_upload_bytes
    chunks: list[bytes] = []
    size = 0
    while chunk := await upload.read(_CHUNK):
        size += len(chunk)
        if size > limit:
            raise HTTPException(
                status.HTTP_413_CONTENT_TOO_LARGE,
                detail=f"upload '{upload.filename}' is larger than the limit of {limit} bytes",
            )
        chunks.append(chunk)
    return await decode(services, b"".join(chunks))


async def decode(services: Services, data: bytes) -> np.ndarray:
    """Decode image bytes (an upload, a WebSocket frame) within the byte and pixel limits."""
    settings = services.settings

    def timed_decode() -> np.ndarray:
        with services.metrics.stage("decode"):
            return decode_image(
                data, max_bytes=settings.max_upload_bytes, max_pixels=settings.max_image_pixels
            )

    # Decoding shares the inference limit: a decoded 40-megapixel photo takes 120 MB.
    return await infer(services, timed_decode)


async def infer(services: Services, function: Callable[[], T]) -> T:
    """Run CPU-bound model work in a worker thread, at most `inference_limiter` at a time.

    At most `max_inference_queue` requests wait for a slot; one more is refused with 503 at once,
    because a queue without bound holds every waiting upload in memory and answers too late anyway.
    """
    limiter = services.inference_limiter
    waiting = limiter.statistics().tasks_waiting
    if limiter.available_tokens < 1 and waiting >= services.settings.max_inference_queue:
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            detail=f"busy: {waiting} requests are already waiting for inference; retry shortly",
            headers={"Retry-After": "1"},
        )

    def run_and_release() -> T:
        try:
            return function()
        finally:
            release_free_memory()  # in the slot: a request's memory is back before the next one starts

    return await run_sync(run_and_release, limiter=limiter)


async def query(function: Callable[[], T]) -> T:
    """Run a blocking gallery call in a worker thread (the database pool bounds the concurrency)."""
    return await run_sync(function)
