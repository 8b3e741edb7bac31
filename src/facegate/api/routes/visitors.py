"""Unknown visitors: faces no one matched, grouped by likeness (facegate.visitors), to review and
enrol, add to someone, or forget. Reading takes the `audit` scope; changing the gallery, `admin`."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response

from facegate.api.auth import Scope, require
from facegate.api.deps import Services, ServicesDep, infer, query
from facegate.api.params import CollectionDep, PageLimit, PageOffset, PathId
from facegate.api.schemas import KEYED_ERRORS, error_responses
from facegate.pipeline import EmbeddedFace
from facegate.schemas import Rename, Visitor, VisitorAdded, VisitorForgotten, VisitorList

router = APIRouter(tags=["unknown visitors"])

_ERRORS = error_responses(*KEYED_ERRORS, 404, 409, 422, 503)

VisitorId = PathId
UserId = PathId


@router.get("/visitors", response_model=VisitorList, responses=_ERRORS, dependencies=[require(Scope.AUDIT)])
async def list_visitors(
    services: ServicesDep,
    collection: CollectionDep,
    offset: PageOffset = 0,
    limit: PageLimit = 50,
) -> VisitorList:
    """The collection's unknown visitors, most recently seen first, with how often they came."""
    records, total = await query(lambda: services.visitors.page(collection, offset, limit))
    visitors = [Visitor.model_validate(record, from_attributes=True) for record in records]
    return VisitorList(visitors=visitors, total=total, offset=offset, limit=limit)


@router.get(
    "/visitors/{visitor_id}/face",
    response_class=Response,
    responses={**_ERRORS, 200: {"content": {"image/jpeg": {}}}},
    dependencies=[require(Scope.AUDIT)],
)
async def visitor_face(services: ServicesDep, collection: CollectionDep, visitor_id: VisitorId) -> Response:
    """The visitor's most detailed face (an aligned chip, JPEG)."""
    faces = await query(lambda: services.visitors.faces(visitor_id, collection))
    return Response(faces[0].jpeg, media_type="image/jpeg")


async def _embedded(services: Services, visitor_id: int, collection: str) -> list[EmbeddedFace]:
    """The visitor's stored faces, most detailed first, embedded again from their chips."""
    chips = await query(lambda: services.visitors.faces(visitor_id, collection))
    pipeline = services.pipeline
    return await infer(services, lambda: [pipeline.embed_face(chip.pixels(), chip.face) for chip in chips])


@router.post(
    "/visitors/{visitor_id}/enrol",
    status_code=201,
    response_model=VisitorAdded,
    responses=_ERRORS,
    dependencies=[require(Scope.ADMIN)],
)
async def enrol_visitor(
    services: ServicesDep, collection: CollectionDep, visitor_id: VisitorId, body: Rename
) -> VisitorAdded:
    """Register the visitor as a new person from their best faces, under /register's rules (409 for
    a taken name or a face already someone's); the visitor is then forgotten."""
    faces = await _embedded(services, visitor_id, collection)
    user, stored = await query(lambda: services.enrolment.register_faces(body.name, faces, collection))
    await query(lambda: services.visitors.forget(visitor_id, collection))
    return VisitorAdded(
        message=f"enrolled unknown visitor {visitor_id} as {user.name}", user_id=user.id, faces_added=stored
    )


@router.post(
    "/visitors/{visitor_id}/add-to/{user_id}",
    response_model=VisitorAdded,
    responses=_ERRORS,
    dependencies=[require(Scope.ADMIN)],
)
async def add_visitor_to(
    services: ServicesDep, collection: CollectionDep, visitor_id: VisitorId, user_id: UserId
) -> VisitorAdded:
    """Add the visitor's faces to a person, under add-face's rule (422 when none looks like them);
    the visitor is then forgotten."""
    await query(lambda: services.gallery.get_user(user_id, collection))  # 404 before the inference
    faces = await _embedded(services, visitor_id, collection)
    stored = await query(lambda: services.enrolment.add_faces(user_id, faces, collection))
    await query(lambda: services.visitors.forget(visitor_id, collection))
    return VisitorAdded(
        message=f"added unknown visitor {visitor_id} to user {user_id}", user_id=user_id, faces_added=stored
    )


@router.delete(
    "/visitors/{visitor_id}",
    response_model=VisitorForgotten,
    responses=_ERRORS,
    dependencies=[require(Scope.ADMIN)],
)
async def forget_visitor(
    services: ServicesDep, collection: CollectionDep, visitor_id: VisitorId
) -> VisitorForgotten:
    """Forget the visitor and their faces (their events stay, naming no visitor)."""
    await query(lambda: services.visitors.forget(visitor_id, collection))
    return VisitorForgotten(
        message=f"forgot unknown visitor {visitor_id} and their faces", visitor_id=visitor_id
    )
