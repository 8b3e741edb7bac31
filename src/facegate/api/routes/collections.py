"""Collections: separate galleries in one deployment (a site, a customer), each searched alone."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, status

from facegate.api.auth import ApiKey, Refused, Scope, admit, http_error, require
from facegate.api.deps import ServicesDep, query
from facegate.api.schemas import KEYED_ERRORS, error_responses
from facegate.gallery import CollectionRecord
from facegate.schemas import Collection, CollectionDeleted, CollectionList, NewCollection

router = APIRouter(tags=["collections"])

_ERRORS = error_responses(*KEYED_ERRORS, 404, 409, 422, 503)
AdminKey = Annotated[ApiKey, require(Scope.ADMIN)]
CollectionName = Annotated[str, Path(max_length=64)]


def collection_body(record: CollectionRecord) -> Collection:
    return Collection(
        name=record.name, people=record.people, faces=record.faces, created_at=record.created_at
    )


@router.post(
    "/collections", status_code=status.HTTP_201_CREATED, response_model=Collection, responses=_ERRORS
)
async def create_collection(services: ServicesDep, key: AdminKey, body: NewCollection) -> Collection:
    """A new, empty collection (a key bound to some collections may create only those)."""
    _admit(key, body.name)
    return collection_body(await query(lambda: services.gallery.create_collection(body.name)))


@router.get("/collections", response_model=CollectionList, responses=_ERRORS)
async def list_collections(services: ServicesDep, key: AdminKey) -> CollectionList:
    """The collections the key may use, by name, with how many people and faces each holds."""
    records = await query(services.gallery.list_collections)
    return CollectionList(collections=[collection_body(r) for r in records if key.opens(r.name)])


@router.delete("/collections/{name}", response_model=CollectionDeleted, responses=_ERRORS)
async def delete_collection(services: ServicesDep, key: AdminKey, name: CollectionName) -> CollectionDeleted:
    """Delete a collection with everyone in it; `default` cannot be deleted (409)."""
    _admit(key, name)
    await query(lambda: services.gallery.delete_collection(name))
    return CollectionDeleted(message=f"deleted the collection '{name}' and everyone in it", name=name)


def _admit(key: ApiKey, collection: str) -> None:
    try:
        admit(key, collection)
    except Refused as refused:
        raise http_error(refused) from None
