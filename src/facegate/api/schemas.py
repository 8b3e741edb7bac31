"""The OpenAPI `responses` entries of the API's error answers.

The bodies themselves are in `facegate.schemas`, shared with the Python client.
"""

from __future__ import annotations

from facegate.schemas import ErrorBody

_ERROR_DESCRIPTIONS: dict[int, str] = {
    400: "Corrupt, truncated or empty image, or a malformed request body",
    401: "Missing or wrong X-API-Key",
    403: "The key's scope does not allow this endpoint",
    404: "Unknown user id",
    409: "A person with this name is already registered",
    413: "Request body over the upload limit, or image over the pixel limit",
    415: "Not a supported image type",
    422: "No face (or not exactly one), or a parameter, name or field out of range",
    429: "The key is over its rate limit; retry after Retry-After seconds",
    503: "The database is unavailable, or too many requests wait for inference (Retry-After)",
    504: "The request was not answered within REQUEST_TIMEOUT",
}

# What every endpoint behind a key may answer besides its own errors.
KEYED_ERRORS = (401, 403, 429, 504)


def error_responses(*codes: int) -> dict[int | str, dict]:
    """The OpenAPI `responses` entries of these error statuses, for a route decorator."""
    return {
        code: {
            "model": ErrorBody,
            "description": _ERROR_DESCRIPTIONS[code],
        }
        for code in sorted(set(codes))
    }
