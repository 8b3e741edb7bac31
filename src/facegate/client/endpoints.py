"""Each endpoint once: how to ask it (`Call`) and how to read its answer.

The synchronous and the asynchronous client both turn these functions into their methods
(`facegate.client.clients`), so the two cannot differ in anything but how they send.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, TypedDict, TypeVar, Unpack
from urllib.parse import quote

import httpx
from pydantic import BaseModel

from facegate.client.images import ImageInput, upload
from facegate.schemas import (
    Collection,
    CollectionDeleted,
    CollectionList,
    Deleted,
    DetectResponse,
    EventPage,
    FaceAdded,
    FaceDeleted,
    FaceList,
    Health,
    Merged,
    RecognizeResponse,
    RegisterResponse,
    Stats,
    TicketResponse,
    User,
    UserList,
    VerifyResponse,
    VisitorAdded,
    VisitorForgotten,
    VisitorList,
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
    json: dict[str, Any] | None = None


def _model(kind: type[M]) -> Callable[[httpx.Response], M]:
    return lambda response: kind.model_validate_json(response.content)


def _given(**params: Any) -> dict[str, Any]:
    """Only the parameters the caller set: the server's defaults apply to the others. A flag is set
    only when true, so a call without it is the request an older server knows."""
    return {name: value for name, value in params.items() if value is not None and value is not False}


def _in(collection: str | None) -> dict[str, Any]:
    """The `collection` query parameter; without one the server uses the collection `default`."""
    return _given(collection=collection)


def _segment(name: str) -> str:
    # A name with "/" or "?" must stay one path segment (the server then refuses it as unknown).
    return quote(name, safe="")


def health() -> Call[Health]:
    """Liveness and database status (no key needed); `UnavailableError` while the database is down."""
    return Call("GET", "/health", _model(Health), idempotent=True)


def stats(*, collection: str | None = None) -> Call[Stats]:
    """How many people and faces the collection holds."""
    return Call("GET", "/stats", _model(Stats), idempotent=True, params=_in(collection))


def collections() -> Call[CollectionList]:
    """Every collection (those the key is bound to), by name, with its numbers of people and faces."""
    return Call("GET", "/collections", _model(CollectionList), idempotent=True)


def create_collection(name: str) -> Call[Collection]:
    """A new, empty collection; `ConflictError` when the name is taken, `UnprocessableError` when it
    breaks the naming rule (1 to 64 of A-Z a-z 0-9 _ . -, starting with a letter or digit)."""
    return Call(
        "POST",
        "/collections",
        _model(Collection),
        idempotent=False,  # sent twice, the second would answer 409
        json={"name": name},
    )


def delete_collection(name: str) -> Call[CollectionDeleted]:
    """Delete a collection with everything in it; `ConflictError` for `default`."""
    # Idempotent in effect, as delete_user.
    return Call("DELETE", f"/collections/{_segment(name)}", _model(CollectionDeleted), idempotent=True)


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


def register(
    name: str,
    image: ImageInput,
    *,
    collection: str | None = None,
    allow_duplicate: bool = False,
    face: int | None = None,
) -> Call[RegisterResponse]:
    """A new person from a photo holding exactly one face, or its face number `face` (in `detect`'s
    order). `ConflictError` when the name is taken, or when the face already belongs to someone in
    the collection (unless `allow_duplicate`)."""
    return Call(
        "POST",
        "/register",
        _model(RegisterResponse),
        idempotent=False,  # sent twice, the second would answer 409
        params=_given(collection=collection, allow_duplicate=allow_duplicate, face=face),
        data={"name": name},
        files={"image": upload(image)},
    )


def add_face(
    user_id: int, image: ImageInput, *, collection: str | None = None, force: bool = False
) -> Call[FaceAdded]:
    """Another photo of a registered person; recognition uses all of their photos.
    `UnprocessableError` when it is not the same person as their stored photos, unless `force`."""
    return Call(
        "POST",
        f"/users/{user_id}/faces",
        _model(FaceAdded),
        idempotent=False,  # sent twice, the photo would be stored twice
        params=_given(collection=collection, force=force),
        files={"image": upload(image)},
    )


def recognize(
    image: ImageInput,
    *,
    threshold: float | None = None,
    collection: str | None = None,
    top_k: int | None = None,
) -> Call[RecognizeResponse]:
    """Every face against the collection, largest first; the top-level fields describe the largest
    face. `top_k` (1 to 20): each face's `candidates`, the nearest distinct people, nearest first."""
    return Call(
        "POST",
        "/recognize",
        _model(RecognizeResponse),
        idempotent=True,
        params=_given(threshold=threshold, collection=collection, top_k=top_k),
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


def users(
    *, offset: int | None = None, limit: int | None = None, collection: str | None = None
) -> Call[UserList]:
    """One page of the collection's people by id (`total` says how many there are in all)."""
    params = _given(offset=offset, limit=limit, collection=collection)
    return Call("GET", "/users", _model(UserList), idempotent=True, params=params)


def user(user_id: int, *, collection: str | None = None) -> Call[User]:
    """One person with their number of photos; `NotFoundError` for an unknown id."""
    return Call("GET", f"/users/{user_id}", _model(User), idempotent=True, params=_in(collection))


def rename_user(user_id: int, name: str, *, collection: str | None = None) -> Call[User]:
    """Give a person another name; `ConflictError` when it is taken (or looks like a taken one)."""
    # Idempotent: renaming twice to the same name leaves the same person.
    return Call(
        "PATCH",
        f"/users/{user_id}",
        _model(User),
        idempotent=True,
        params=_in(collection),
        json={"name": name},
    )


def delete_user(user_id: int, *, collection: str | None = None) -> Call[Deleted]:
    """Delete a person and every face stored for them."""
    # Idempotent in effect (HTTP's DELETE): a retry after a lost answer may answer 404, but the
    # person is gone either way.
    return Call("DELETE", f"/users/{user_id}", _model(Deleted), idempotent=True, params=_in(collection))


def faces(user_id: int, *, collection: str | None = None) -> Call[FaceList]:
    """A person's stored faces (id, when added, box size, model), in the order added."""
    return Call("GET", f"/users/{user_id}/faces", _model(FaceList), idempotent=True, params=_in(collection))


def delete_face(user_id: int, face_id: int, *, collection: str | None = None) -> Call[FaceDeleted]:
    """Delete one stored face of a person; `ConflictError` for their last one (delete the person
    instead), `NotFoundError` for a face that is not theirs."""
    # Idempotent in effect, as delete_user.
    return Call(
        "DELETE",
        f"/users/{user_id}/faces/{face_id}",
        _model(FaceDeleted),
        idempotent=True,
        params=_in(collection),
    )


def merge_user(user_id: int, other_id: int, *, collection: str | None = None) -> Call[Merged]:
    """Merge two records of one person: every face of `other_id` moves to `user_id`, who keeps their
    name; `other_id` is deleted."""
    return Call(
        "POST",
        f"/users/{user_id}/merge",
        _model(Merged),
        idempotent=False,  # sent twice, the second answers 404 (`other_id` is gone)
        params=_in(collection),
        json={"from": other_id},
    )


def events(
    *,
    collection: str | None = None,
    status: str | None = None,
    since: str | None = None,
    until: str | None = None,
    person: int | None = None,
    cursor: int | None = None,
    limit: int | None = None,
) -> Call[EventPage]:
    """A page of the access log, newest first (scope `audit`); `next_cursor` asks for the next one."""
    params = _given(
        collection=collection,
        status=status,
        since=since,
        until=until,
        person=person,
        cursor=cursor,
        limit=limit,
    )
    return Call("GET", "/events", _model(EventPage), idempotent=True, params=params)


def event_face(event_id: int) -> Call[bytes]:
    """The face of an event (JPEG), where the log keeps faces (EVENTS=faces)."""
    return Call("GET", f"/events/{event_id}/face", lambda response: response.content, idempotent=True)


def visitors(*, collection: str | None = None) -> Call[VisitorList]:
    """The collection's unknown visitors, most recently seen first (a page of 50)."""
    return Call("GET", "/visitors", _model(VisitorList), idempotent=True, params=_in(collection))


def visitor_face(visitor_id: int, *, collection: str | None = None) -> Call[bytes]:
    """An unknown visitor's most detailed face (JPEG)."""
    return Call(
        "GET",
        f"/visitors/{visitor_id}/face",
        lambda response: response.content,
        idempotent=True,
        params=_in(collection),
    )


def enrol_visitor(visitor_id: int, name: str, *, collection: str | None = None) -> Call[VisitorAdded]:
    """Register an unknown visitor as a new person, under `register`'s rules."""
    return Call(
        "POST",
        f"/visitors/{visitor_id}/enrol",
        _model(VisitorAdded),
        idempotent=False,
        params=_in(collection),
        json={"name": name},
    )


def add_visitor_to(visitor_id: int, user_id: int, *, collection: str | None = None) -> Call[VisitorAdded]:
    """Add an unknown visitor's faces (those that look like them) to a person."""
    return Call(
        "POST",
        f"/visitors/{visitor_id}/add-to/{user_id}",
        _model(VisitorAdded),
        idempotent=False,
        params=_in(collection),
    )


def forget_visitor(visitor_id: int, *, collection: str | None = None) -> Call[VisitorForgotten]:
    """Forget an unknown visitor and their faces."""
    return Call(
        "DELETE", f"/visitors/{visitor_id}", _model(VisitorForgotten), idempotent=True, params=_in(collection)
    )


def liveness_ticket() -> Call[TicketResponse]:
    """A short-lived ticket for `WS /ws/liveness`, for a browser page that must not hold the key."""
    # Idempotent enough: a second ticket is as harmless as the first, and expires as soon.
    return Call("POST", "/liveness/tickets", _model(TicketResponse), idempotent=True)
