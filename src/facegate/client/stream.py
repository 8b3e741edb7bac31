"""`WS /ws/recognize` as the clients use it: the socket's address and reading its messages.

The clients send a frame and wait for its answer before sending the next (so `skipped` stays 0 and
a camera generator is asked for a new picture only when the server is ready for one). A frame the
server cannot use is yielded as a `FrameError` and the stream goes on; a refused stream (key,
scope, rate, parameters) raises the error of its status.
"""

from __future__ import annotations

import json
import socket
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from facegate.client.errors import BadImageError, FaceGateError, NetworkError, error_for
from facegate.schemas import FrameError, RecognizedFrame

# Close code of a message over the receiver's size limit (RFC 6455): a frame far over MAX_UPLOAD_BYTES.
_MESSAGE_TOO_BIG = 1009
_SCHEMES = {"http": "ws", "https": "wss"}

StreamAnswer = RecognizedFrame | FrameError


def socket_url(base_url: str, path: str, **params: Any) -> str:
    """`ws(s)://` + the API's address (with its path prefix, e.g. `/api` behind nginx) + `path`."""
    parts = urlsplit(base_url)
    query = urlencode({name: value for name, value in params.items() if value is not None})
    scheme = _SCHEMES.get(parts.scheme, parts.scheme)
    return urlunsplit((scheme, parts.netloc, parts.path.rstrip("/") + path, query, ""))


def answer(message: str | bytes) -> StreamAnswer:
    """A frame's answer; raises the error of a refusal (an error message without a frame number)."""
    body = json.loads(message)
    if "error" not in body:
        return RecognizedFrame.model_validate(body)
    if "frame" in body:
        return FrameError.model_validate(body)
    raise error_for(int(body.get("status", 0)), str(body["error"]))


# What opening, sending and receiving raise when a stream cannot be opened or breaks (not OSError:
# a frame given as a path that does not exist is the caller's mistake, not the network's).
SOCKET_ERRORS = (
    ConnectionError,
    socket.gaierror,
    InvalidHandshake,
    InvalidURI,
    ConnectionClosed,
    TimeoutError,
)


def socket_error(exc: Exception, url: str) -> FaceGateError:
    """A websockets failure as the client's error."""
    if isinstance(exc, ConnectionClosed) and exc.rcvd is not None and exc.rcvd.code == _MESSAGE_TOO_BIG:
        return BadImageError("the frame is over the server's message size limit", 413)
    return NetworkError(f"the stream {url} failed ({type(exc).__name__}: {exc})")
