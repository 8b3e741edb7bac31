"""Query parameters that several endpoints (HTTP and WebSocket) share, declared once."""

from __future__ import annotations

from typing import Annotated

from fastapi import Query

from facegate.faces import DEFAULT_DETECTION, DetectionParams

_Threshold = Annotated[float, Query(ge=0.0, le=1.0, allow_inf_nan=False)]


def detection_params(
    min_face_size: Annotated[
        int, Query(ge=1, le=10_000, description="smallest face to find, in pixels")
    ] = DEFAULT_DETECTION.min_face_size,
    threshold_pnet: _Threshold = DEFAULT_DETECTION.threshold_pnet,
    threshold_rnet: _Threshold = DEFAULT_DETECTION.threshold_rnet,
    threshold_onet: _Threshold = DEFAULT_DETECTION.threshold_onet,
) -> DetectionParams:
    return DetectionParams(min_face_size, threshold_pnet, threshold_rnet, threshold_onet)


ThresholdQuery = Annotated[
    float | None,
    Query(
        ge=0.0,
        le=2.0,
        allow_inf_nan=False,
        description="cosine distance; default FACE_MATCH_THRESHOLD or, for /verify, FACE_VERIFY_THRESHOLD",
    ),
]
