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
from facegate.recognition import MatchPolicy, Threshold, cosine_distance
from facegate.schemas import Keypoints, MatchedUser, RecognizedFace, RecognizeResponse, VerifyResponse

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


def recognized_face(
    embedded: EmbeddedFace, found: list[Match], threshold: Threshold, policy: MatchPolicy
) -> RecognizedFace:
    """The answer for one face, given its two nearest people (`found`, nearest first)."""
    face = embedded.face
    common = {"box": face.box, "score": face.score, "keypoints": Keypoints(**face.keypoints_dict())}
    if embedded.problem is not None:
        return RecognizedFace(
            **common, status="low_quality", distance=None, similarity=None, confidence=0.0,
            matched_user=None, quality=embedded.problem,
        )  # fmt: skip
    nearest = found[0] if found else None
    distance = None if nearest is None else nearest.distance
    second = found[1].distance if len(found) > 1 else None
    is_match = nearest is not None and policy.is_match(distance, second, threshold)
    return RecognizedFace(
        **common,
        status="match" if is_match else "no_match",
        distance=distance,
        similarity=None if distance is None else policy.similarity(distance),
        confidence=0.0 if distance is None else confidence(distance),
        matched_user=MatchedUser(id=nearest.user_id, name=nearest.name) if is_match and nearest else None,
    )


@router.post("/recognize", response_model=RecognizeResponse, responses=_ERRORS)
async def recognize(
    services: ServicesDep, image: Annotated[UploadFile, File()], threshold: ThresholdQuery = None
) -> RecognizeResponse:
    """Every face against the gallery, largest first; the top-level fields describe the largest face.

    The threshold follows the gallery's size (FACE_MATCH_FPIR) unless FACE_MATCH_THRESHOLD or
    `threshold` fixes it; faces too small, blurred or turned are answered `low_quality`.
    """
    return await recognize_image(services, await read_image(image, services), threshold)


async def recognize_image(
    services: Services, decoded: np.ndarray, threshold: float | None
) -> RecognizeResponse:
    """The body of `/recognize` for a decoded image (shared with the WebSocket stream)."""
    faces = await infer(services, lambda: services.pipeline.analyse(decoded))
    if not faces:
        raise NoFaceError("no face found in the image")
    searched = [face for face in faces if face.problem is None]
    with services.metrics.stage("search"):
        size = await query(services.gallery.size)
        results = (
            await query(lambda: services.gallery.search(np.stack([f.embedding for f in searched]), k=2))
            if searched
            else []
        )
    found = {id(face): matches for face, matches in zip(searched, results, strict=True)}
    chosen = services.policy.threshold(size, threshold)
    answers = [recognized_face(face, found.get(id(face), []), chosen, services.policy) for face in faces]
    largest = answers[0]
    return RecognizeResponse(
        status=largest.status,
        message=_message(largest, size),
        distance=largest.distance,
        similarity=largest.similarity,
        confidence=largest.confidence,
        matched_user=largest.matched_user,
        threshold=chosen.distance,
        threshold_source=chosen.source,
        fpir_target=chosen.fpir_target,
        gallery_size=chosen.gallery_size,
        faces=answers,
    )


def _message(largest: RecognizedFace, gallery_size: int) -> str:
    if largest.matched_user is not None:
        return f"recognised {largest.matched_user.name}"
    if largest.quality is not None:
        return f"the largest face was not searched: {largest.quality}"
    if gallery_size == 0 or largest.distance is None:
        return "the gallery is empty"
    return "no registered person matches the largest face"


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
    distance = cosine_distance(a.embedding, b.embedding)
    return VerifyResponse(
        verified=distance <= limit,
        distance=distance,
        similarity=services.policy.similarity(distance),
        confidence=confidence(distance),
        threshold=limit,
    )
