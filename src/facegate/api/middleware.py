"""ASGI middleware: request ids, access log and metrics; the request time budget; the body size limit;
relative redirects.

Plain ASGI classes rather than Starlette's BaseHTTPMiddleware: they see the raw `receive` stream
(to count body bytes) and the start of every response (to add a header and record the status),
without an extra task per request.
"""

from __future__ import annotations

import logging
import math
import re
import time
import uuid
from urllib.parse import urlsplit

import anyio
from fastapi import HTTPException, status
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from facegate.api.logs import request_id_var
from facegate.api.metrics import Metrics

logger = logging.getLogger(__name__)
access_logger = logging.getLogger("facegate.access")

REQUEST_ID_HEADER = "X-Request-ID"
# An incoming id is logged, so it must not be able to forge or break log lines.
_VALID_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
# Requests the router did not match share one label, and so do unusual methods, so that clients
# cannot grow the metrics without bound.
UNMATCHED_ROUTE = "unmatched"
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def _header(scope: Scope, name: bytes) -> str | None:
    value = dict(scope["headers"]).get(name)
    return None if value is None else value.decode("latin-1")


def _error(code: int, detail: str) -> JSONResponse:
    return JSONResponse(status_code=code, content={"detail": detail})


class RequestContext:
    """Request id (the client's `X-Request-ID` if sane, else a new one), access log line and metrics."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = _header(scope, REQUEST_ID_HEADER.lower().encode())
        request_id = incoming if incoming and _VALID_REQUEST_ID.fullmatch(incoming) else uuid.uuid4().hex
        # Not reset afterwards: each request runs in its own task and context, and the error handler
        # that logs an unexpected exception runs outside this middleware, still wanting the id.
        request_id_var.set(request_id)
        answered = status.HTTP_500_INTERNAL_SERVER_ERROR  # if the app raises before answering
        started = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal answered
            if message["type"] == "http.response.start":
                answered = message["status"]
                headers = [*message.get("headers", []), (b"x-request-id", request_id.encode())]
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            self._record(scope, answered, time.perf_counter() - started, request_id)

    def _record(self, scope: Scope, code: int, seconds: float, request_id: str) -> None:
        route = getattr(scope.get("route"), "path", None) or UNMATCHED_ROUTE
        method = scope["method"] if scope["method"] in _METHODS else "other"
        key_name = scope.get("state", {}).get("key_name", "-")
        self.metrics.observe_request(method, route, code, seconds)
        # Route templates only: raw paths and query strings are client-controlled text.
        access_logger.info(
            "method=%s route=%s status=%d duration_ms=%.1f key=%s request_id=%s",
            method, route, code, seconds * 1000, key_name, request_id,
        )  # fmt: skip


class RequestDeadline:
    """Answer 504 when a request is not answered within `seconds`.

    The deadline cancels the request's task. Inference and database calls in worker threads cannot
    be interrupted, so the 504 comes once the step under way finishes, and the steps after it are
    skipped; the thread keeps its inference slot until then, which keeps the concurrency limit
    true. A response that has started (or whose last step has finished) is never cut off.
    """

    def __init__(self, app: ASGIApp, seconds: float) -> None:
        self.app = app
        self.seconds = seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False
        with anyio.CancelScope(deadline=anyio.current_time() + self.seconds) as budget:

            async def send_and_disarm(message: Message) -> None:
                nonlocal started
                if message["type"] == "http.response.start":
                    started = True
                    budget.deadline = math.inf
                await send(message)

            await self.app(scope, receive, send_and_disarm)
        if budget.cancelled_caught and not started:
            logger.warning("request not answered within %g s: 504", self.seconds)
            detail = f"the request was not answered within {self.seconds:g} s; try again later"
            await _error(status.HTTP_504_GATEWAY_TIMEOUT, detail)(scope, receive, send)


class BodyTooLarge(HTTPException):
    """Raised from `receive` once a streamed body passes the limit; FastAPI answers it as a 413."""

    def __init__(self, limit: int) -> None:
        super().__init__(status.HTTP_413_CONTENT_TOO_LARGE, detail=f"request body is over {limit} bytes")


class UploadSizeLimit:
    """Refuse a request body over `max_body` bytes without buffering it.

    A declared `Content-Length` over the limit is refused before reading anything. A body without
    one (chunked transfer) is counted as it streams in, and refused as soon as it passes the limit.
    """

    def __init__(self, app: ASGIApp, max_body: int) -> None:
        self.app = app
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _header(scope, b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body:
            detail = f"request body is {int(declared)} bytes; the limit is {self.max_body} bytes"
            await _error(status.HTTP_413_CONTENT_TOO_LARGE, detail)(scope, receive, send)
            return
        await self.app(scope, self._counting(receive), send)

    def _counting(self, receive: Receive) -> Receive:
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body:
                    raise BodyTooLarge(self.max_body)
            return message

        return counted


class RelativeRedirects:
    """Make the `Location` of a redirect relative (`/users`, not `http://<Host>/users`).

    Starlette's trailing-slash redirect builds an absolute URL from the request's `Host` header, a
    value the client chose; a relative one points at the same host through any proxy, and echoes
    nothing.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_relative(message: Message) -> None:
            if message["type"] == "http.response.start" and 300 <= message["status"] < 400:
                headers = [
                    (name, _relative(value) if name.lower() == b"location" else value)
                    for name, value in message.get("headers", [])
                ]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_relative)


def _relative(location: bytes) -> bytes:
    url = urlsplit(location.decode("latin-1"))
    relative = (url.path or "/") + (f"?{url.query}" if url.query else "")
    return relative.encode("latin-1")
