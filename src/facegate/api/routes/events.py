"""The access log: recognition decisions, newest first, with their face chips where stored.

Scope `audit` (admin keys have it). A key bound to collections sees only their events.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query, Request, status
from fastapi.responses import Response, StreamingResponse

from facegate.api.auth import Refused, Scope, http_error, require
from facegate.api.deps import ServicesDep, query
from facegate.api.params import PathId, admit_collection
from facegate.api.schemas import KEYED_ERRORS, error_responses
from facegate.events import MAX_PAGE, EventFilter, EventRecord, EventStatus, Source, csv_lines
from facegate.schemas import Event, EventPage

router = APIRouter(tags=["access log"], dependencies=[require(Scope.AUDIT)])

_ERRORS = error_responses(*KEYED_ERRORS, 404, 422, 503)


# Sync, so FastAPI runs it in a worker thread: it asks the database.
def event_filter(
    request: Request,
    collection: Annotated[
        str | None, Query(max_length=64, description="one collection; default: every one the key opens")
    ] = None,
    since: Annotated[datetime | None, Query(description="from this time (ISO 8601), inclusive")] = None,
    until: Annotated[datetime | None, Query(description="before this time (ISO 8601)")] = None,
    status_: Annotated[EventStatus | None, Query(alias="status")] = None,
    person: Annotated[int | None, Query(ge=1, le=2**63 - 1, description="the matched person's id")] = None,
    source: Annotated[Source | None, Query()] = None,
) -> EventFilter:
    """The events asked for, within the collections the key may see (403 for another one)."""
    key = request.state.api_key
    collections = key.collections
    if collection is not None:
        try:
            admit_collection(request.app.state.services, key, collection)
        except Refused as refused:
            raise http_error(refused) from None
        collections = frozenset({collection})
    return EventFilter(collections, since, until, status_, person, source)


FilterDep = Annotated[EventFilter, Depends(event_filter)]


def _event(record: EventRecord) -> Event:
    return Event.model_validate(record, from_attributes=True)


@router.get("/events", response_model=EventPage, responses=_ERRORS)
async def list_events(
    services: ServicesDep,
    which: FilterDep,
    cursor: Annotated[
        int | None, Query(ge=1, le=2**63 - 1, description="the previous page's `next_cursor`")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 50,
) -> EventPage:
    """Recognition decisions, newest first, a page at a time (filters: collection, since, until,
    status, person, source)."""
    records = await query(lambda: services.events.page(which, cursor, limit))
    return EventPage(
        events=[_event(record) for record in records],
        next_cursor=records[-1].id if len(records) == limit else None,
    )


@router.get(
    "/events.csv", response_class=StreamingResponse, responses={**_ERRORS, 200: {"content": {"text/csv": {}}}}
)
async def export_events(services: ServicesDep, which: FilterDep) -> StreamingResponse:
    """The events the filters select as CSV, newest first (at most 100,000 rows, MAX_EXPORT: narrow
    the range with since/until for more)."""
    records = await query(lambda: list(services.events.all(which)))
    return StreamingResponse(
        csv_lines(records),
        media_type="text/csv",
        headers={"Content-Disposition": 'attachment; filename="events.csv"'},
    )


EventId = PathId


@router.get(
    "/events/{event_id}/face",
    response_class=Response,
    responses={**_ERRORS, 200: {"content": {"image/jpeg": {}}}},
)
async def event_face(request: Request, services: ServicesDep, event_id: EventId) -> Response:
    """The face of an event as the log stored it: an aligned chip (JPEG), kept under EVENTS=faces."""
    collections = request.state.api_key.collections
    chip = await query(lambda: services.events.face(event_id, collections))
    if chip is None:
        raise HTTPException(
            status.HTTP_404_NOT_FOUND,
            detail=f"no event {event_id} with a stored face (EVENTS=faces keeps them)",
        )
    return Response(chip, media_type="image/jpeg")
