"""Load test of the FaceGate API with Locust: detection, recognition and the occasional registration.

    FACEGATE_API_KEY=... locust -f deploy/locustfile.py --host http://127.0.0.1:8000

Each simulated user uploads the shared test photos (`../shared/data/faces/`, or `FACEGATE_PHOTOS`)
as fast as it is answered: the number of users is the number of concurrent requests. Tasks are
tagged `detect`, `recognize` and `register`, so a run can measure one endpoint (`--tags detect`).
Recognition is only realistic against an enrolled gallery: `benchmarks/load_test.py` enrols one
photo per person before it runs Locust (or use `facegate enroll`). Registration adds a new person
under a unique name, as an admin enrolling people while the service is in use would.

Environment: `FACEGATE_API_KEY` (required), `FACEGATE_PHOTOS`, `FACEGATE_MAX_PIXELS` (photos larger
than this are left out; default 2 megapixels, a typical upload from a web page or a camera).
"""

from __future__ import annotations

import itertools
import os
import random
import uuid
from dataclasses import dataclass
from pathlib import Path

from locust import HttpUser, constant, tag, task
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
PHOTOS = Path(os.environ.get("FACEGATE_PHOTOS", REPO.parent / "shared" / "data" / "faces"))
MAX_PIXELS = int(os.environ.get("FACEGATE_MAX_PIXELS", 2_000_000))


@dataclass(frozen=True)
class Photo:
    name: str
    data: bytes


def load_photos(folder: Path, max_pixels: int = MAX_PIXELS) -> list[Photo]:
    """Every image under `folder` of at most `max_pixels`, read once into memory."""
    photos = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        try:
            with Image.open(path) as image:
                width, height = image.size
        except OSError:
            continue  # not an image: README, MANIFEST
        if width * height <= max_pixels:
            photos.append(Photo(path.name, path.read_bytes()))
    if not photos:
        raise RuntimeError(f"no photos of at most {max_pixels} pixels in {folder}")
    return photos


# Portraits have one main face (recognition, registration); groups add several faces to detection.
PORTRAITS = load_photos(PHOTOS / "portraits")
SCENES = PORTRAITS + load_photos(PHOTOS / "groups")
_user_numbers = itertools.count()


class FaceGateUser(HttpUser):
    """A client of the API that sends its next request as soon as the last one is answered."""

    wait_time = constant(0)

    def on_start(self) -> None:
        self.client.headers["X-API-Key"] = os.environ["FACEGATE_API_KEY"]
        # Each user its own fixed sequence of photos, so runs of the same size upload the same mix.
        self.random = random.Random(next(_user_numbers))

    @tag("detect")
    @task(5)
    def detect(self) -> None:
        photo = self.random.choice(SCENES)
        self.client.post("/detect", files={"file": (photo.name, photo.data)}, name="/detect")

    @tag("recognize")
    @task(4)
    def recognize(self) -> None:
        photo = self.random.choice(PORTRAITS)
        self.client.post("/recognize", files={"image": (photo.name, photo.data)}, name="/recognize")

    @tag("register")
    @task(1)
    def register(self) -> None:
        photo = self.random.choice(PORTRAITS)
        with self.client.post(
            "/register",
            # The same portraits again under new names: without this, the duplicate guard answers 409.
            params={"allow_duplicate": "true"},
            data={"name": f"load test {uuid.uuid4().hex[:12]}"},
            files={"image": (photo.name, photo.data)},
            name="/register",
            catch_response=True,
        ) as response:
            # A portrait with a second face of similar size is refused (422): the API did its job.
            if response.status_code == 422:
                response.success()
