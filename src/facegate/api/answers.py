"""Recognition results as the API answers them: the body of `POST /recognize`, which the WebSocket
stream and the liveness verdict send too."""

from __future__ import annotations

import numpy as np

from facegate.api.deps import Services, infer, query
from facegate.events import Sighting, StreamDedup
from facegate.gallery import DEFAULT_COLLECTION
from facegate.recognition import Identified, MatchPolicy, Recognition
from facegate.schemas import Candidate, Keypoints, MatchedUser, RecognizedFace, RecognizeResponse


async def recognize_image(
    services: Services,
    image: np.ndarray,
    threshold: float | None,
    collection: str = DEFAULT_COLLECTION,
    top_k: int = 1,
    *,
    sighting: Sighting,
    dedup: StreamDedup | None = None,
) -> RecognizeResponse:
    """Every face of a decoded image against the collection, largest first; the decisions go to the
    access log (queued: facegate.events), a stream's through its `dedup`."""
    faces = await infer(services, lambda: services.pipeline.analyse(image))
    with services.metrics.stage("search"):
        recognition = await query(lambda: services.recognizer.identify(faces, threshold, collection, top_k))
    services.events.record(recognition, image, sighting, dedup)
    return recognize_response(recognition, services.policy)


def recognize_response(recognition: Recognition, policy: MatchPolicy) -> RecognizeResponse:
    """The top-level fields describe the largest face (the original service's answer); `faces` has all."""
    answers = [recognized_face(face, policy) for face in recognition.faces]
    largest, chosen = answers[0], recognition.threshold
    return RecognizeResponse(
        status=largest.status,
        message=_message(recognition.largest, chosen.gallery_size),
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


def confidence(distance: float | None) -> float:
    """The original service's score: 1 − distance (the calibrated `similarity` is the better one)."""
    return 0.0 if distance is None else max(0.0, 1.0 - distance)


def recognized_face(identified: Identified, policy: MatchPolicy) -> RecognizedFace:
    face, person = identified.face.face, identified.person
    if identified.face.problem is not None:
        status = "low_quality"
    else:
        status = "match" if person is not None else "no_match"
    return RecognizedFace(
        box=face.box,
        score=face.score,
        keypoints=Keypoints.model_validate(face.keypoints_dict()),
        status=status,
        distance=identified.distance,
        similarity=identified.similarity,
        confidence=confidence(identified.distance),
        matched_user=None if person is None else MatchedUser(id=person.user_id, name=person.name),
        quality=identified.face.problem,
        candidates=[
            Candidate(
                user=MatchedUser(id=match.user_id, name=match.name),
                distance=match.distance,
                similarity=policy.similarity(match.distance),
            )
            for match in identified.candidates
        ],
    )


def _message(largest: Identified, gallery_size: int) -> str:
    if largest.person is not None:
        return f"recognised {largest.person.name}"
    if largest.face.problem is not None:
        return f"the largest face was not searched: {largest.face.problem}"
    if gallery_size == 0 or largest.nearest is None:
        return "the gallery is empty"
    return "no registered person matches the largest face"
