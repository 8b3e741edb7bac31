"""Detection: every face with its box, score and five keypoints."""

from __future__ import annotations

import io
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, File, HTTPException, Query, UploadFile, status
from fastapi.responses import Response
from PIL import Image

from facegate.annotate import draw_faces
from facegate.api.auth import Scope, require
from facegate.api.deps import ServicesDep, infer, read_image
from facegate.api.params import detection_params
from facegate.api.schemas import KEYED_ERRORS, error_responses
from facegate.faces import DetectionParams, detection_dict
from facegate.schemas import DetectResponse

router = APIRouter(tags=["detection"], dependencies=[require(Scope.DETECT)])

_ERRORS = error_responses(*KEYED_ERRORS, 400, 413, 415, 422, 503)


ParamsDep = Annotated[DetectionParams, Depends(detection_params)]


def detection_upload(
    image: Annotated[UploadFile | None, File(description="the photo (the name every endpoint uses)")] = None,
    file: Annotated[
        UploadFile | None, File(description="the photo, by the original detection service's name")
    ] = None,
) -> UploadFile:
    """The photo, sent as `image` or as `file`: exactly one of them."""
    chosen = image if image is not None else file
    if chosen is None or (image is not None and file is not None):
        found = "neither" if chosen is None else "both"
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            detail=f"send the photo in one multipart field, 'image' or 'file' (got {found})",
        )
    return chosen


UploadDep = Annotated[UploadFile, Depends(detection_upload)]


@router.post("/detect", response_model=DetectResponse, responses=_ERRORS)
async def detect(services: ServicesDep, params: ParamsDep, upload: UploadDep) -> DetectResponse:
    """Find every face: boxes `[x1, y1, x2, y2]`, scores and keypoints, by decreasing score."""
    image = await read_image(upload, services)
    faces = await infer(services, lambda: services.pipeline.detect(image, params))
    return DetectResponse.model_validate(detection_dict(faces))


@router.post(
    "/detect/annotated",
    response_class=Response,
    responses={**_ERRORS, 200: {"content": {"image/png": {}, "image/jpeg": {}}}},
)
async def detect_annotated(
    services: ServicesDep,
    params: ParamsDep,
    upload: UploadDep,
    format: Annotated[Literal["png", "jpeg"], Query(description="image format of the answer")] = "png",
) -> Response:
    """The uploaded image with each face's box, score and keypoints drawn on it."""
    image = await read_image(upload, services)

    def render() -> bytes:
        faces = services.pipeline.detect(image, params)
        drawn = draw_faces(
            Image.fromarray(image),
            [face.box for face in faces],
            [face.keypoints_dict() for face in faces],
            [f"{face.score:.2f}" for face in faces],
        )
        buffer = io.BytesIO()
        drawn.save(buffer, format=format.upper(), **({"quality": 90} if format == "jpeg" else {}))
        return buffer.getvalue()

    return Response(await infer(services, render), media_type=f"image/{format}")
