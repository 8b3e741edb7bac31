"""Query parameters that several endpoints (HTTP and WebSocket) share, declared once."""

from __future__ import annotations

import re
from typing import Annotated

from fastapi import Depends, Path, Query, Request
from pydantic import BeforeValidator

from facegate.api.auth import ApiKey, Refused, admit, http_error
from facegate.api.deps import Services
from facegate.faces import DEFAULT_DETECTION, DetectionParams
from facegate.gallery import DEFAULT_COLLECTION

_Threshold = Annotated[float, Query(ge=0.0, le=1.0, allow_inf_nan=False)]

# A page of a list (people, unknown visitors): where it starts and how many rows it holds.
PageOffset = Annotated[int, Query(ge=0, le=2**31)]
PageLimit = Annotated[int, Query(ge=1, le=500)]


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


def admit_collection(services: Services, key: ApiKey, collection: str) -> str:
    """`collection`, when `key` is bound to it (403) and it exists (404): checked before any work is
    spent on the request. 403 comes first, so a bound key learns nothing of other collections."""
    admit(key, collection)
    services.gallery.require_collection(collection)
    return collection


# Sync, so FastAPI runs it in a worker thread: it asks the database.
def collection_param(
    request: Request,
    collection: Annotated[
        str,
        Query(max_length=64, description="the collection to use; one named `default` when not given"),
    ] = DEFAULT_COLLECTION,
) -> str:
    """The request's collection (after the route's key check, which records the key)."""
    try:
        return admit_collection(request.app.state.services, request.state.api_key, collection)
    except Refused as refused:
        raise http_error(refused) from None


CollectionDep = Annotated[str, Depends(collection_param)]

TopKQuery = Annotated[
    int,
    Query(ge=1, le=20, description="how many of the nearest distinct people each face lists as candidates"),
]

_PLAIN_ID = re.compile(r"[1-9][0-9]*")


def _plain_id(value: object) -> object:
    """Digits only: no sign, leading zero, fraction, exponent or `_`, which int() would all accept."""
    if isinstance(value, str) and not _PLAIN_ID.fullmatch(value):
        raise ValueError("an id is a plain positive integer: digits only, not starting with 0")
    return value


# Every id in a path (a person, a face, a visitor, an event): one rule, a bigint's range.
PathId = Annotated[int, BeforeValidator(_plain_id), Path(ge=1, le=2**63 - 1)]
