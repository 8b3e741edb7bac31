"""`FaceGateClient` (synchronous) and `AsyncFaceGateClient`: the same methods, made from `endpoints`.

Each method is an endpoint function of `facegate.client.endpoints` (its signature and docstring)
bound to the client's way of sending: `_sync` and `_async` below are the only difference.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import logging
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable, Iterator
from typing import Any, Concatenate, ParamSpec, TypeVar

import httpx
import websockets.asyncio.client
import websockets.sync.client
from tenacity import AsyncRetrying, Retrying
from websockets.exceptions import ConnectionClosed

from facegate.client import endpoints, stream
from facegate.client.endpoints import Call
from facegate.client.errors import error_from_response, network_error
from facegate.client.images import ImageInput, frame_bytes
from facegate.client.retry import RetryPolicy
from facegate.client.stream import StreamAnswer

logger = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")

# Recognition of a large photo on a busy CPU can take tens of seconds.
DEFAULT_TIMEOUT = 60.0


class _Base:
    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
        max_retries: int = 3,
        *,
        max_retry_wait: float = 30.0,
    ) -> None:
        """`base_url`: the API's address (behind nginx: `http://host/api`); `api_key`: sent as
        `X-API-Key`; `timeout`: seconds per request (or an `httpx.Timeout`); `max_retries`: how often
        a call is sent again after a 429, a 503 or (calls that change nothing) a broken
        connection, 0 for never; `max_retry_wait`: the longest wait before a retry."""
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout if isinstance(timeout, httpx.Timeout) else httpx.Timeout(timeout)
        self._headers = {"X-API-Key": api_key} if api_key else {}
        self._retry = RetryPolicy(max_retries=max_retries, max_wait=max_retry_wait)

    def _check(self, response: httpx.Response) -> httpx.Response:
        if response.is_error:
            error = error_from_response(response)
            logger.debug(
                "%s %s -> %d: %s", response.request.method, response.url, response.status_code, error
            )
            raise error
        return response

    def _socket_url(self, threshold: float | None, collection: str | None) -> str:
        return stream.socket_url(self.base_url, "/ws/recognize", threshold=threshold, collection=collection)


def _sync(build: Callable[P, Call[T]]) -> Callable[Concatenate[FaceGateClient, P], T]:
    @functools.wraps(build)
    def method(self: FaceGateClient, /, *args: P.args, **kwargs: P.kwargs) -> T:
        return self._send(build(*args, **kwargs))

    method.__signature__ = _signature(build)  # type: ignore[attr-defined]
    return method


def _async(build: Callable[P, Call[T]]) -> Callable[Concatenate[AsyncFaceGateClient, P], Awaitable[T]]:
    @functools.wraps(build)
    async def method(self: AsyncFaceGateClient, /, *args: P.args, **kwargs: P.kwargs) -> T:
        return await self._send(build(*args, **kwargs))

    method.__signature__ = _signature(build)  # type: ignore[attr-defined]
    return method


def _signature(build: Callable[..., Call[Any]]) -> inspect.Signature:
    """`build`'s signature answering what its call reads (for `help()`: `-> DetectResponse`)."""
    signature = inspect.signature(build)
    answer = str(signature.return_annotation).removeprefix("Call[").removesuffix("]")
    own = inspect.Parameter("self", inspect.Parameter.POSITIONAL_ONLY)
    return signature.replace(parameters=[own, *signature.parameters.values()], return_annotation=answer)


class FaceGateClient(_Base):
    """A client of one FaceGate API over HTTP; thread-safe (httpx keeps a connection pool).

    Use it as a context manager, or call `close()`. Failures raise `facegate.client.FaceGateError`.
    """

    health = _sync(endpoints.health)
    stats = _sync(endpoints.stats)
    collections = _sync(endpoints.collections)
    create_collection = _sync(endpoints.create_collection)
    delete_collection = _sync(endpoints.delete_collection)
    detect = _sync(endpoints.detect)
    detect_annotated = _sync(endpoints.detect_annotated)
    register = _sync(endpoints.register)
    add_face = _sync(endpoints.add_face)
    recognize = _sync(endpoints.recognize)
    verify = _sync(endpoints.verify)
    users = _sync(endpoints.users)
    user = _sync(endpoints.user)
    rename_user = _sync(endpoints.rename_user)
    delete_user = _sync(endpoints.delete_user)
    faces = _sync(endpoints.faces)
    delete_face = _sync(endpoints.delete_face)
    liveness_ticket = _sync(endpoints.liveness_ticket)
    merge_user = _sync(endpoints.merge_user)
    events = _sync(endpoints.events)
    event_face = _sync(endpoints.event_face)
    visitors = _sync(endpoints.visitors)
    visitor_face = _sync(endpoints.visitor_face)
    enrol_visitor = _sync(endpoints.enrol_visitor)
    add_visitor_to = _sync(endpoints.add_visitor_to)
    forget_visitor = _sync(endpoints.forget_visitor)

    @functools.cached_property
    def _http(self) -> httpx.Client:
        return httpx.Client(base_url=self.base_url, headers=self._headers, timeout=self.timeout)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> FaceGateClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _send(self, call: Call[T]) -> T:
        return Retrying(**self._retry.tenacity_options(call.idempotent))(self._attempt, call)

    def _attempt(self, call: Call[T]) -> T:
        try:
            response = self._http.request(
                call.method,
                call.path,
                params=call.params,
                data=call.data,
                files=call.files or None,
                json=call.json,
            )
        except httpx.HTTPError as exc:
            raise network_error(exc, self.base_url) from exc
        return call.read(self._check(response))

    def stream_recognize(
        self,
        frames: Iterable[ImageInput],
        *,
        threshold: float | None = None,
        collection: str | None = None,
    ) -> Iterator[StreamAnswer]:
        """Recognition on each frame over `WS /ws/recognize`: yields one answer per frame, in order.

        A `RecognizedFrame` (the body of `recognize` plus `frame`, `skipped`, `processing_ms`), or a
        `FrameError` for a frame the server cannot use (no face, not an image); the stream goes on.
        Each frame is sent once the previous one is answered. Not retried. `collection`: whose
        people are searched (without it, the collection `default`).
        """
        url = self._socket_url(threshold, collection)
        try:
            with websockets.sync.client.connect(
                url, additional_headers=self._headers, open_timeout=self.timeout.connect
            ) as socket:
                for frame in frames:
                    # A refused stream is closed already; the message saying why is waiting.
                    with contextlib.suppress(ConnectionClosed):
                        socket.send(frame_bytes(frame))
                    yield stream.answer(socket.recv(timeout=self.timeout.read))
        except stream.SOCKET_ERRORS as exc:
            raise stream.socket_error(exc, url) from exc


class AsyncFaceGateClient(_Base):
    """`FaceGateClient` for asyncio: the same methods, as coroutines; `stream_recognize` is an async
    generator. Use it as an async context manager, or await `aclose()`."""

    health = _async(endpoints.health)
    stats = _async(endpoints.stats)
    collections = _async(endpoints.collections)
    create_collection = _async(endpoints.create_collection)
    delete_collection = _async(endpoints.delete_collection)
    detect = _async(endpoints.detect)
    detect_annotated = _async(endpoints.detect_annotated)
    register = _async(endpoints.register)
    add_face = _async(endpoints.add_face)
    recognize = _async(endpoints.recognize)
    verify = _async(endpoints.verify)
    users = _async(endpoints.users)
    user = _async(endpoints.user)
    rename_user = _async(endpoints.rename_user)
    delete_user = _async(endpoints.delete_user)
    faces = _async(endpoints.faces)
    delete_face = _async(endpoints.delete_face)
    liveness_ticket = _async(endpoints.liveness_ticket)
    merge_user = _async(endpoints.merge_user)
    events = _async(endpoints.events)
    event_face = _async(endpoints.event_face)
    visitors = _async(endpoints.visitors)
    visitor_face = _async(endpoints.visitor_face)
    enrol_visitor = _async(endpoints.enrol_visitor)
    add_visitor_to = _async(endpoints.add_visitor_to)
    forget_visitor = _async(endpoints.forget_visitor)

    @functools.cached_property
    def _http(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.base_url, headers=self._headers, timeout=self.timeout)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncFaceGateClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()

    async def _send(self, call: Call[T]) -> T:
        return await AsyncRetrying(**self._retry.tenacity_options(call.idempotent))(self._attempt, call)

    async def _attempt(self, call: Call[T]) -> T:
        try:
            response = await self._http.request(
                call.method,
                call.path,
                params=call.params,
                data=call.data,
                files=call.files or None,
                json=call.json,
            )
        except httpx.HTTPError as exc:
            raise network_error(exc, self.base_url) from exc
        return call.read(self._check(response))

    async def stream_recognize(
        self,
        frames: Iterable[ImageInput] | AsyncIterable[ImageInput],
        *,
        threshold: float | None = None,
        collection: str | None = None,
    ) -> AsyncIterator[StreamAnswer]:
        """`FaceGateClient.stream_recognize` for asyncio; `frames` may be an async iterable."""
        url = self._socket_url(threshold, collection)
        try:
            async with websockets.asyncio.client.connect(
                url, additional_headers=self._headers, open_timeout=self.timeout.connect
            ) as socket:
                async for frame in _aiter(frames):
                    # A refused stream is closed already; the message saying why is waiting.
                    with contextlib.suppress(ConnectionClosed):
                        await socket.send(frame_bytes(frame))
                    yield stream.answer(await asyncio.wait_for(socket.recv(), self.timeout.read))
        except stream.SOCKET_ERRORS as exc:
            raise stream.socket_error(exc, url) from exc


async def _aiter(items: Iterable[T] | AsyncIterable[T]) -> AsyncIterator[T]:
    if isinstance(items, AsyncIterable):
        async for item in items:
            yield item
    else:
        for item in items:
            yield item
