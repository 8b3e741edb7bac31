"""Response bodies of the API, as the OpenAPI document shows them."""

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


class RecognizedFace(BaseModel):
    box: tuple[float, float, float, float]
    score: float
    keypoints: Keypoints
    status: Literal["match", "no_match"]
    distance: float | None = Field(
        description="cosine distance to the nearest person; null for an empty gallery"
    )
    confidence: float
    matched_user: MatchedUser | None


class RecognizeResponse(BaseModel):
    status: Literal["match", "no_match"]
    message: str
    distance: float | None
    confidence: float
    matched_user: MatchedUser | None
    threshold: float
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


class VerifyResponse(BaseModel):
    verified: bool
    distance: float
    confidence: float
    threshold: float


class Health(BaseModel):
    status: Literal["healthy", "unhealthy"]
    database: Literal["connected", "unavailable"]
    threshold: float
    embedding_model: str
    embedding_dimension: int
    version: str
    instance: str = Field(description="Which replica answered: INSTANCE_NAME, else the hostname.")
    detail: str | None = None


class Stats(BaseModel):
    total_users: int
    total_faces: int
    threshold: float
    embedding_model: str
    embedding_dimension: int


class ServiceInfo(BaseModel):
    service: str
    version: str
    docs: str
    endpoints: list[str]


class ErrorBody(BaseModel):
    detail: str


class FieldError(BaseModel):
    loc: list[str | int]
    msg: str
    type: str


class ValidationErrorBody(BaseModel):
    """A 422: a sentence (no face, a bad name) or FastAPI's list of the fields that failed validation."""

    detail: str | list[FieldError]


_ERROR_DESCRIPTIONS: dict[int, str] = {
    400: "Corrupt, truncated or empty image, or a malformed request body",
    401: "Missing or wrong X-API-Key",
    403: "The key's scope does not allow this endpoint",
    404: "Unknown user id",
    409: "A person with this name is already registered",
    413: "Request body over the upload limit, or image over the pixel limit",
    415: "Not a supported image type",
    422: "No face (or not exactly one), or a parameter, name or field out of range",
    429: "The key is over its rate limit; retry after Retry-After seconds",
    503: "The database is unavailable, or too many requests wait for inference (Retry-After)",
    504: "The request was not answered within REQUEST_TIMEOUT",
}

# What every endpoint behind a key may answer besides its own errors.
KEYED_ERRORS = (401, 403, 429, 504)


def error_responses(*codes: int) -> dict[int | str, dict]:
    """The OpenAPI `responses` entries of these error statuses, for a route decorator."""
    return {
        code: {
            "model": ValidationErrorBody if code == 422 else ErrorBody,
            "description": _ERROR_DESCRIPTIONS[code],
        }
        for code in sorted(set(codes))
    }


class TicketResponse(BaseModel):
    ticket: str = Field(description='send as the first message {"ticket": "..."} on WS /ws/liveness')
    expires_at: int = Field(description="Unix time after which the ticket opens nothing")
