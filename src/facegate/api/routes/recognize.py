"""Recognition: who is in a photo, and are two photos the same person."""

from __future__ import annotations

from typing import Annotated

import numpy as np
from fastapi import APIRouter, File, Query, UploadFile

from facegate.api.auth import Scope, require
from facegate.api.deps import Services, ServicesDep, infer, query, read_image
from facegate.api.schemas import KEYED_ERRORS, error_responses
from facegate.gallery import Match
from facegate.pipeline import EmbeddedFace, NoFaceError
from facegate.schemas import MatchedUser, RecognizedFace, RecognizeResponse, VerifyResponse

router = APIRouter(tags=["recognition"], dependencies=[require(Scope.RECOGNIZE)])

_ERRORS = error_responses(*KEYED_ERRORS, 400, 413, 415, 422, 503)

ThresholdQuery = Annotated[
    float | None,
    Query(
        ge=0.0,
        le=2.0,
        allow_inf_nan=False,
        description="cosine distance; default FACE_MATCH_THRESHOLD or, for /verify, FACE_VERIFY_THRESHOLD",
    ),
]


def confidence(distance: float) -> float:
    return max(0.0, 1.0 - distance)


def recognized_face(embedded: EmbeddedFace, nearest: Match | None, threshold: float) -> RecognizedFace:
    face = embedded.face
    is_match = nearest is not None and nearest.distance <= threshold
    return RecognizedFace(
        box=face.box,
        score=face.score,
        keypoints=face.keypoints_dict(),
        status="match" if is_match else "no_match",
        distance=None if nearest is None else nearest.distance,
        confidence=0.0 if nearest is None else confidence(nearest.distance),
        matched_user=MatchedUser(id=nearest.user_id, name=nearest.name) if is_match and nearest else None,
    )


@router.post("/recognize", response_model=RecognizeResponse, responses=_ERRORS)
async def recognize(
    services: ServicesDep, image: Annotated[UploadFile, File()], threshold: ThresholdQuery = None
) -> RecognizeResponse:
    """Every face against the gallery, largest first; the top-level fields describe the largest face."""
    return await recognize_image(services, await read_image(image, services), threshold)


async def recognize_image(
    services: Services, decoded: np.ndarray, threshold: float | None
) -> RecognizeResponse:
    """The body of `/recognize` for a decoded image (shared with the WebSocket stream)."""
    limit = services.settings.face_match_threshold if threshold is None else threshold
    faces = await infer(services, lambda: services.pipeline.analyse(decoded))
    if not faces:
        raise NoFaceError("no face found in the image")
    vectors = np.stack([face.embedding for face in faces])
    with services.metrics.stage("search"):
        results = await query(lambda: services.gallery.search(vectors, k=1))
    answers = [
        recognized_face(face, matches[0] if matches else None, limit)
        for face, matches in zip(faces, results, strict=True)
    ]
    largest = answers[0]
    if largest.matched_user is not None:
        message = f"recognised {largest.matched_user.name}"
    elif largest.distance is None:
        message = "the gallery is empty"
    else:
        message = "no registered person matches the largest face"
    return RecognizeResponse(
        status=largest.status,
        message=message,
        distance=largest.distance,
        confidence=largest.confidence,
        matched_user=largest.matched_user,
        threshold=limit,
        faces=answers,
    )


@router.post("/verify", response_model=VerifyResponse, responses=_ERRORS)
async def verify(
    services: ServicesDep,
    image1: Annotated[UploadFile, File()],
    image2: Annotated[UploadFile, File()],
    threshold: ThresholdQuery = None,
) -> VerifyResponse:
    """Whether the largest faces of two photos are the same person."""
    limit = services.settings.face_verify_threshold if threshold is None else threshold
    first = await read_image(image1, services)
    second = await read_image(image2, services)
    a = await infer(services, lambda: services.pipeline.largest_face(first))
    b = await infer(services, lambda: services.pipeline.largest_face(second))
    distance = float(1.0 - np.dot(a.embedding, b.embedding))
    return VerifyResponse(
        verified=distance <= limit, distance=distance, confidence=confidence(distance), threshold=limit
    )
