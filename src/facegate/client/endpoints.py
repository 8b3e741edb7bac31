"""Each endpoint once: how to ask it (`Call`) and how to read its answer.

The synchronous and the asynchronous client both turn these functions into their methods
(`facegate.client.clients`), so the two cannot differ in anything but how they send.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, TypedDict, TypeVar, Unpack

import httpx
from pydantic import BaseModel

from facegate.client.images import ImageInput, upload
from facegate.schemas import (
    Deleted,
    DetectResponse,
    FaceAdded,
    Health,
    RecognizeResponse,
    RegisterResponse,
    Stats,
    TicketResponse,
    User,
    UserList,
    VerifyResponse,
)

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True)
class Call(Generic[T]):
    """One request and the reader of its answer. Images are read into bytes when the call is made,
    so a retry sends the same bytes again (a file object can be read only once)."""

    method: str
    path: str
    read: Callable[[httpx.Response], T]
    # Whether sending it twice does no harm: a connection error is then retried (see retry.py).
    idempotent: bool
    params: dict[str, Any] = field(default_factory=dict)
    data: dict[str, str] = field(default_factory=dict)
    files: dict[str, tuple[str, bytes, str]] = field(default_factory=dict)


def _model(kind: type[M]) -> Callable[[httpx.Response], M]:
    return lambda response: kind.model_validate_json(response.content)


def _given(**params: Any) -> dict[str, Any]:
    """Only the parameters the caller set: the server's defaults apply to the others."""
    return {name: value for name, value in params.items() if value is not None}


def health() -> Call[Health]:
    """Liveness and database status (no key needed); `UnavailableError` while the database is down."""
    return Call("GET", "/health", _model(Health), idempotent=True)


def stats() -> Call[Stats]:
    """How many people and faces the gallery holds."""
    return Call("GET", "/stats", _model(Stats), idempotent=True)


class DetectionOptions(TypedDict, total=False):
    """The detector's parameters (`POST /detect`'s query); those not given take the server's defaults."""

    min_face_size: int
    threshold_pnet: float
    threshold_rnet: float
    threshold_onet: float


def _detection(options: DetectionOptions) -> dict[str, Any]:
    # A misspelt keyword would be sent as a query parameter the server ignores: refuse it here.
    if unknown := set(options) - DetectionOptions.__annotations__.keys():
        raise TypeError(
            f"unknown detection option(s) {sorted(unknown)}; known: {list(DetectionOptions.__annotations__)}"
        )
    return dict(options)


def detect(image: ImageInput, **options: Unpack[DetectionOptions]) -> Call[DetectResponse]:
    """Every face: boxes `[x1, y1, x2, y2]`, scores and keypoints, by decreasing score.

    Options: `min_face_size` (pixels), `threshold_pnet`, `threshold_rnet`, `threshold_onet` (0 to 1).
    """
    return Call(
        "POST",
        "/detect",
        _model(DetectResponse),
        idempotent=True,
        params=_detection(options),
        files={"image": upload(image)},
    )


def detect_annotated(
    image: ImageInput, *, format: Literal["png", "jpeg"] = "png", **options: Unpack[DetectionOptions]
) -> Call[bytes]:
    """The image (PNG or JPEG bytes) with each face's box, score and keypoints drawn on it; the
    options as for `detect`."""
    return Call(
        "POST",
        "/detect/annotated",
        lambda response: response.content,
        idempotent=True,
        params={"format": format, **_detection(options)},
        files={"image": upload(image)},
    )


def register(name: str, image: ImageInput) -> Call[RegisterResponse]:
    """A new person from a photo holding exactly one face."""
    return Call(
        "POST",
        "/register",
        _model(RegisterResponse),
        idempotent=False,  # sent twice, the second would answer 409
        data={"name": name},
        files={"image": upload(image)},
    )


def add_face(user_id: int, image: ImageInput) -> Call[FaceAdded]:
    """Another photo of a registered person; recognition uses all of their photos."""
    return Call(
        "POST",
        f"/users/{user_id}/faces",
        _model(FaceAdded),
        idempotent=False,  # sent twice, the photo would be stored twice
        files={"image": upload(image)},
    )


def recognize(image: ImageInput, *, threshold: float | None = None) -> Call[RecognizeResponse]:
    """Every face against the gallery, largest first; the top-level fields describe the largest face."""
    return Call(
        "POST",
        "/recognize",
        _model(RecognizeResponse),
        idempotent=True,
        params=_given(threshold=threshold),
        files={"image": upload(image)},
    )


def verify(image1: ImageInput, image2: ImageInput, *, threshold: float | None = None) -> Call[VerifyResponse]:
    """Whether the largest faces of two photos are the same person."""
    return Call(
        "POST",
        "/verify",
        _model(VerifyResponse),
        idempotent=True,
        params=_given(threshold=threshold),
        files={"image1": upload(image1, "image1"), "image2": upload(image2, "image2")},
    )


def users(*, offset: int | None = None, limit: int | None = None) -> Call[UserList]:
    """One page of registered people by id (`total` says how many there are in all)."""
    return Call("GET", "/users", _model(UserList), idempotent=True, params=_given(offset=offset, limit=limit))


def user(user_id: int) -> Call[User]:
    """One person with their number of photos; `NotFoundError` for an unknown id."""
    return Call("GET", f"/users/{user_id}", _model(User), idempotent=True)


def delete_user(user_id: int) -> Call[Deleted]:
    """Delete a person and every face stored for them."""
    # Idempotent in effect (HTTP's DELETE): a retry after a lost answer may answer 404, but the
    # person is gone either way.
    return Call("DELETE", f"/users/{user_id}", _model(Deleted), idempotent=True)


def liveness_ticket() -> Call[TicketResponse]:
    """A short-lived ticket for `WS /ws/liveness`, for a browser page that must not hold the key."""
    # Idempotent enough: a second ticket is as harmless as the first, and expires as soon.
    return Call("POST", "/liveness/tickets", _model(TicketResponse), idempotent=True)
