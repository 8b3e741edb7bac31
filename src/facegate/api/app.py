"""The FastAPI application factory."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from facegate import __version__
from facegate.api.auth import KeyRing
from facegate.api.deps import Services
from facegate.api.errors import install_error_handlers
from facegate.api.routes import detect, recognize, system, users
from facegate.config import Settings, get_settings
from facegate.gallery import Gallery, resolve_dsn
from facegate.pipeline import Pipeline

logger = logging.getLogger(__name__)

# Multipart framing around the file: boundaries, headers and the small form fields.
_MULTIPART_OVERHEAD = 64 * 1024


class UploadSizeLimit:
    """Refuse a request whose declared body exceeds the upload limit before reading any of it."""

    def __init__(self, app: ASGIApp, max_body: int) -> None:
        self.app = app
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            declared = dict(scope["headers"]).get(b"content-length")
            if declared is not None and declared.isdigit() and int(declared) > self.max_body:
                response = JSONResponse(
                    status_code=413,
                    content={
                        "detail": f"request body is {int(declared)} bytes; the limit is {self.max_body} bytes"
                    },
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def build_services(settings: Settings) -> Services:
    api_key = settings.api_key()
    if not api_key:
        raise RuntimeError("no API key: set APP_TOKEN (or start with `facegate serve`, which generates one)")
    keys = KeyRing.parse(api_key, settings.facegate_api_keys.get_secret_value())
    pipeline = Pipeline.from_settings(settings)
    gallery = Gallery.open(
        resolve_dsn(settings),
        pipeline.embedder.name,
        pipeline.embedder.dim,
        pool_min=settings.db_pool_min,
        pool_max=settings.db_pool_max,
        timeout=settings.db_timeout,
        ef_search=settings.hnsw_ef_search,
    )
    return Services(
        settings=settings,
        keys=keys,
        pipeline=pipeline,
        gallery=gallery,
        inference_limiter=anyio.CapacityLimiter(settings.max_concurrent_inference),
    )


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        services = await anyio.to_thread.run_sync(build_services, settings)
        app.state.services = services
        logger.info("FaceGate %s ready (embedder %s)", __version__, services.pipeline.embedder.name)
        try:
            yield
        finally:
            services.gallery.close()

    app = FastAPI(
        title="FaceGate",
        version=__version__,
        description=(
            "Face detection (MTCNN) and recognition (dlib ResNet) on a PostgreSQL + pgvector gallery."
        ),
        lifespan=lifespan,
        root_path=settings.api_root_path,
    )
    install_error_handlers(app)
    for router in (system.router, detect.router, recognize.router, users.router):
        app.include_router(router)
    app.add_middleware(UploadSizeLimit, max_body=settings.max_upload_bytes + _MULTIPART_OVERHEAD)
    return app
