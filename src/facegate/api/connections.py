"""Connection hygiene for uvicorn: a deadline and a size limit for each request's headers, a cap on
connections, and workers that exit with their supervisor.

uvicorn's `timeout_keep_alive` only starts once a response is complete: a connection that opens and
never finishes its first request line and headers (slowloris) is held for ever, and enough of them
use up the process's file descriptors. `GuardedHttpProtocol` arms a timer when a connection opens
and whenever a request's first byte arrives, and disarms it when the headers are complete; when it
fires the connection is closed. Past `max_connections`, a new connection is closed at once, so that
descriptors stay bounded whatever clients do; the header deadline frees the slots again.

Nothing in uvicorn or httptools bounds the headers' size: httptools builds a header value by repeated
concatenation on the event loop, so a client that streams one endless header stalls every request of
the worker until the deadline. A request line and headers over MAX_HEADER_BYTES, or more than
MAX_HEADERS headers, are answered 431 and the connection closed: counted exactly as the parser
completes each header, and by the bytes received while a header block is still unfinished.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import multiprocessing
import os
import signal
import sys
import time
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

logger = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1  # linux/prctl.h
_WARN_EVERY_S = 10.0  # a flood of refused connections logs one line per interval, not one each
# A request line and headers of at most 64 KiB, at most 100 headers: nginx's defaults are 32 KiB
# (4 buffers of 8 KiB), Python's http.client takes 100 headers.
MAX_HEADER_BYTES = 64 * 1024
MAX_HEADERS = 100
_TOO_LARGE = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
    b"content-type: text/plain; charset=utf-8\r\nconnection: close\r\ncontent-length: %d\r\n\r\n%s"
)


class _HeadersTooLarge(Exception):
    """Raised in a parser callback to stop parsing; the parser's error is then answered 431."""


class GuardedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a header deadline and a connection cap (see the module)."""

    _last_warning = 0.0

    def __init__(self, *args: Any, header_timeout: float, max_connections: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_timeout = header_timeout
        self._max_connections = max_connections
        self._header_deadline: asyncio.TimerHandle | None = None
        self._header_bytes = 0  # of the request line and the headers completed so far
        self._header_count = 0
        self._unfinished_bytes = 0  # received while a header block is unfinished
        self._too_large = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self._max_connections:
            self._warn(f"more than {self._max_connections} connections (MAX_CONNECTIONS); closing new ones")
            transport.close()
            return
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._header_deadline is None or self._too_large:
            return  # between requests, or in a body: the headers are complete
        self._unfinished_bytes += len(data)
        if self._unfinished_bytes > MAX_HEADER_BYTES:
            self._refuse_headers()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._header_bytes = self._header_count = 0
        self._arm()

    def on_url(self, url: bytes) -> None:
        super().on_url(url)
        self._count_header_bytes(len(url))

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_count += 1
        self._count_header_bytes(len(name) + len(value))
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._disarm()
        self._unfinished_bytes = 0
        super().on_headers_complete()

    def _count_header_bytes(self, size: int) -> None:
        self._header_bytes += size
        if self._header_bytes > MAX_HEADER_BYTES or self._header_count > MAX_HEADERS:
            self._too_large = True
            raise _HeadersTooLarge  # httptools raises its parser error, answered by send_400_response

    def send_400_response(self, msg: str) -> None:
        if self._too_large:
            self._refuse_headers()
        else:
            super().send_400_response(msg)

    def _refuse_headers(self) -> None:
        """Answer 431 and close: the headers are over MAX_HEADER_BYTES or MAX_HEADERS."""
        self._too_large = True
        self._disarm()
        if self.transport.is_closing():
            return
        self._warn(
            f"closing connections whose headers pass {MAX_HEADER_BYTES} bytes or {MAX_HEADERS} headers"
        )
        detail = f"request headers over {MAX_HEADER_BYTES} bytes or {MAX_HEADERS} headers".encode()
        self.transport.write(_TOO_LARGE % (len(detail), detail))
        self.transport.close()

    def _arm(self) -> None:
        if self._header_deadline is None:
            self._header_deadline = self.loop.call_later(self._header_timeout, self._headers_too_slow)

    def _disarm(self) -> None:
        if self._header_deadline is not None:
            self._header_deadline.cancel()
            self._header_deadline = None

    def _headers_too_slow(self) -> None:
        self._header_deadline = None
        if not self.transport.is_closing():
            self._warn(f"closing connections whose request headers took over {self._header_timeout:g} s")
            self.transport.close()

    @classmethod
    def _warn(cls, message: str) -> None:
        now = time.monotonic()
        if now - cls._last_warning >= _WARN_EVERY_S:
            cls._last_warning = now
            logger.warning(message)


def exit_with_supervisor() -> None:
    """In a worker process that a supervisor (uvicorn's, `facegate serve`'s) spawned, ask the kernel
    for SIGTERM when the supervisor dies, so that a SIGKILLed supervisor leaves no orphan serving.

    No-op outside such a worker (a single-process server, the tests' app) and off Linux. SIGTERM is
    uvicorn's graceful shutdown: the worker stops listening at once and answers what it holds.
    """
    parent = multiprocessing.parent_process()
    if parent is None or not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
        logger.warning("prctl(PR_SET_PDEATHSIG) failed: %s", os.strerror(ctypes.get_errno()))
        return
    if os.getppid() != parent.pid:  # the supervisor died before the request took effect
        os.kill(os.getpid(), signal.SIGTERM)
