"""The web UI's HTTP client of the FaceGate API: one method per endpoint, failures as `ApiError`.

The UI never imports the models or the gallery: everything goes through this client, so the UI can
run in its own container against any FaceGate API (directly or behind nginx's `/api/`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import httpx

from facegate.config import Settings

logger = logging.getLogger(__name__)

# Detection and recognition of a large photo on a busy CPU can take tens of seconds.
DEFAULT_TIMEOUT = httpx.Timeout(120.0, connect=5.0)
_USERS_PAGE = 500  # the API's largest page


class ApiError(Exception):
    """A failed API call, with a message fit to show to a user as it is."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Upload:
    """An image file to send: its name (shown in the API's messages) and its bytes."""

    name: str
    data: bytes

    def part(self) -> tuple[str, bytes, str]:
        # The API sniffs the type from the bytes, so a generic content type is enough.
        return (self.name, self.data, "application/octet-stream")


@dataclass(frozen=True)
class DetectParams:
    """The detector's query parameters, with the API's defaults."""

    min_face_size: int = 20
    threshold_pnet: float = 0.6
    threshold_rnet: float = 0.7
    threshold_onet: float = 0.7


class ApiClient:
    """A thread-safe client of one FaceGate API (httpx keeps a connection pool)."""

    def __init__(
        self, base_url: str, api_key: str | None, *, timeout: httpx.Timeout = DEFAULT_TIMEOUT
    ) -> None:
        headers = {"X-API-Key": api_key} if api_key else {}
        self.base_url = base_url.rstrip("/")
        self._http = httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout)

    @classmethod
    def from_settings(cls, settings: Settings) -> ApiClient:
        return cls(settings.api_url, settings.api_key())

    def close(self) -> None:
        self._http.close()

    # --- endpoints ---------------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        return self._call("GET", "/health")

    def detect(self, image: Upload, params: DetectParams) -> dict[str, Any]:
        return self._call("POST", "/detect", params=vars(params), files={"file": image.part()})

    def register(self, name: str, image: Upload) -> dict[str, Any]:
        return self._call("POST", "/register", data={"name": name}, files={"image": image.part()})

    def recognize(self, image: Upload, threshold: float | None = None) -> dict[str, Any]:
        params = {} if threshold is None else {"threshold": threshold}
        return self._call("POST", "/recognize", params=params, files={"image": image.part()})

    def users(self) -> list[dict[str, Any]]:
        """Every registered person, following the API's pages."""
        users: list[dict[str, Any]] = []
        while True:
            page = self._call("GET", "/users", params={"offset": len(users), "limit": _USERS_PAGE})
            users += page["users"]
            if not page["users"] or len(users) >= page["total"]:
                return users

    def add_face(self, user_id: int, image: Upload) -> dict[str, Any]:
        return self._call("POST", f"/users/{user_id}/faces", files={"image": image.part()})

    def delete_user(self, user_id: int) -> dict[str, Any]:
        return self._call("DELETE", f"/users/{user_id}")

    def liveness_ticket(self) -> dict[str, Any]:
        """A short-lived ticket for `WS /ws/liveness`: what the browser gets instead of this key."""
        return self._call("POST", "/liveness/tickets")

    # --- transport ---------------------------------------------------------------------------

    def _call(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TimeoutException as exc:
            logger.warning("%s %s timed out: %s", method, path, exc)
            raise ApiError(f"the API at {self.base_url} did not answer in time; try a smaller image") from exc
        except httpx.HTTPError as exc:
            logger.warning("%s %s failed: %s", method, path, exc)
            raise ApiError(f"cannot reach the API at {self.base_url} ({type(exc).__name__})") from exc
        if response.is_error:
            message = error_message(response)
            logger.info("%s %s -> %d: %s", method, path, response.status_code, message)
            raise ApiError(message, response.status_code)
        return response.json()


def error_message(response: httpx.Response) -> str:
    """A readable sentence from an error answer: the API's `detail`, or the HTTP status of a proxy's page."""
    try:
        detail = response.json()["detail"]
    except (ValueError, KeyError, TypeError):
        # Not the API's JSON: an HTML error page of nginx (413, 502, ...) or an empty body.
        return f"HTTP {response.status_code} {response.reason_phrase}".strip()
    if isinstance(detail, list):  # FastAPI's validation errors: [{"loc": [...], "msg": "..."}]
        return "; ".join(_validation_item(item) for item in detail)
    return str(detail)


def _validation_item(item: Any) -> str:
    if not isinstance(item, dict):
        return str(item)
    location = [str(part) for part in item.get("loc", []) if part not in ("body", "query", "path")]
    message = str(item.get("msg", item))
    return f"{'.'.join(location)}: {message}" if location else message
