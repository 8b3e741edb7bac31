"""What the client raises: `FaceGateError` and one subclass per kind of failure.

An error answer of the API becomes the subclass of its status (`.status_code`, `.detail` as the
API sent it, `str()` a readable sentence); a request that got no answer becomes `NetworkError`.
"""

from __future__ import annotations

import email.utils
import math
import time
from typing import Any

import httpx


class FaceGateError(Exception):
    """A failed call. `status_code` is None when no answer came (see `NetworkError`)."""

    # A request that failed validation: each failing field as the API lists them (`loc`, `msg`).
    errors: list[dict[str, Any]] | None = None

    def __init__(self, message: str, status_code: int | None = None, detail: Any = None) -> None:
        super().__init__(message)
        self.status_code = status_code
        # The API's `detail`, always one sentence.
        self.detail = message if detail is None else detail


class AuthError(FaceGateError):
    """401: a missing or wrong API key; 403: the key's scope does not cover the endpoint, or the key is
    not bound to the collection."""


class NotFoundError(FaceGateError):
    """404: no such user, face or collection."""


class ConflictError(FaceGateError):
    """409: the name is taken (a person's, a collection's), the face already belongs to someone else,
    or the face is a person's last one; the collection `default` cannot be deleted."""


class BadImageError(FaceGateError):
    """400: corrupt, truncated or empty image; 413: over the size or pixel limit; 415: not an image."""


class UnprocessableError(FaceGateError):
    """422: no face (or not exactly one), a photo that is not the same person as the one it is added
    to, or a parameter or name out of range."""


class RetryableError(FaceGateError):
    """An answer that says to come back later; `retry_after` is its `Retry-After` in seconds, if any."""

    def __init__(
        self,
        message: str,
        status_code: int | None = None,
        detail: Any = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, status_code, detail)
        self.retry_after = retry_after


class RateLimitError(RetryableError):
    """429: the key is over its rate limit."""


class UnavailableError(RetryableError):
    """503: the database is unreachable, or too many requests already wait for inference."""


class NetworkError(FaceGateError):
    """No answer: the server could not be reached or the connection broke (`__cause__` says how)."""


class RequestTimeoutError(NetworkError):
    """The server accepted the request but did not answer within the client's timeout."""


_BY_STATUS: dict[int, type[FaceGateError]] = {
    400: BadImageError,
    401: AuthError,
    403: AuthError,
    404: NotFoundError,
    409: ConflictError,
    413: BadImageError,
    415: BadImageError,
    422: UnprocessableError,
    429: RateLimitError,
    503: UnavailableError,
}


def error_for(
    status_code: int, message: str, detail: Any = None, retry_after: float | None = None
) -> FaceGateError:
    """The error of an answer with `status_code` (other statuses: `FaceGateError` itself)."""
    kind = _BY_STATUS.get(status_code, FaceGateError)
    if issubclass(kind, RetryableError):
        return kind(message, status_code, detail, retry_after)
    return kind(message, status_code, detail)


def error_from_response(response: httpx.Response) -> FaceGateError:
    """The error of an error answer: the API's `detail`, or the HTTP status of a proxy's own page."""
    try:
        body = response.json()
        detail, errors = body["detail"], body.get("errors")
    except (ValueError, KeyError, TypeError, AttributeError):
        # Not the API's JSON: an HTML error page of nginx (413, 502, ...) or an empty body.
        detail, errors = None, None
    message = (
        f"HTTP {response.status_code} {response.reason_phrase}".strip() if detail is None else str(detail)
    )
    error = error_for(response.status_code, message, detail, retry_after(response.headers.get("retry-after")))
    error.errors = errors
    return error


def retry_after(value: str | None) -> float | None:
    """Seconds to wait from a `Retry-After` header: delta-seconds or an HTTP date; None if absent or bad."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    seconds = when.timestamp() - time.time()
    return max(0.0, seconds) if math.isfinite(seconds) else None


def network_error(exc: httpx.HTTPError, base_url: str) -> NetworkError:
    """`exc` (no answer came) as the client's error; a connect timeout is a server not reached."""
    if isinstance(exc, httpx.TimeoutException) and not isinstance(exc, httpx.ConnectTimeout):
        return RequestTimeoutError(f"the API at {base_url} did not answer in time")
    return NetworkError(f"cannot reach the API at {base_url} ({type(exc).__name__})")
