"""Connection hygiene for uvicorn: a deadline for each request's headers, a cap on connections, and
workers that exit with their supervisor.

uvicorn's `timeout_keep_alive` only starts once a response is complete: a connection that opens and
never finishes its first request line and headers (slowloris) is held for ever, and enough of them
use up the process's file descriptors. `GuardedHttpProtocol` arms a timer when a connection opens
and whenever a request's first byte arrives, and disarms it when the headers are complete; when it
fires the connection is closed. Past `max_connections`, a new connection is closed at once, so that
descriptors stay bounded whatever clients do; the header deadline frees the slots again.
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


class GuardedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a header deadline and a connection cap (see the module)."""

    _last_warning = 0.0

    def __init__(self, *args: Any, header_timeout: float, max_connections: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_timeout = header_timeout
        self._max_connections = max_connections
        self._header_deadline: asyncio.TimerHandle | None = None

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

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm()

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()

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
