"""End-to-end API latency: /register and /recognize of a single-face 640x480 photo, 5 000 people enrolled.

Runs the real app in-process (FastAPI's test client: routing, multipart parsing, decoding, the
models and the embedded PostgreSQL; no network) once per embedder, so the table shows the same
requests with dlib's own runtime and with our ONNX conversion:

    python benchmarks/api_bench.py                    # dlib (onnx) and the default, 5 000 people
    python benchmarks/api_bench.py --embedders onnx --people 1000 --requests 20

The gallery is filled with synthetic unit vectors (the search cost depends on the count, not on
who they are) plus the probe's person. Everything lives in a temporary folder; nothing is written
to the repository.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
from fastapi.testclient import TestClient
from PIL import Image

from facegate.api.app import create_app
from facegate.config import Settings
from facegate.gallery import Gallery

FACES = Path(__file__).resolve().parents[2] / "shared" / "data" / "faces"
ENROL = FACES / "portraits" / "Barack_Obama" / "fr_obama.jpg"
PROBE = FACES / "portraits" / "Barack_Obama" / "fr_obama2.jpg"
KEY = "bench"


def photo_640x480(path: Path) -> bytes:
    image = Image.open(path).convert("RGB")
    image.thumbnail((640, 480))
    canvas = Image.new("RGB", (640, 480))
    canvas.paste(image, ((640 - image.width) // 2, (480 - image.height) // 2))
    buffer = io.BytesIO()
    canvas.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def fill(gallery: Gallery, people: int, dim: int) -> None:
    rng = np.random.default_rng(0)
    for index in range(people):
        vector = rng.normal(size=dim).astype(np.float32)
        gallery.add_user(f"synthetic {index}", vector / np.linalg.norm(vector), (0, 0, 1, 1))


def timed(call: Callable[[], httpx.Response]) -> tuple[float, float]:
    """Wall and CPU milliseconds of one request. CPU is this process's, every thread (the models,
    the event loop), not the database server's: far steadier than wall time on a busy machine."""
    start, start_cpu = time.perf_counter(), time.process_time()
    response = call()
    elapsed, cpu = (time.perf_counter() - start) * 1000, (time.process_time() - start_cpu) * 1000
    if response.status_code >= 300:
        raise RuntimeError(f"{response.status_code}: {response.text}")
    return elapsed, cpu


def run(embedder: str, people: int, requests: int) -> dict[str, list[tuple[float, float]]]:
    with tempfile.TemporaryDirectory() as folder:
        # One process serves every request here: it gets all the cores, as `serve --workers 1` would.
        settings = Settings(
            app_token=KEY, facegate_data_dir=Path(folder), face_embedder=embedder, rate_limit_per_minute=0,
            web_concurrency=1, _env_file=None,
        )  # fmt: skip
        with TestClient(create_app(settings), headers={"X-API-Key": KEY}) as client:
            services = client.app.state.services
            fill(services.gallery, people, services.pipeline.embedder.dim)
            enrol, probe = photo_640x480(ENROL), photo_640x480(PROBE)
            for _ in range(3):  # warm-up: sessions, arenas, the pool
                client.post("/recognize", files={"image": ("p.jpg", probe)})
            enrol_files = {"image": ("e.jpg", enrol)}
            # One photo under many names: allowed past the duplicate guard, whose search it skips.
            again = {"allow_duplicate": "true"}
            register = [
                timed(
                    lambda i=i: client.post(
                        "/register", params=again, data={"name": f"probe {i}"}, files=enrol_files
                    )
                )
                for i in range(requests)
            ]
            recognize = [
                timed(lambda: client.post("/recognize", files={"image": ("p.jpg", probe)}))
                for _ in range(requests)
            ]
        return {"register": register, "recognize": recognize}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--embedders",
        nargs="+",
        default=["onnx", "mobilefacenet512"],
        choices=["dlib", "onnx", "mobilefacenet512", "mobilefacenet192"],
    )
    parser.add_argument("--people", type=int, default=5000)
    parser.add_argument("--requests", type=int, default=30)
    args = parser.parse_args()
    print(f"{args.people} people enrolled, {args.requests} requests each; load average {os.getloadavg()}")
    print("| embedder | endpoint | p50 ms | p95 ms | p50 CPU ms (this process) |")
    print("|---|---|---|---|---|")
    for embedder in args.embedders:
        for endpoint, timings in run(embedder, args.people, args.requests).items():
            wall, cpu = [t[0] for t in timings], [t[1] for t in timings]
            p95 = statistics.quantiles(wall, n=20)[-1]
            print(
                f"| {embedder} | /{endpoint} | {statistics.median(wall):.1f} | {p95:.1f} "
                f"| {statistics.median(cpu):.1f} |"
            )


if __name__ == "__main__":
    main()
