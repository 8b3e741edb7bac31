"""MTCNN detection latency: ours (ONNX Runtime) against the reference (ipazc/mtcnn on TensorFlow).

    python benchmarks/detect_bench.py [--repeat 20] [--threads 0] [--photos]

Per-image latency, warm, one image at a time, at 640x480, 1280x720 and 1920x1080 (group photos
letterboxed to those sizes) and, with --photos, over the shared photo set (portraits, groups,
no-face images) at their own sizes. The reference runs on the same images in the same process
when the optional extra `reference` (mtcnn[tensorflow]) is installed; without it, the photo set
is compared with the reference's recorded wall times in mtcnn_tf.json (measured on another
2-core machine, so the ratio is indicative only). Prints a table; writes nothing.
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import json
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from facegate.detection import MTCNN
from facegate.imaging import load_image_file
from facegate.runtime import RuntimeOptions

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
FACES = SHARED / "faces"
REFERENCE_JSON = SHARED / "reference" / "mtcnn_tf.json"
SIZES = ((640, 480), (1280, 720), (1920, 1080))

Detect = Callable[[np.ndarray], object]


def letterboxed(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The photo scaled to fit `size` and centred on black bars, as a camera frame would be."""
    return np.asarray(ImageOps.pad(Image.fromarray(image), size, Image.Resampling.BILINEAR, color=0))


def photo_set() -> list[str]:
    with (FACES / "MANIFEST.csv").open(newline="") as manifest:
        return [
            row["path"] for row in csv.DictReader(manifest) if row["kind"] in ("portrait", "group", "noface")
        ]


def timings(detect: Detect, images: list[np.ndarray], repeat: int) -> list[float]:
    """Seconds per call, `repeat` rounds over the images after one warm-up call each."""
    for image in images:
        detect(image)
    result = []
    for _ in range(repeat):
        for image in images:
            start = time.perf_counter()
            detect(image)
            result.append(time.perf_counter() - start)
    return result


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q))


def reference_detector() -> Detect | None:
    """The TensorFlow reference when the `reference` extra is installed, else None."""
    if importlib.util.find_spec("tensorflow") is None:
        return None
    from mtcnn import MTCNN as ReferenceMTCNN  # imports TensorFlow

    reference = ReferenceMTCNN()
    return lambda image: reference.detect_faces(image)


def recorded_reference_seconds() -> dict[str, float]:
    data = json.loads(REFERENCE_JSON.read_text())
    return {
        entry["path"]: entry["seconds"]["default"]
        for entry in data["images"]
        if "default" in entry["seconds"]
    }


def row(name: str, ours: list[float], reference: list[float] | None, note: str = "") -> str:
    ours_p50, ours_p95 = percentile(ours, 50) * 1000, percentile(ours, 95) * 1000
    if reference is None:
        ref_p50, ratio = "n/a", "n/a"
    else:
        ref_p50_ms = percentile(reference, 50) * 1000
        ref_p50, ratio = f"{ref_p50_ms:.0f}", f"{ref_p50_ms / ours_p50:.1f}x"
    cells = f"{len(ours):>5} | {ours_p50:>8.1f} | {ours_p95:>8.1f} | {ref_p50:>8} | {ratio:>7}"
    return f"| {name:<22} | {cells} | {note}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=20, help="rounds over the images at fixed sizes")
    parser.add_argument("--threads", type=int, default=0, help="ONNX Runtime intra-op threads (0 = default)")
    parser.add_argument("--photos", action="store_true", help="also time the shared photo set (slower)")
    args = parser.parse_args()

    detector = MTCNN(RuntimeOptions(threads=args.threads))
    reference = reference_detector()
    groups = [load_image_file(path) for path in sorted((FACES / "groups").iterdir())]

    print(f"load average before: {' '.join(f'{v:.2f}' for v in os.getloadavg())}; cpus: {os.cpu_count()}")
    if reference is None:
        print("reference: mtcnn[tensorflow] not installed (pip install -e '.[reference]'); live ratio n/a")
    print("| images                 |     n | p50 (ms) | p95 (ms) | ref p50  |   ratio | note")
    print("|------------------------|-------|----------|----------|----------|---------|-----")
    for size in SIZES:
        frames = [letterboxed(image, size) for image in groups]
        ours = timings(detector.detect, frames, args.repeat)
        live = timings(reference, frames, 1) if reference else None
        print(row(f"{size[0]}x{size[1]} groups", ours, live))

    if args.photos:
        paths = photo_set()
        photos = [load_image_file(FACES / path) for path in paths]
        ours = timings(detector.detect, photos, 1)
        if reference is not None:
            print(row("photo set (own sizes)", ours, timings(reference, photos, 1), "live reference"))
        else:
            recorded = recorded_reference_seconds()
            pairs = [(t, recorded[p]) for t, p in zip(ours, paths, strict=True) if p in recorded]
            ratios = [ref / mine for mine, ref in pairs]
            note = (
                f"recorded reference (other machine); per-image ratio median {statistics.median(ratios):.1f}x"
            )
            print(row("photo set (own sizes)", [m for m, _ in pairs], [r for _, r in pairs], note))
    print(f"load average after: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
