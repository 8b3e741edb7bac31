"""Service information, health and gallery statistics."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST

from facegate import __version__
from facegate.api.auth import Scope, require
from facegate.api.deps import ServicesDep, query
from facegate.api.schemas import KEYED_ERRORS, Health, ServiceInfo, Stats, error_responses
from facegate.gallery.errors import GalleryError

router = APIRouter(tags=["service"])


@router.get("/", response_model=ServiceInfo, responses=error_responses(504))
async def root(request: Request) -> ServiceInfo:
    """The service's name, version and endpoints (no key needed)."""
    paths = sorted(request.app.openapi()["paths"])
    return ServiceInfo(service="FaceGate", version=__version__, docs="/docs", endpoints=paths)


@router.get("/health", response_model=Health, responses={**error_responses(504), 503: {"model": Health}})
async def health(services: ServicesDep) -> Health | JSONResponse:
    """Liveness and database status (no key needed); 503 while the database is unreachable."""
    embedder = services.pipeline.embedder
    body = Health(
        status="healthy",
        database="connected",
        threshold=services.settings.face_match_threshold,
        embedding_model=embedder.name,
        embedding_dimension=embedder.dim,
        version=__version__,
        instance=services.settings.instance_name,
    )
    try:
        await query(services.gallery.ping)
    except GalleryError as exc:
        unhealthy = body.model_copy(
            update={"status": "unhealthy", "database": "unavailable", "detail": str(exc)}
        )
        return JSONResponse(status_code=503, content=unhealthy.model_dump())
    return body


@router.get(
    "/stats",
    response_model=Stats,
    dependencies=[require(Scope.RECOGNIZE)],
    responses=error_responses(*KEYED_ERRORS, 503),
)
async def stats(services: ServicesDep) -> Stats:
    """How many people and faces the gallery holds."""
    counts = await query(services.gallery.stats)
    return Stats(
        total_users=counts.total_users,
        total_faces=counts.total_faces,
        threshold=services.settings.face_match_threshold,
        embedding_model=services.pipeline.embedder.name,
        embedding_dimension=services.pipeline.embedder.dim,
    )


@router.get(
    "/metrics",
    dependencies=[require(Scope.DETECT)],
    # Not `response_class=PlainTextResponse`: that would document the JSON errors as text too.
    responses={
        **error_responses(*KEYED_ERRORS),
        200: {"content": {"text/plain": {"schema": {"type": "string"}}}, "description": "Prometheus text"},
    },
)
async def metrics(services: ServicesDep) -> PlainTextResponse:
    """Prometheus metrics (any valid key: give the scraper a `detect` key, the narrowest scope)."""
    try:
        counts = await query(services.gallery.stats)
    except GalleryError:
        counts = None  # reported as facegate_database_up 0; the other metrics matter most then
    body = services.metrics.render(counts, services.inference_limiter)
    return PlainTextResponse(body, media_type=CONTENT_TYPE_LATEST)
