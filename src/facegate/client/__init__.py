"""The Python client of the FaceGate API.

    from facegate.client import FaceGateClient

    with FaceGateClient("http://127.0.0.1:8000", api_key="...") as client:
        answer = client.recognize("photo.jpg")
        print(answer.faces[0].matched_user)

Answers are the API's own response models (`facegate.schemas`); failures raise `FaceGateError`
subclasses (`facegate.client.errors`). Installed with the server, or alone as the small
`facegate-client` distribution (`client/` in the repository): nothing here imports the server.
"""

from facegate.client.clients import AsyncFaceGateClient, FaceGateClient
from facegate.client.errors import (
    AuthError,
    BadImageError,
    ConflictError,
    FaceGateError,
    NetworkError,
    NotFoundError,
    RateLimitError,
    RequestTimeoutError,
    RetryableError,
    UnavailableError,
    UnprocessableError,
)
from facegate.client.images import ImageInput
from facegate.client.stream import StreamAnswer
from facegate.schemas import FrameError, RecognizedFrame

__all__ = [
    "AsyncFaceGateClient",
    "AuthError",
    "BadImageError",
    "ConflictError",
    "FaceGateClient",
    "FaceGateError",
    "FrameError",
    "ImageInput",
    "NetworkError",
    "NotFoundError",
    "RateLimitError",
    "RecognizedFrame",
    "RequestTimeoutError",
    "RetryableError",
    "StreamAnswer",
    "UnavailableError",
    "UnprocessableError",
]
