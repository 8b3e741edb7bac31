"""The gallery: registering people, adding photos, listing and deleting."""

from __future__ import annotations

import math
from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, HTTPException, Query, UploadFile, status

from facegate.api.auth import Scope, require
from facegate.api.deps import ServicesDep, infer, query, read_image
from facegate.api.forms import StrictFormRoute
from facegate.api.params import CollectionDep, PageLimit, PageOffset, PathId
from facegate.api.schemas import KEYED_ERRORS, error_responses
from facegate.gallery import FaceRecord, UserRecord
from facegate.names import clean_name
from facegate.pipeline import FaceChoice
from facegate.schemas import (
    Deleted,
    FaceAdded,
    FaceDeleted,
    FaceList,
    Merge,
    Merged,
    RegisterResponse,
    Rename,
    StoredFace,
    User,
    UserList,
)

router = APIRouter(tags=["gallery"], dependencies=[require(Scope.ADMIN)], route_class=StrictFormRoute)

_ERRORS = error_responses(*KEYED_ERRORS, 400, 404, 409, 413, 415, 422, 503)


def face_choice(
    face: Annotated[
        int | None,
        Query(ge=0, le=1000, description="which face to enrol: its index in /detect's answer"),
    ] = None,
    box: Annotated[
        str | None,
        Query(
            max_length=200,
            description="which face to enrol: its box `x1,y1,x2,y2` in pixels (the face overlapping it most)",
        ),
    ] = None,
) -> FaceChoice:
    """The face chosen in a photo of several; neither: the photo must hold one (422 lists them)."""
    if face is not None and box is not None:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail="send face= or box=, not both")
    if box is None:
        return FaceChoice(index=face)
    try:
        x1, y1, x2, y2 = (float(v) for v in box.split(","))
    except ValueError:
        x1 = y1 = x2 = y2 = math.nan
    if not all(math.isfinite(v) for v in (x1, y1, x2, y2)) or x2 <= x1 or y2 <= y1:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            detail=f"box is four numbers x1,y1,x2,y2 in pixels with x2 > x1 and y2 > y1, not {box!r}",
        )
    return FaceChoice(box=(x1, y1, x2, y2))


FaceChoiceDep = Annotated[FaceChoice, Depends(face_choice)]

UserId = PathId
FaceId = PathId


def user_body(record: UserRecord) -> User:
    return User(
        id=record.id,
        name=record.name,
        face_count=record.face_count,
        created_at=record.created_at,
        updated_at=record.updated_at,
    )


@router.post(
    "/register", status_code=status.HTTP_201_CREATED, response_model=RegisterResponse, responses=_ERRORS
)
async def register(
    services: ServicesDep,
    collection: CollectionDep,
    name: Annotated[str, Form()],
    image: Annotated[UploadFile, File()],
    choice: FaceChoiceDep,
    allow_duplicate: Annotated[
        bool, Query(description="register even when the face is already someone's in the collection")
    ] = False,
) -> RegisterResponse:
    """Register a new person from a photo holding exactly one face, or from the face chosen by
    `face=` (its index in /detect's answer) or `box=x1,y1,x2,y2`; without a choice, a photo of
    several faces of similar size is refused with 422 listing them (`faces`: index and box).

    409 when the name is taken in the collection, or when the face is already someone's there
    (the detail names them; `allow_duplicate=true` registers anyway)."""
    clean_name(name)  # 422 for an unusable name before inference is spent on the photo
    decoded = await read_image(image, services)
    face = await infer(services, lambda: services.pipeline.single_face(decoded, choice))
    user = await query(
        lambda: services.enrolment.register(name, face, collection, allow_duplicate=allow_duplicate)
    )
    return RegisterResponse(
        message=f"registered {user.name}",
        user_id=user.id,
        name=user.name,
        embedding_dimension=services.pipeline.embedder.dim,
    )


@router.get("/users", response_model=UserList, responses=_ERRORS)
async def list_users(
    services: ServicesDep,
    collection: CollectionDep,
    offset: PageOffset = 0,
    limit: PageLimit = 50,
) -> UserList:
    """The collection's people by id, a page at a time."""
    users, total = await query(lambda: services.gallery.list_users(offset, limit, collection))
    return UserList(users=[user_body(u) for u in users], total=total, offset=offset, limit=limit)


@router.get("/users/{user_id}", response_model=User, responses=_ERRORS)
async def get_user(services: ServicesDep, collection: CollectionDep, user_id: UserId) -> User:
    return user_body(await query(lambda: services.gallery.get_user(user_id, collection)))


@router.patch("/users/{user_id}", response_model=User, responses=_ERRORS)
async def rename_user(
    services: ServicesDep, collection: CollectionDep, user_id: UserId, body: Rename
) -> User:
    """Give a person another name (the rules of registration: 409 for a taken or look-alike name)."""
    return user_body(await query(lambda: services.enrolment.rename(user_id, body.name, collection)))


@router.post("/users/{user_id}/merge", response_model=Merged, responses=_ERRORS)
async def merge_user(
    services: ServicesDep, collection: CollectionDep, user_id: UserId, body: Merge
) -> Merged:
    """Merge two records of one person: every face of `from` moves to this person, who keeps their
    name, and `from` is deleted, in one transaction (both in the collection: 404 otherwise)."""
    if body.from_ == user_id:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT, detail=f"user {user_id} cannot be merged into themselves"
        )
    moved = await query(lambda: services.enrolment.merge(user_id, body.from_, collection))
    user = await query(lambda: services.gallery.get_user(user_id, collection))
    return Merged(
        message=f"merged user {body.from_} into {user.name}",
        user=user_body(user),
        merged_from=body.from_,
        faces_moved=moved,
    )


@router.delete("/users/{user_id}", response_model=Deleted, responses=_ERRORS)
async def delete_user(services: ServicesDep, collection: CollectionDep, user_id: UserId) -> Deleted:
    """Delete a person and every face stored for them."""
    await query(lambda: services.gallery.delete_user(user_id, collection))
    return Deleted(message=f"deleted user {user_id} and their faces", user_id=user_id)


@router.post(
    "/users/{user_id}/faces", status_code=status.HTTP_201_CREATED, response_model=FaceAdded, responses=_ERRORS
)
async def add_face(
    services: ServicesDep,
    collection: CollectionDep,
    user_id: UserId,
    image: Annotated[UploadFile, File()],
    choice: FaceChoiceDep,
    force: Annotated[
        bool, Query(description="store the photo even when it does not look like the person (logged)")
    ] = False,
) -> FaceAdded:
    """Add another photo of a registered person; recognition uses all of their photos.

    422, with nothing stored, when the face is not within FACE_VERIFY_THRESHOLD of the person's
    photos (a photo of someone else); `force=true` stores it anyway. `face=` or `box=` choose the
    face in a photo of several, as for /register."""
    # 404 before spending inference on the photo
    await query(lambda: services.gallery.get_user(user_id, collection))
    decoded = await read_image(image, services)
    face = await infer(services, lambda: services.pipeline.single_face(decoded, choice))
    added = await query(lambda: services.enrolment.add_face(user_id, face, collection, force=force))
    user = await query(lambda: services.gallery.get_user(user_id, collection))
    return FaceAdded(
        message=f"added a photo of {user.name}", user_id=user_id, face_id=added.id, face_count=user.face_count
    )


@router.get("/users/{user_id}/faces", response_model=FaceList, responses=_ERRORS)
async def list_faces(services: ServicesDep, collection: CollectionDep, user_id: UserId) -> FaceList:
    """A person's stored photos (their embeddings; the photos themselves are never kept), oldest first."""
    faces = await query(lambda: services.gallery.list_faces(user_id, collection))
    return FaceList(user_id=user_id, faces=[_stored_face(face) for face in faces])


def _stored_face(face: FaceRecord) -> StoredFace:
    width, height = face.box_size
    return StoredFace(
        id=face.id, created_at=face.created_at, box_width=width, box_height=height, model=face.model
    )


@router.delete("/users/{user_id}/faces/{face_id}", response_model=FaceDeleted, responses=_ERRORS)
async def delete_face(
    services: ServicesDep, collection: CollectionDep, user_id: UserId, face_id: FaceId
) -> FaceDeleted:
    """Delete one photo of a person; their last one is refused with 409 (delete the person instead)."""
    await query(lambda: services.gallery.delete_face(user_id, face_id, collection))
    user = await query(lambda: services.gallery.get_user(user_id, collection))
    return FaceDeleted(
        message=f"deleted photo {face_id} of {user.name}",
        user_id=user_id,
        face_id=face_id,
        face_count=user.face_count,
    )
