"""Mapping the domain's exceptions to HTTP answers: JSON `{"detail": "..."}`, never a stack trace.

Every error has one shape: a sentence in `detail`. Validation errors add FastAPI's list of the
failing fields as `errors`, so a client can still point at the field.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request, status
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from facegate.gallery.errors import (
    ConfusableNameError,
    DuplicateNameError,
    GalleryError,
    GalleryUnavailable,
    ModelMismatchError,
    UnknownUserError,
)
from facegate.imaging import ImageError
from facegate.names import InvalidNameError
from facegate.pipeline import NoFaceError

logger = logging.getLogger(__name__)

_GALLERY_STATUS: dict[type[GalleryError], int] = {
    DuplicateNameError: status.HTTP_409_CONFLICT,
    ConfusableNameError: status.HTTP_409_CONFLICT,
    UnknownUserError: status.HTTP_404_NOT_FOUND,
    GalleryUnavailable: status.HTTP_503_SERVICE_UNAVAILABLE,
    ModelMismatchError: status.HTTP_503_SERVICE_UNAVAILABLE,
}


def _json(code: int, detail: str) -> JSONResponse:
    return JSONResponse(status_code=code, content={"detail": detail})


async def _image_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ImageError)
    return _json(exc.status, str(exc))


async def _unprocessable(_: Request, exc: Exception) -> JSONResponse:
    return _json(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc))


async def _gallery_error(_: Request, exc: Exception) -> JSONResponse:
    code = next((c for kind, c in _GALLERY_STATUS.items() if isinstance(exc, kind)), 500)
    if code >= 500:
        # The client's detail is the clean message; PostgreSQL's own (with its paths) is logged.
        logger.warning("gallery unavailable: %s (%s)", exc, exc.__cause__)
    return _json(code, str(exc))


async def _invalid_request(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [
        {"loc": list(error["loc"]), "msg": error["msg"], "type": error["type"]} for error in exc.errors()
    ]
    return JSONResponse(
        status_code=status.HTTP_422_UNPROCESSABLE_CONTENT,
        content={"detail": _validation_sentence(errors), "errors": jsonable_encoder(errors)},
    )


def _validation_sentence(errors: list[dict]) -> str:
    """`invalid request: query min_face_size: Input should be ...; body image: Field required`."""
    parts = [f"{' '.join(str(part) for part in error['loc'])}: {error['msg']}" for error in errors]
    return "invalid request: " + "; ".join(parts)


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    logger.exception("unhandled error on %s %s", request.method, request.url.path)
    return _json(status.HTTP_500_INTERNAL_SERVER_ERROR, "internal server error")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _invalid_request)
    app.add_exception_handler(ImageError, _image_error)
    app.add_exception_handler(NoFaceError, _unprocessable)
    app.add_exception_handler(InvalidNameError, _unprocessable)
    app.add_exception_handler(GalleryError, _gallery_error)
    app.add_exception_handler(Exception, _unexpected)
