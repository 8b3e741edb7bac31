"""Service information, health and gallery statistics."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST

from facegate import __version__
from facegate.api.auth import ApiKey, Refused, Scope, admit_everywhere, http_error, require
from facegate.api.deps import ServicesDep, query
from facegate.api.params import CollectionDep
from facegate.api.schemas import KEYED_ERRORS, error_responses
from facegate.gallery.errors import GalleryError
from facegate.schemas import Health, ServiceInfo, Stats

router = APIRouter(tags=["service"])


@router.get("/", response_model=ServiceInfo, responses=error_responses(504))
async def root(request: Request) -> ServiceInfo:
    """The service's name, version and endpoints (no key needed)."""
    paths = sorted(request.app.openapi()["paths"])
    return ServiceInfo(service="FaceGate", version=__version__, docs="/docs", endpoints=paths)


@router.get("/health", response_model=Health, responses={**error_responses(504), 503: {"model": Health}})
async def health(services: ServicesDep) -> Health | JSONResponse:
    """Liveness, database status and the runtime each model runs on (no key needed).

    `degraded` with a `detail` when the database is unreachable (503: nothing that needs the gallery
    works) or refuses writes for a full disk (200: detection and recognition still work).
    """
    embedder = services.pipeline.embedder
    database = await query(services.gallery.health)
    body = Health(
        status="healthy" if database.state == "connected" else "degraded",
        database=database.state,
        threshold=services.policy.fixed,
        fpir_target=services.policy.fpir_target,
        embedding_model=embedder.name,
        embedding_dimension=embedder.dim,
        version=__version__,
        detail=database.detail,
        instance=services.settings.instance_name,
        providers={
            "detector": list(services.pipeline.detector.providers),
            "embedder": list(embedder.providers),
        },
    )
    if database.state == "unavailable":
        return JSONResponse(status_code=503, content=body.model_dump())
    return body


@router.get(
    "/stats",
    response_model=Stats,
    dependencies=[require(Scope.RECOGNIZE)],
    responses=error_responses(*KEYED_ERRORS, 404, 422, 503),
)
async def stats(services: ServicesDep, collection: CollectionDep) -> Stats:
    """How many people and faces the collection holds, and the threshold a search of it uses now."""
    counts = await query(lambda: services.gallery.stats(collection))
    threshold = services.policy.threshold(counts.total_users)
    return Stats(
        total_users=counts.total_users,
        total_faces=counts.total_faces,
        threshold=threshold.distance,
        threshold_source=threshold.source,
        fpir_target=threshold.fpir_target,
        verify_threshold=services.policy.verify_threshold,
        embedding_model=services.pipeline.embedder.name,
        embedding_dimension=services.pipeline.embedder.dim,
    )


@router.get(
    "/metrics",
    # Not `response_class=PlainTextResponse`: that would document the JSON errors as text too.
    responses={
        **error_responses(*KEYED_ERRORS),
        200: {"content": {"text/plain": {"schema": {"type": "string"}}}, "description": "Prometheus text"},
    },
)
async def metrics(services: ServicesDep, key: Annotated[ApiKey, require(Scope.DETECT)]) -> PlainTextResponse:
    """Prometheus metrics (any key that is bound to no collection: give the scraper a `detect` key,
    the narrowest scope). A key bound to some collections gets 403: the numbers are every tenant's."""
    try:
        admit_everywhere(key, "/metrics")
    except Refused as refused:
        raise http_error(refused) from None
    try:
        collections = await query(services.gallery.list_collections)
    except GalleryError:
        collections = None  # reported as facegate_database_up 0; the other metrics matter most then
    body = services.metrics.render(collections, services.inference_limiter)
    return PlainTextResponse(body, media_type=CONTENT_TYPE_LATEST)
