"""The gallery: registering people, adding photos, listing and deleting."""

from __future__ import annotations

import re
from typing import Annotated

from fastapi import APIRouter, File, Form, Path, Query, UploadFile, status
from pydantic import BeforeValidator

from facegate.api.auth import Scope, require
from facegate.api.deps import ServicesDep, infer, query, read_image
from facegate.api.forms import StrictFormRoute
from facegate.api.schemas import KEYED_ERRORS, error_responses
from facegate.gallery import UserRecord
from facegate.names import clean_name
from facegate.schemas import Deleted, FaceAdded, RegisterResponse, User, UserList

router = APIRouter(tags=["gallery"], dependencies=[require(Scope.ADMIN)], route_class=StrictFormRoute)

_ERRORS = error_responses(*KEYED_ERRORS, 400, 404, 409, 413, 415, 422, 503)

_PLAIN_ID = re.compile(r"[1-9][0-9]*")


def _plain_id(value: object) -> object:
    """Digits only: no sign, leading zero, fraction, exponent or `_`, which int() would all accept."""
    if isinstance(value, str) and not _PLAIN_ID.fullmatch(value):
        raise ValueError("a user id is a plain positive integer: digits only, not starting with 0")
    return value


UserId = Annotated[int, BeforeValidator(_plain_id), Path(ge=1, le=2**63 - 1)]


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
    services: ServicesDep, name: Annotated[str, Form()], image: Annotated[UploadFile, File()]
) -> RegisterResponse:
    """Register a new person from a photo holding exactly one face."""
    person = clean_name(name)
    decoded = await read_image(image, services)
    face = await infer(services, lambda: services.pipeline.single_face(decoded))
    user = await query(lambda: services.gallery.add_user(person, face.embedding, face.face.box))
    return RegisterResponse(
        message=f"registered {user.name}",
        user_id=user.id,
        name=user.name,
        embedding_dimension=services.pipeline.embedder.dim,
    )


@router.get("/users", response_model=UserList, responses=_ERRORS)
async def list_users(
    services: ServicesDep,
    offset: Annotated[int, Query(ge=0, le=2**31)] = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> UserList:
    """Registered people by id, a page at a time."""
    users, total = await query(lambda: services.gallery.list_users(offset, limit))
    return UserList(users=[user_body(u) for u in users], total=total, offset=offset, limit=limit)


@router.get("/users/{user_id}", response_model=User, responses=_ERRORS)
async def get_user(services: ServicesDep, user_id: UserId) -> User:
    return user_body(await query(lambda: services.gallery.get_user(user_id)))


@router.delete("/users/{user_id}", response_model=Deleted, responses=_ERRORS)
async def delete_user(services: ServicesDep, user_id: UserId) -> Deleted:
    """Delete a person and every face stored for them."""
    await query(lambda: services.gallery.delete_user(user_id))
    return Deleted(message=f"deleted user {user_id} and their faces", user_id=user_id)


@router.post(
    "/users/{user_id}/faces", status_code=status.HTTP_201_CREATED, response_model=FaceAdded, responses=_ERRORS
)
async def add_face(services: ServicesDep, user_id: UserId, image: Annotated[UploadFile, File()]) -> FaceAdded:
    """Add another photo of a registered person; recognition uses all of their photos."""
    await query(lambda: services.gallery.get_user(user_id))  # 404 before spending inference on the photo
    decoded = await read_image(image, services)
    face = await infer(services, lambda: services.pipeline.single_face(decoded))
    added = await query(lambda: services.gallery.add_face(user_id, face.embedding, face.face.box))
    user = await query(lambda: services.gallery.get_user(user_id))
    return FaceAdded(
        message=f"added a photo of {user.name}", user_id=user_id, face_id=added.id, face_count=user.face_count
    )
