"""The bodies the API answers with, as the OpenAPI document shows them.

Shared by the server (its routes build them) and the Python client (`facegate.client` parses answers
into them), so the two cannot drift. Only pydantic here: the client imports this module on
machines without the server's dependencies.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

Point = tuple[float, float]


class Keypoints(BaseModel):
    left_eye: Point
    right_eye: Point
    nose: Point
    mouth_left: Point
    mouth_right: Point


class DetectResponse(BaseModel):
    boxes: list[tuple[float, float, float, float]] = Field(description="[x1, y1, x2, y2] in pixels")
    scores: list[float]
    keypoints: list[Keypoints]


class MatchedUser(BaseModel):
    id: int
    name: str


FaceStatus = Literal["match", "no_match", "low_quality"]
ThresholdSource = Literal["fpir", "setting", "request"]

_SIMILARITY = (
    "probability that the face and its nearest person are the same person, at equal priors "
    "(calibrated on LFW); null when nothing was compared"
)
_CONFIDENCE = "1 − distance, kept for compatibility: not a probability (see similarity)"
_SIMILARITY_OF_CANDIDATE = "probability that the face is this person, at equal priors (calibrated on LFW)"


class Candidate(BaseModel):
    """One of the nearest people to a face: a candidate for review, not a match (see matched_user)."""

    user: MatchedUser
    distance: float = Field(description="cosine distance to the person's nearest face")
    similarity: float = Field(description=_SIMILARITY_OF_CANDIDATE)


class RecognizedFace(BaseModel):
    box: tuple[float, float, float, float]
    score: float
    keypoints: Keypoints
    status: FaceStatus
    distance: float | None = Field(
        description="cosine distance to the nearest person; null for an empty gallery or a low_quality face"
    )
    similarity: float | None = Field(description=_SIMILARITY)
    confidence: float = Field(description=_CONFIDENCE)
    matched_user: MatchedUser | None
    quality: str | None = Field(default=None, description="why the face was not searched (low_quality)")
    candidates: list[Candidate] = Field(
        default_factory=list,
        description="the top_k nearest distinct people, nearest first; only matched_user is a match",
    )


class RecognizeResponse(BaseModel):
    status: FaceStatus
    message: str
    distance: float | None
    similarity: float | None = Field(description=_SIMILARITY)
    confidence: float = Field(description=_CONFIDENCE)
    matched_user: MatchedUser | None
    threshold: float = Field(description="the cosine-distance threshold this search used")
    threshold_source: ThresholdSource = Field(
        description="fpir: chosen for fpir_target at gallery_size; setting: FACE_MATCH_THRESHOLD; "
        "request: the threshold parameter"
    )
    fpir_target: float | None = Field(description="the share of strangers' searches allowed to name someone")
    gallery_size: int = Field(description="people in the gallery when the threshold was chosen")
    faces: list[RecognizedFace]


class RegisterResponse(BaseModel):
    status: Literal["success"] = "success"
    message: str
    user_id: int
    name: str
    embedding_dimension: int


class FaceAdded(BaseModel):
    status: Literal["success"] = "success"
    message: str
    user_id: int
    face_id: int
    face_count: int


class User(BaseModel):
    id: int
    name: str
    face_count: int
    created_at: datetime
    updated_at: datetime


class UserList(BaseModel):
    users: list[User]
    total: int
    offset: int
    limit: int


class Deleted(BaseModel):
    status: Literal["success"] = "success"
    message: str
    user_id: int


class Rename(BaseModel):
    name: str = Field(description="the person's new name (the rules of registration apply)")


class Merge(BaseModel):
    from_: int = Field(
        alias="from",
        ge=1,
        le=2**63 - 1,
        description="the person merged in: their faces move, their record goes",
    )


class Merged(BaseModel):
    status: Literal["success"] = "success"
    message: str
    user: User = Field(description="the person kept, with every face of both")
    merged_from: int
    faces_moved: int


class Event(BaseModel):
    """One recognition decision of the access log."""

    id: int
    at: datetime
    collection: str
    source: Literal["recognize", "stream", "liveness"]
    key_name: str | None = Field(description="the API key's name (never the key)")
    status: FaceStatus
    user_id: int | None = Field(description="the person matched (their id stays after they are deleted)")
    user_name: str | None = Field(description="their name when the event was written")
    distance: float | None
    similarity: float | None
    threshold: float
    threshold_source: str
    quality: str | None = Field(description="why the face was not searched (low_quality)")
    box: tuple[float, float, float, float]
    has_face: bool = Field(description="whether the face's chip is stored: GET /events/{id}/face")
    visitor_id: int | None = Field(
        description="the unknown visitor a no_match face was counted as (GET /visitors)"
    )


class EventPage(BaseModel):
    events: list[Event] = Field(description="newest first")
    next_cursor: int | None = Field(description="`cursor` for the next (older) page; null on the last")


class Visitor(BaseModel):
    """Faces no one matched that look alike: one unknown person, seen `visits` times."""

    id: int
    first_seen: datetime
    last_seen: datetime
    visits: int
    faces: int = Field(description="faces kept (the most detailed few): GET /visitors/{id}/face")


class VisitorList(BaseModel):
    visitors: list[Visitor] = Field(description="most recently seen first")
    total: int
    offset: int
    limit: int


class VisitorAdded(BaseModel):
    status: Literal["success"] = "success"
    message: str
    user_id: int
    faces_added: int


class VisitorForgotten(BaseModel):
    status: Literal["success"] = "success"
    message: str
    visitor_id: int


class StoredFace(BaseModel):
    id: int
    created_at: datetime
    box_width: float = Field(description="width of the face's box in the photo it came from, in pixels")
    box_height: float
    model: str = Field(description="the embedding model that made the stored vector")


class FaceList(BaseModel):
    user_id: int
    faces: list[StoredFace]


class FaceDeleted(BaseModel):
    status: Literal["success"] = "success"
    message: str
    user_id: int
    face_id: int
    face_count: int = Field(description="the person's faces left")


class NewCollection(BaseModel):
    name: str = Field(
        description="1 to 64 characters of A-Z, a-z, 0-9, '_', '-' and '.', starting with a letter or digit",
        examples=["site-a"],
    )


class Collection(BaseModel):
    name: str
    people: int
    faces: int
    created_at: datetime


class CollectionList(BaseModel):
    collections: list[Collection]


class CollectionDeleted(BaseModel):
    status: Literal["success"] = "success"
    message: str
    name: str


class VerifyResponse(BaseModel):
    verified: bool
    distance: float
    similarity: float = Field(
        description="probability that the two faces are the same person, at equal priors"
    )
    confidence: float = Field(description=_CONFIDENCE)
    threshold: float


class Health(BaseModel):
    status: Literal["healthy", "degraded"]
    database: Literal["connected", "unavailable", "refusing writes"]
    threshold: float | None = Field(
        description="FACE_MATCH_THRESHOLD when set; null: the FPIR policy decides"
    )
    fpir_target: float | None = Field(description="FACE_MATCH_FPIR when the policy decides")
    embedding_model: str
    embedding_dimension: int
    version: str
    instance: str = Field(description="Which replica answered: INSTANCE_NAME, else the hostname.")
    detail: str | None = None
    providers: dict[str, list[str]] | None = Field(
        default=None,
        description=(
            "The runtimes each model runs on, by model ('detector', 'embedder'), in order of "
            'preference: ONNX Runtime providers (e.g. ["CUDAExecutionProvider", "CPUExecutionProvider"]) '
            'or ["dlib"].'
        ),
    )


class Stats(BaseModel):
    total_users: int
    total_faces: int
    threshold: float = Field(description="the threshold a search of this gallery uses now")
    threshold_source: ThresholdSource
    fpir_target: float | None
    verify_threshold: float = Field(
        description="the one-to-one threshold (/verify, a photo added to a person): the model's own scale"
    )
    embedding_model: str
    embedding_dimension: int


class ServiceInfo(BaseModel):
    service: str
    version: str
    docs: str
    endpoints: list[str]


class FieldError(BaseModel):
    loc: list[str | int]
    msg: str
    type: str


class ErrorBody(BaseModel):
    """Every error answer: one sentence in `detail`; a request that failed validation also lists
    each failing field in `errors`."""

    detail: str
    errors: list[FieldError] | None = None


class TicketResponse(BaseModel):
    ticket: str = Field(description='send as the first message {"ticket": "..."} on WS /ws/liveness')
    expires_at: int = Field(description="Unix time after which the ticket opens nothing")


# --- WS /ws/recognize (facegate.api.routes.stream) -----------------------------------------------


class RecognizedFrame(RecognizeResponse):
    """A processed frame of `WS /ws/recognize`: the body of `POST /recognize` plus the stream's fields."""

    frame: int = Field(description="the frame's number, from 1, in the order the server received them")
    skipped: int = Field(description="frames dropped (replaced by newer ones) since the previous answer")
    processing_ms: float


class FrameError(BaseModel):
    """A frame the stream could not use (not an image, too large, no face); the stream goes on."""

    error: str
    status: int
    frame: int
    skipped: int
