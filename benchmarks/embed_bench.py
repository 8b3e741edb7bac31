"""Per-face cost of every shipped embedder on real faces, against dlib's own descriptor call.

Faces: the central MTCNN face of LFW images (pairs order). For each `FACE_EMBEDDER` (one ONNX
Runtime thread, as each of a worker's two lanes has), the milliseconds per face of `embed` (the
embedder's own alignment, the network, the mirror pass when on: what /recognize pays after
detection), at batch 1 and in batches of 8 faces, and of the network alone without the mirror pass.
The first row is the seed's embedding step: dlib-bin's `compute_face_descriptor` on one chip, no
mirror. Wall and CPU milliseconds (CPU time is far steadier on a shared machine; for one thread it is
what the wall time would be on an idle one). Writes nothing into the repository.

    python benchmarks/embed_bench.py [--faces 32] [--repeats 3] [--embedders onnx mobilefacenet512]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime

from facegate.config import Settings
from facegate.detection import MTCNN
from facegate.embedding import create_embedder
from facegate.embedding.alignment import face_chips
from facegate.embedding.base import MirroredEmbedder
from facegate.embedding.models import dlib_resnet
from facegate.faces import Face
from facegate.imaging import load_image_file

LFW = Path(__file__).resolve().parents[2] / "shared" / "data" / "faces" / "lfw"
EMBEDDERS = ("dlib", "onnx", "mobilefacenet512", "mobilefacenet192")


def lfw_faces(count: int) -> list[tuple[np.ndarray, Face]]:
    """The first `count` images (in pairs order) that have a detection, with their central face."""
    detector, found, seen = MTCNN(), [], set()
    for line in (LFW / "pairs_folds1-2.txt").read_text().splitlines()[1:]:
        name, number = line.split()[:2]
        key = f"{name}/{name}_{int(number):04d}.jpg"
        if key in seen:
            continue
        seen.add(key)
        image = load_image_file(LFW / "lfw-deepfunneled" / key)
        faces = detector.detect(image)
        if faces:
            found.append((image, faces[0]))
        if len(found) == count:
            break
    return found


def ms_per_face(
    run: Callable[[int, int], object], faces: int, batch: int, repeats: int
) -> tuple[float, float]:
    """Median wall and CPU milliseconds per face over `repeats` passes of `run(start, stop)` over
    `faces` faces in batches of `batch`."""
    run(0, batch)  # warm-up (ONNX Runtime allocates on the first run)
    wall, cpu = [], []
    for _ in range(repeats):
        started, started_cpu = time.perf_counter(), time.process_time()
        for start in range(0, faces, batch):
            run(start, min(start + batch, faces))
        wall.append((time.perf_counter() - started) / faces * 1000)
        cpu.append((time.process_time() - started_cpu) / faces * 1000)
    return statistics.median(wall), statistics.median(cpu)


def measure(
    embedder: MirroredEmbedder, faces: list[tuple[np.ndarray, Face]], repeats: int
) -> tuple[tuple[float, float], ...]:
    """`embed` one face at a time; the network on 8 faces with their mirror images; the network
    alone on one face without its mirror image."""
    crops = np.concatenate([embedder.crops(image, [face]) for image, face in faces])
    n = len(faces)

    def embed(a: int, b: int) -> object:
        return [embedder.embed(image, [face]) for image, face in faces[a:b]]

    def mirrored(a: int, b: int) -> object:
        return embedder.descriptors(np.concatenate([crops[a:b], crops[a:b, :, ::-1]]))

    def plain(a: int, b: int) -> object:
        return embedder.descriptors(crops[a:b])

    return (
        ms_per_face(embed, n, 1, repeats),
        ms_per_face(mirrored, n, 8, repeats),
        ms_per_face(plain, n, 1, repeats),
    )


def cell(timing: tuple[float, float]) -> str:
    return f"{timing[0]:.1f} ({timing[1]:.1f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--faces", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--embedders", nargs="+", default=list(EMBEDDERS), choices=EMBEDDERS)
    args = parser.parse_args()

    faces = lfw_faces(args.faces)
    n = len(faces)
    print(
        f"{n} LFW faces; {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"onnxruntime {onnxruntime.__version__}, load average before: "
        + " ".join(f"{value:.2f}" for value in os.getloadavg())
    )
    print(
        "\n| embedder | embed, 1 face: wall ms/face (CPU) | network + mirror, 8 faces | network alone, "
        "no mirror, 1 face | embed CPU / the seed's step |"
    )
    print("|---|---|---|---|---|")
    dlib_chips = np.stack([face_chips(image, [face])[0] for image, face in faces])
    net = dlib_resnet()
    seed = ms_per_face(lambda a, b: net.compute_face_descriptor([dlib_chips[a]]), n, 1, args.repeats)
    print(f"| seed: dlib-bin compute_face_descriptor, 1 chip | {cell(seed)} | | | 1.00 |")
    with tempfile.TemporaryDirectory() as cache:
        for name in args.embedders:
            settings = Settings(
                _env_file=None, face_embedder=name, onnx_threads=1, facegate_data_dir=Path(cache)
            )
            embedder = create_embedder(settings)
            assert isinstance(embedder, MirroredEmbedder)
            single, eight, plain = measure(embedder, faces, args.repeats)
            print(
                f"| {embedder.name} ({name}) | {cell(single)} | {cell(eight)} | {cell(plain)} "
                f"| {single[1] / seed[1]:.2f} |"
            )
    print("\nload average after: " + " ".join(f"{value:.2f}" for value in os.getloadavg()))


if __name__ == "__main__":
    main()
