"""The domain's exceptions as client answers, over HTTP and on the streams: never a stack trace.

`status_of` is the one mapping from an exception to a status and a sentence: the HTTP handlers
answer it as JSON `{"detail": "..."}`, a stream as the error message of the frame it failed on.
Validation errors (HTTP only) add FastAPI's list of the failing fields as `errors`, so a client can
still point at the field.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, HTTPException, Request, status
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from facegate.enrolment import AlreadyEnrolledError, NotSamePersonError
from facegate.gallery.errors import (
    ConfusableNameError,
    DuplicateCollectionError,
    DuplicateNameError,
    GalleryError,
    GalleryUnavailable,
    InvalidCollectionNameError,
    LastFaceError,
    ModelMismatchError,
    ProtectedCollectionError,
    UnknownCollectionError,
    UnknownFaceError,
    UnknownUserError,
)
from facegate.imaging import ImageError
from facegate.names import InvalidNameError
from facegate.pipeline import NoFaceError
from facegate.visitors import UnknownVisitorError

logger = logging.getLogger(__name__)

_GALLERY_STATUS: dict[type[GalleryError], int] = {
    DuplicateNameError: status.HTTP_409_CONFLICT,
    ConfusableNameError: status.HTTP_409_CONFLICT,
    DuplicateCollectionError: status.HTTP_409_CONFLICT,
    ProtectedCollectionError: status.HTTP_409_CONFLICT,
    LastFaceError: status.HTTP_409_CONFLICT,
    InvalidCollectionNameError: status.HTTP_422_UNPROCESSABLE_CONTENT,
    UnknownUserError: status.HTTP_404_NOT_FOUND,
    UnknownVisitorError: status.HTTP_404_NOT_FOUND,
    UnknownCollectionError: status.HTTP_404_NOT_FOUND,
    UnknownFaceError: status.HTTP_404_NOT_FOUND,
    GalleryUnavailable: status.HTTP_503_SERVICE_UNAVAILABLE,
    ModelMismatchError: status.HTTP_503_SERVICE_UNAVAILABLE,
}


def status_of(exc: Exception, where: str) -> tuple[int, str]:
    """The status and detail a client gets for `exc`, raised while serving `where` (a request, a
    stream's frame); what the client must not see (the database's message, a stack trace) is logged."""
    match exc:
        case ImageError():
            return exc.status, str(exc)
        case NoFaceError() | InvalidNameError() | NotSamePersonError():
            return status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)
        case AlreadyEnrolledError():
            return status.HTTP_409_CONFLICT, str(exc)
        case HTTPException():  # raised by the API's own helpers: the inference queue is full (503), ...
            return exc.status_code, str(exc.detail)
        case GalleryError():
            code = next((c for kind, c in _GALLERY_STATUS.items() if isinstance(exc, kind)), 500)
            if code >= 500:
                # The client's detail is the clean message; PostgreSQL's own (with its paths) is logged.
                logger.warning("gallery unavailable on %s: %s (%s)", where, exc, exc.__cause__)
            return code, str(exc)
    # A bug: the client learns nothing of the failure but that it happened.
    logger.error("unhandled error on %s", where, exc_info=exc)
    return status.HTTP_500_INTERNAL_SERVER_ERROR, "internal server error"


async def _answer(request: Request, exc: Exception) -> JSONResponse:
    code, detail = status_of(exc, f"{request.method} {request.url.path}")
    content: dict[str, object] = {"detail": detail}
    if isinstance(exc, NoFaceError) and exc.faces:
        # The faces to choose from (`face=` is the index here, which is /detect's order).
        content["faces"] = [
            {"index": index, "box": [round(v, 1) for v in face.box], "score": round(face.score, 4)}
            for index, face in enumerate(exc.faces)
        ]
    return JSONResponse(status_code=code, content=content)


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


def install_error_handlers(app: FastAPI) -> None:
    """`status_of` for the domain's errors and any other exception (HTTPException keeps FastAPI's
    own handler, which sends its headers: `Retry-After`, `WWW-Authenticate`)."""
    app.add_exception_handler(RequestValidationError, _invalid_request)
    domain = (
        ImageError,
        NoFaceError,
        InvalidNameError,
        NotSamePersonError,
        AlreadyEnrolledError,
        GalleryError,
    )
    for kind in (*domain, Exception):
        app.add_exception_handler(kind, _answer)
