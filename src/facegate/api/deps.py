"""What routes depend on: the shared services, the API key check, uploads and the inference pool."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, TypeVar

import anyio
import numpy as np
from anyio.to_thread import run_sync
from fastapi import Depends, HTTPException, Request, UploadFile, status

from facegate.api.auth import KeyRing
from facegate.config import Settings
from facegate.gallery import Gallery
from facegate.imaging import decode_image
from facegate.pipeline import Pipeline

T = TypeVar("T")

_CHUNK = 1 << 20


@dataclass
class Services:
    """Everything a request may use, created once per process by the app's lifespan."""

    settings: Settings
    keys: KeyRing
    pipeline: Pipeline
    gallery: Gallery
    inference_limiter: anyio.CapacityLimiter


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
    data = b"".join(chunks)
    # Decoding shares the inference limit: a decoded 40-megapixel photo takes 120 MB.
    return await infer(
        services, lambda: decode_image(data, max_bytes=limit, max_pixels=services.settings.max_image_pixels)
    )


async def infer(services: Services, function: Callable[[], T]) -> T:
    """Run CPU-bound model work in a worker thread, at most `inference_limiter` at a time."""
    return await run_sync(function, limiter=services.inference_limiter)


async def query(function: Callable[[], T]) -> T:
    """Run a blocking gallery call in a worker thread (the database pool bounds the concurrency)."""
    return await run_sync(function)
