"""Recognition: who is in a photo, and are two photos the same person."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, Request, UploadFile

from facegate.api.answers import confidence, recognize_image
from facegate.api.auth import Scope, require
from facegate.api.deps import ServicesDep, infer, read_image
from facegate.api.params import CollectionDep, ThresholdQuery, TopKQuery
from facegate.api.schemas import KEYED_ERRORS, error_responses
from facegate.events import Sighting
from facegate.schemas import RecognizeResponse, VerifyResponse

router = APIRouter(tags=["recognition"], dependencies=[require(Scope.RECOGNIZE)])

_ERRORS = error_responses(*KEYED_ERRORS, 400, 404, 413, 415, 422, 503)


@router.post("/recognize", response_model=RecognizeResponse, responses=_ERRORS)
async def recognize(
    request: Request,
    services: ServicesDep,
    collection: CollectionDep,
    image: Annotated[UploadFile, File()],
    threshold: ThresholdQuery = None,
    top_k: TopKQuery = 1,
) -> RecognizeResponse:
    """Every face against the gallery, largest first; the top-level fields describe the largest face.

    The threshold follows the gallery's size (FACE_MATCH_FPIR) unless FACE_MATCH_THRESHOLD or
    `threshold` fixes it; faces too small, blurred or turned are answered `low_quality`. Each face
    lists its `top_k` nearest people as `candidates`; only `matched_user` is a match.
    """
    decoded = await read_image(image, services)
    sighting = Sighting(collection, "recognize", request.state.key_name)
    return await recognize_image(services, decoded, threshold, collection, top_k, sighting=sighting)


@router.post("/verify", response_model=VerifyResponse, responses=_ERRORS)
async def verify(
    services: ServicesDep,
    image1: Annotated[UploadFile, File()],
    image2: Annotated[UploadFile, File()],
    threshold: ThresholdQuery = None,
) -> VerifyResponse:
    """Whether the largest faces of two photos are the same person."""
    first = await read_image(image1, services)
    second = await read_image(image2, services)
    a = await infer(services, lambda: services.pipeline.largest_face(first))
    b = await infer(services, lambda: services.pipeline.largest_face(second))
    verdict = services.policy.verify(a.embedding, b.embedding, threshold)
    return VerifyResponse(
        verified=verdict.verified,
        distance=verdict.distance,
        similarity=verdict.similarity,
        confidence=confidence(verdict.distance),
        threshold=verdict.threshold,
    )
