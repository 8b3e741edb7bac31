"""The web UI's view of the FaceGate API: the public client (`facegate.client`) as the pages use it.

The pages get plain JSON-like dicts and one exception, `ApiError`, whose message is fit to show to
a user as it is. The UI never imports the models or the gallery: everything goes through this
client, so the UI can run in its own container against any FaceGate API (directly or behind
nginx's `/api/`).
"""

from __future__ import annotations

import hashlib
import io
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, ParamSpec, TypeVar

import httpx
from pydantic import BaseModel

from facegate.client import FaceGateClient, FaceGateError, RequestTimeoutError
from facegate.client.errors import error_from_response
from facegate.config import Settings
from facegate.faces import DetectionParams

logger = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")

# Detection and recognition of a large photo on a busy CPU can take tens of seconds.
DEFAULT_TIMEOUT = httpx.Timeout(120.0, connect=5.0)
# One retry after a 429, a 503 or a broken connection: a person waits at a spinner meanwhile.
_RETRIES = 1
_USERS_PAGE = 500  # the API's largest page
_EVENTS_PAGE = 200  # the newest events the Activity page shows


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

    def digest(self) -> str:
        """What tells this photo from another one with the same name."""
        return hashlib.sha256(self.data).hexdigest()

    def file(self) -> io.BytesIO:
        """A file object with this name, which the client sends as the upload's file name."""
        named = io.BytesIO(self.data)
        named.name = self.name
        return named


class ApiClient:
    """A thread-safe client of one FaceGate API (httpx keeps a connection pool)."""

    def __init__(
        self, base_url: str, api_key: str | None, *, timeout: httpx.Timeout = DEFAULT_TIMEOUT
    ) -> None:
        self._client = FaceGateClient(base_url, api_key, timeout=timeout, max_retries=_RETRIES)
        self.base_url = self._client.base_url

    @classmethod
    def from_settings(cls, settings: Settings) -> ApiClient:
        return cls(settings.api_url, settings.api_key())

    def close(self) -> None:
        self._client.close()

    # --- endpoints ---------------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        return _call(self._client.health)

    def stats(self, collection: str) -> dict[str, Any]:
        return _call(self._client.stats, collection=collection)

    def collections(self) -> list[dict[str, Any]]:
        return _call(self._client.collections)["collections"]

    def create_collection(self, name: str) -> dict[str, Any]:
        return _call(self._client.create_collection, name)

    def detect(self, image: Upload, params: DetectionParams) -> dict[str, Any]:
        return _call(self._client.detect, image.file(), **asdict(params))

    def register(
        self,
        name: str,
        image: Upload,
        collection: str,
        allow_duplicate: bool = False,
        face: int | None = None,
    ) -> dict[str, Any]:
        return _call(
            self._client.register,
            name,
            image.file(),
            collection=collection,
            allow_duplicate=allow_duplicate,
            face=face,
        )

    def recognize(
        self, image: Upload, collection: str, threshold: float | None = None, top_k: int | None = None
    ) -> dict[str, Any]:
        return _call(
            self._client.recognize, image.file(), threshold=threshold, collection=collection, top_k=top_k
        )

    def users(self, collection: str) -> list[dict[str, Any]]:
        """Every person of the collection, following the API's pages."""
        users: list[dict[str, Any]] = []
        while True:
            page = _call(self._client.users, offset=len(users), limit=_USERS_PAGE, collection=collection)
            users += page["users"]
            if not page["users"] or len(users) >= page["total"]:
                return users

    def add_face(
        self, user_id: int, image: Upload, collection: str, *, force: bool = False
    ) -> dict[str, Any]:
        return _call(self._client.add_face, user_id, image.file(), collection=collection, force=force)

    def faces(self, user_id: int, collection: str) -> list[dict[str, Any]]:
        return _call(self._client.faces, user_id, collection=collection)["faces"]

    def delete_face(self, user_id: int, face_id: int, collection: str) -> dict[str, Any]:
        return _call(self._client.delete_face, user_id, face_id, collection=collection)

    def rename_user(self, user_id: int, name: str, collection: str) -> dict[str, Any]:
        return _call(self._client.rename_user, user_id, name, collection=collection)

    def delete_user(self, user_id: int, collection: str) -> dict[str, Any]:
        return _call(self._client.delete_user, user_id, collection=collection)

    def merge_user(self, user_id: int, other_id: int, collection: str) -> dict[str, Any]:
        return _call(self._client.merge_user, user_id, other_id, collection=collection)

    def events(
        self, collection: str, status: str | None = None, since: str | None = None
    ) -> list[dict[str, Any]]:
        """The newest events of the collection (one page of the API's largest)."""
        page = _call(
            self._client.events, collection=collection, status=status, since=since, limit=_EVENTS_PAGE
        )
        return page["events"]

    def event_face(self, event_id: int) -> bytes:
        return _bytes(self._client.event_face, event_id)

    def visitors(self, collection: str) -> list[dict[str, Any]]:
        return _call(self._client.visitors, collection=collection)["visitors"]

    def visitor_face(self, visitor_id: int, collection: str) -> bytes:
        return _bytes(self._client.visitor_face, visitor_id, collection=collection)

    def enrol_visitor(self, visitor_id: int, name: str, collection: str) -> dict[str, Any]:
        return _call(self._client.enrol_visitor, visitor_id, name, collection=collection)

    def add_visitor_to(self, visitor_id: int, user_id: int, collection: str) -> dict[str, Any]:
        return _call(self._client.add_visitor_to, visitor_id, user_id, collection=collection)

    def forget_visitor(self, visitor_id: int, collection: str) -> dict[str, Any]:
        return _call(self._client.forget_visitor, visitor_id, collection=collection)

    def liveness_ticket(self) -> dict[str, Any]:
        """A short-lived ticket for `WS /ws/liveness`: what the browser gets instead of this key."""
        return _call(self._client.liveness_ticket)


def _call(method: Callable[P, BaseModel], *args: P.args, **kwargs: P.kwargs) -> dict[str, Any]:
    """The answer as JSON types, or `ApiError` with a sentence for the page."""
    return _errors(lambda: method(*args, **kwargs).model_dump(mode="json"), method.__name__)


def _bytes(method: Callable[P, bytes], *args: P.args, **kwargs: P.kwargs) -> bytes:
    """A binary answer (a picture), or `ApiError` as `_call`."""
    return _errors(lambda: method(*args, **kwargs), method.__name__)


def _errors(request: Callable[[], T], name: str) -> T:
    try:
        return request()
    except RequestTimeoutError as exc:
        logger.warning("%s timed out: %s", name, exc)
        raise ApiError(f"{exc}; try a smaller image") from exc
    except FaceGateError as exc:
        logger.info("%s failed (%s): %s", name, exc.status_code or type(exc).__name__, exc)
        raise ApiError(str(exc), exc.status_code) from exc


def error_message(response: httpx.Response) -> str:
    """A readable sentence from an error answer: the API's `detail`, or the HTTP status of a proxy's page."""
    return str(error_from_response(response))
