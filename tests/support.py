"""Helpers shared by several test modules: the keys and apps under test, uploads, small measures.

Fixtures live in conftest.py and use these; test modules import from here, never from conftest.
Real servers in child processes are in servers.py, the shared data's paths in data.py.
"""

from __future__ import annotations

import io
import uuid
from collections.abc import Callable, Iterator
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import onnx
import psycopg
from fastapi.testclient import TestClient
from PIL import Image
from psycopg import sql

from facegate.config import Settings
from facegate.detection import MTCNN
from facegate.gallery import EmbeddedServer
from facegate.imaging import load_image_file
from facegate.liveness.landmarks import landmarks68
from facegate.liveness.session import Challenge
from facegate.liveness.signals import yaw_index
from tests.data import FACES

if TYPE_CHECKING:
    from facegate.api.deps import Services

# The admin key of the session's app (the `client` fixture sends it) and of `app_settings`.
API_KEY = "test-key-" + uuid.uuid4().hex
# A key of each scope of the `secured` app.
SCOPED_KEYS = {scope: f"{scope}-key-{uuid.uuid4().hex}" for scope in ("detect", "recognize", "admin")}


class FakeClock:
    """A clock that moves only when a test moves it: rate limits then do not depend on speed."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def io_signature(
    model: onnx.ModelProto,
) -> tuple[tuple[str, int, list[int | str]], tuple[str, list[int | str]]]:
    """A one-input, one-output model's (input name, element type, dims) and (output name, dims),
    each dim a size or a symbolic name."""
    (graph_input,), (graph_output,) = model.graph.input, model.graph.output

    def dims(value: onnx.ValueInfoProto) -> list[int | str]:
        return [d.dim_value or d.dim_param for d in value.type.tensor_type.shape.dim]

    return (graph_input.name, graph_input.type.tensor_type.elem_type, dims(graph_input)), (
        graph_output.name,
        dims(graph_output),
    )


# --- databases and apps under test ---------------------------------------------------------------

# The embeddings of the `gallery` fixture's gallery.
GALLERY_TEST_MODEL = "test-model"
GALLERY_TEST_DIM = 16


def create_database(server: EmbeddedServer) -> str:
    """A new, empty database on `server`; returns its DSN."""
    name = f"test_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(server.dsn("postgres"), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return server.dsn(name)


def app_settings(server: EmbeddedServer, data_dir: Path, **overrides: object) -> Settings:
    """Settings of an app under test: its own new database on `server`, no `.env`, `API_KEY` as admin,
    and no rate limit unless `overrides` set one (see `tests.servers.UNLIMITED`)."""
    values: dict[str, object] = {
        "app_token": API_KEY,
        "database_url": create_database(server),
        "rate_limit_per_minute": 0,
        **overrides,
    }
    return Settings(facegate_data_dir=data_dir, _env_file=None, **values)


def running_app(settings: Settings) -> Iterator[TestClient]:
    """A test client of the app built from `settings`, with its lifespan (models, pool) running."""
    from facegate.api.app import create_app  # the models load only in the sessions that need them

    with TestClient(create_app(settings)) as test_client:
        yield test_client


def services(client: TestClient) -> Services:
    """The services of the app under `client` (to swap a limiter in for one test)."""
    return client.app.state.services  # type: ignore[attr-defined]


def scoped_headers(scope: str) -> dict[str, str]:
    """The headers that send the `secured` app's key of `scope`."""
    return {"X-API-Key": SCOPED_KEYS[scope]}


def gallery_size(client: TestClient, scope: str | None = None) -> tuple[int, int]:
    """(users, faces) in the gallery of `client`'s app, asked with the `secured` app's key of `scope`
    (none: with the client's own headers)."""
    stats = client.get("/stats", headers=None if scope is None else scoped_headers(scope)).json()
    return stats["total_users"], stats["total_faces"]


# --- uploads -------------------------------------------------------------------------------------


def upload(path: Path, field: str = "file") -> dict:
    """The `files` of a request that uploads the photo at `path` as form field `field`."""
    return {field: (path.name, path.read_bytes(), "application/octet-stream")}


def unique(name: str) -> str:
    """`name` with a random suffix: tests on a shared gallery never collide on a name."""
    return f"{name} {uuid.uuid4().hex[:8]}"


def _png_bytes(width: int, height: int, mode: str = "RGB") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, (width, height)).save(buffer, format="PNG")
    return buffer.getvalue()


# Uploads the API must refuse, by case: how to make the bytes, and the status they get. Made on
# first use (`bad_upload`), not at import: the PNG bomb takes seconds to encode.
_BAD_UPLOADS: dict[str, tuple[Callable[[], bytes], int]] = {
    "text named .jpg": (lambda: b"hello, I am not a photo\n", 415),
    "zero bytes": (lambda: b"", 400),
    "truncated jpeg": (lambda: (FACES / "portraits/Barack_Obama/fr_obama.jpg").read_bytes()[:4000], 400),
    "png bomb 30000x30000": (lambda: _png_bytes(30_000, 30_000, "L"), 413),
    "gif": (lambda: b"GIF89a" + b"\x00" * 64, 415),
}
BAD_UPLOAD_CASES = sorted(_BAD_UPLOADS)


@cache
def bad_upload(case: str) -> tuple[bytes, int]:
    """The bytes of the bad upload `case` (one of `BAD_UPLOAD_CASES`) and the status they get."""
    make, status = _BAD_UPLOADS[case]
    return make(), status


# --- embeddings and measures ---------------------------------------------------------------------

BOX = (10.0, 20.0, 110.0, 140.0)  # a face's box, for galleries fed with made-up embeddings


def unit(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    """`n` random unit vectors of `dim` dimensions (made-up embeddings)."""
    vectors = rng.standard_normal((n, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def cosine_distances(queries: np.ndarray, vectors: np.ndarray) -> np.ndarray:
    """Exact 1 - cos, in float64: the reference the database is compared with."""
    q = queries.astype(np.float64)
    v = vectors.astype(np.float64)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    return 1.0 - q @ v.T


def assert_unit_and_people_apart(vectors: dict[str, np.ndarray], dim: int) -> None:
    """Each person's (n, dim) embeddings are unit vectors, and the two least alike photos of any one
    person are nearer than the two most alike photos of different people."""
    everything = np.concatenate(list(vectors.values()))
    assert everything.shape[1] == dim
    np.testing.assert_allclose(np.linalg.norm(everything, axis=1), 1.0, atol=1e-5)
    worst_same = max(float(cosine_distances(own, own).max()) for own in vectors.values())
    best_other = min(
        float(cosine_distances(own, theirs).min())
        for person, own in vectors.items()
        for other, theirs in vectors.items()
        if person != other
    )
    assert worst_same < best_other, (worst_same, best_other)


def iou(a: tuple | list, b: tuple | list) -> float:
    """Intersection over union of two (x1, y1, x2, y2) boxes; 0 for empty ones."""
    width = min(a[2], b[2]) - max(a[0], b[0])
    height = min(a[3], b[3]) - max(a[1], b[1])
    inter = max(width, 0) * max(height, 0)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


# --- liveness: real landmarks and landmark sequences (test_liveness, test_liveness_ws) ---------


def shrunk(path: Path) -> np.ndarray:
    image = load_image_file(path)
    scale = 640 / max(image.shape[:2])
    if scale >= 1:
        return image
    size = (round(image.shape[1] * scale), round(image.shape[0] * scale))
    return np.asarray(Image.fromarray(image).resize(size, Image.Resampling.LANCZOS))


def points_of(detector: MTCNN, image: np.ndarray) -> np.ndarray:
    faces = detector.detect(image)
    assert faces, "no face found"
    return landmarks68(image, max(faces, key=lambda face: face.area))


def close_eyes(points: np.ndarray, amount: float = 0.8) -> np.ndarray:
    """The lids of both eyes moved `amount` of the way to each other (a blink's closed frame)."""
    moved = points.copy()
    for upper, lower in (((37, 38), (41, 40)), ((43, 44), (47, 46))):
        for top, bottom in zip(upper, lower, strict=True):
            middle = (points[top] + points[bottom]) / 2
            moved[top] += amount * (middle - points[top])
            moved[bottom] += amount * (middle - points[bottom])
    return moved


def open_mouth(points: np.ndarray) -> np.ndarray:
    """The lower lip and the chin dropped by 60% of the mouth's width."""
    moved = points.copy()
    drop = 0.6 * np.linalg.norm(points[54] - points[48])
    moved[[*range(5, 12), *range(55, 60), 65, 66, 67], 1] += drop
    return moved


def placed_like(points: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """`points` moved and scaled onto `reference`'s place (another photo is another framing)."""
    scale = np.ptp(reference[:, 0]) / np.ptp(points[:, 0])
    return (points - points.mean(axis=0)) * scale + reference.mean(axis=0)


def turned_for(challenge: Challenge, landmarks: dict[str, np.ndarray]) -> np.ndarray:
    """The real turned photo (or its mirror) whose yaw goes the way `challenge` asks."""
    wants = 1.0 if challenge is Challenge.TURN_LEFT else -1.0
    turned = landmarks["turned"]
    return turned if np.sign(yaw_index(turned)) == wants else landmarks["turned_mirrored"]
