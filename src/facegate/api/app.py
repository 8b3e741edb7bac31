"""The FastAPI application factory."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
from fastapi import FastAPI
from fastapi_offline import FastAPIOffline

from facegate import __version__, dlib_models
from facegate.api.auth import KeyRing
from facegate.api.connections import exit_with_supervisor
from facegate.api.deps import Services
from facegate.api.errors import install_error_handlers
from facegate.api.metrics import MeteredPipeline, Metrics
from facegate.api.middleware import RelativeRedirects, RequestContext, RequestDeadline, UploadSizeLimit
from facegate.api.ratelimit import limiter_for
from facegate.api.routes import (
    collections,
    detect,
    events,
    liveness,
    recognize,
    stream,
    system,
    users,
    visitors,
)
from facegate.api.tickets import TicketSigner
from facegate.config import Settings, get_settings
from facegate.gallery import database_dsn
from facegate.services import build_core

logger = logging.getLogger(__name__)

# Multipart framing around the files: boundaries, headers and the small form fields.
_MULTIPART_OVERHEAD = 64 * 1024
# The most images one request carries (/verify), each up to MAX_UPLOAD_BYTES.
_MAX_UPLOADS_PER_REQUEST = 2


def build_services(settings: Settings, dsn: str, metrics: Metrics) -> Services:
    api_key = settings.api_key()
    if not api_key:
        raise RuntimeError("no API key: set APP_TOKEN (or start with `facegate serve`, which generates one)")
    keys = KeyRing.parse(api_key, settings.facegate_api_keys.get_secret_value())
    core = build_core(settings, dsn, wrap=lambda pipeline: MeteredPipeline(pipeline, metrics))
    # The liveness landmarks' models load now, before /health says healthy, not on a first frame.
    dlib_models.warm()
    return Services(
        core=core,
        keys=keys,
        tickets=TicketSigner(api_key),
        inference_limiter=anyio.CapacityLimiter(settings.max_concurrent_inference),
        rate_limiter=limiter_for(settings, core.gallery.transaction),
        metrics=metrics,
    )


def create_app(settings: Settings | None = None) -> FastAPI:
    exit_with_supervisor()  # a worker of a multi-process server: not an orphan when it is killed
    settings = settings or get_settings()
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Starting or stopping an embedded server blocks the loop for a moment, before any request
        # is served or after the last one.
        with database_dsn(settings) as dsn:
            services = await anyio.to_thread.run_sync(build_services, settings, dsn, metrics)
            app.state.services = services
            logger.info("FaceGate %s ready (embedder %s)", __version__, services.pipeline.embedder.name)
            try:
                yield
            finally:
                services.core.close()

    # Swagger UI and ReDoc from the assets bundled in fastapi-offline, not from a CDN: the docs
    # work on a machine without internet, and the pages reference no other host.
    app = FastAPIOffline(
        title="FaceGate",
        version=__version__,
        description=(
            "Face detection (MTCNN) and recognition (a 512-D MobileFaceNet by default) on a PostgreSQL + "
            "pgvector gallery."
        ),
        lifespan=lifespan,
        root_path=settings.api_root_path,
    )
    install_error_handlers(app)
    for module in (system, detect, recognize, users, collections, stream, liveness, events, visitors):
        app.include_router(module.router)
    max_body = _MAX_UPLOADS_PER_REQUEST * settings.max_upload_bytes + _MULTIPART_OVERHEAD
    app.add_middleware(UploadSizeLimit, max_body=max_body)
    app.add_middleware(RequestDeadline, seconds=settings.request_timeout)
    app.add_middleware(RelativeRedirects)
    app.add_middleware(RequestContext, metrics=metrics)  # outermost: sees every answer, 413 and 504 too
    return app
